from mementokit.cli.main import main

main()
