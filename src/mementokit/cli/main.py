"""The `memento` command: a thin layer over the Python API.

Each feature area keeps its commands in its own module under mementokit.cli and exposes
`register(app)`; this file only wires them together and turns MementoError into one clear line.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from mementokit.errors import MementoError

app = typer.Typer(
    name="memento",
    help="Toolkit for Memento-style reasoning: analyse OpenMementos, simulate KV memory, generate with block masking.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Toolkit for Memento-style reasoning. Start with `memento analyze` (runs on a shipped sample)."""


# Modules that add commands. A module that is not there yet (work in progress) is skipped.
COMMAND_MODULES = [
    "mementokit.cli.analysis",
    "mementokit.cli.kv",
    "mementokit.cli.generation",
    "mementokit.cli.pipeline",
    "mementokit.cli.sft",
    "mementokit.cli.serve",
    "mementokit.cli.distill",
]

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # only tolerate the module itself missing, not its imports
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    err = Console(stderr=True)
    try:
        app()
    except MementoError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
