"""The `memento` command: a thin layer over the Python API.

Each feature area keeps its commands in its own module under mementokit.cli and exposes `register(app)`; this
file wires them together, tidies every help text the same way (mementokit.cli.helptext) and turns MementoError
into one clear line.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

import mementokit
from mementokit.cli import analysis, demo, distill, generation, kv, pipeline, serve, sft
from mementokit.cli.helptext import tidy_app_help
from mementokit.errors import MementoError

app = typer.Typer(
    name="memento",
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: square brackets ([default: ...]) survive, flags carry no type label, option names are
    # never cut at 80 columns, and examples keep their lines. Sub-apps inherit this from the root.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"memento (mementokit) {mementokit.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", callback=_print_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Toolkit for Memento-style reasoning: analyse OpenMementos-style traces, simulate and measure KV memory,
    generate with block masking, build training data and train.

    Start with `memento analyze` (it runs on a sample shipped with the package); `memento demo-model` builds a
    small random model and tokenizer so every other command can be tried offline. `memento COMMAND --help`
    shows each command's options and an example.

    Examples:

        memento analyze

        memento demo-model --out demo-model

        memento kv tests/data/memento_trace_aime2025_p5.json --tokenizer demo-model --preset qwen3-8b
    """


for _module in (analysis, kv, generation, sft, demo, serve, pipeline, distill):
    _module.register(app)
tidy_app_help(app)


def main() -> None:
    err = Console(stderr=True)
    try:
        app()
    except MementoError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
