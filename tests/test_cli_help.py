"""Every help screen of `memento`, at 80 columns: whole, every option explained, an example, nothing swallowed.

The commands are found by walking the app, so a command added later (serve, distill, ...) is checked too.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import mementokit
from mementokit.cli.helptext import _units, _words, format_command, tidy_help
from mementokit.cli.main import app


def _command_paths(command, path: tuple[str, ...] = ()) -> list:
    found = [(path, command)]
    if hasattr(command, "commands"):  # a group (typer's own click copy: not a click.Group subclass)
        for name, sub in sorted(command.commands.items()):
            found += _command_paths(sub, path + (name,))
    return found


ROOT = typer.main.get_command(app)
COMMANDS = _command_paths(ROOT)
IDS = [" ".join(path) or "memento" for path, _ in COMMANDS]
def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_walk_finds_every_command_of_the_readme():
    names = {" ".join(path) for path, _ in COMMANDS}
    for name in ("analyze", "render", "compress", "synth", "kv", "generate", "replay", "sft", "train",
                 "demo-model", "pipeline", "pipeline run"):
        assert name in names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_is_whole_at_80_columns(path, command):
    text = _help(path)
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, too_wide
    assert not any(line.rstrip().endswith("…") for line in text.splitlines())  # rich's mark of a cut cell
    assert "<bool>" not in text  # flags take no value


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_option_and_argument_has_help(path, command):
    missing = [param.name for param in command.params
               if not getattr(param, "hidden", False) and not (getattr(param, "help", None) or "").strip()]
    assert not missing, f"memento {' '.join(path)}: no help for {missing}"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_help_has_an_example_of_itself(path, command):
    text = _help(path)
    assert re.search(r"^  Examples?:$", text, re.M), text
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith(" ".join(("memento",) + path)) for line in lines), text


def test_square_brackets_in_help_survive():
    analyze = _help(("analyze",))
    assert "[default: ./memento-report" in analyze
    assert "[default: every core]" in analyze
    assert "[positions, vocab]" in " ".join(_help(("replay",)).split())


def test_examples_are_never_broken_inside_an_option():
    text = _help(("analyze",))
    assert "--shuffle-seed 0" in text  # not "--shuffle-" / "seed 0"
    for line in text.splitlines():
        assert not line.rstrip().endswith("-"), line


@pytest.mark.parametrize("command", [
    "memento analyze --dataset microsoft/OpenMementos --limit 2000 --shuffle-seed 0 --tokenizer Qwen/Qwen3-8B",
    "memento generate --model m --block-masking '{\"enable\": true, \"keep_last_n_blocks\": 0, \"mask_delimiters\": "
    "false}' --prompt \"Prove that sqrt(2) is irrational, and more words to make it long\" --max-new-tokens 8",
    "memento compress --keep-last 1 > compressed.txt",
])
def test_a_formatted_example_is_the_same_command_and_fits(command):
    lines = format_command(command)
    # a line is at most 78 columns unless it holds one unbreakable word (a long quoted JSON)
    assert all(len(line) <= 78 or len(_units(_words(line.strip().removesuffix("\\")))) == 1 for line in lines), lines
    joined = " ".join(line.strip().removesuffix("\\").strip() for line in lines)
    assert joined.split() == command.split()


def test_tidy_help_keeps_the_text_before_the_examples():
    text = tidy_help("Do a thing.\n\nMore words.\n\nExample: memento thing --a 1")
    assert text == "Do a thing.\n\nMore words.\n\n\b\nExample:\n  memento thing --a 1"
    inline = tidy_help("Do a thing.\n\nMore words. Example: memento thing --a 1")
    assert inline == "Do a thing.\n\nMore words.\n\n\b\nExample:\n  memento thing --a 1"


def test_version_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"memento (mementokit) {mementokit.__version__}"


def test_a_bad_limit_names_the_option():
    result = CliRunner().invoke(app, ["analyze", "--limit", "-1"], env={"COLUMNS": "80"})
    assert result.exit_code == 2 and "--limit" in result.output


def test_help_runs_as_a_real_process_at_80_columns():
    out = subprocess.run([sys.executable, "-m", "mementokit.cli", "kv", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "80", "PATH": "", "PYTHONPATH": ":".join(sys.path)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert max(len(line) for line in out.stdout.splitlines()) <= 80


def test_the_command_line_stays_thin():
    """No function of mementokit.cli over 60 lines: library work belongs in the library."""
    import ast
    from pathlib import Path

    import mementokit.cli

    too_long = []
    for path in sorted(Path(mementokit.cli.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not too_long, too_long
