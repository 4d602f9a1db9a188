"""Running the `memento` app in-process (typer's CliRunner), for tests of commands that load torch models."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from mementokit.cli.main import app


def invoke(*args):
    """Run `memento ARGS...`; an exception other than a normal exit is raised, so the test shows its traceback."""
    torch.set_num_threads(1)  # tiny models gain nothing from threads, and the machine's cores are shared
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result
