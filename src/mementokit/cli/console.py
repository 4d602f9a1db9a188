"""The consoles every command prints through: results on stdout, progress and messages on stderr.

Tables are built with `table(...)`: a light box, two-line headers and cells that never wrap, so a table designed
for 80 columns stays whole there; piped output is never cut (files and pagers can hold a wider table).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

PIPED_WIDTH = 240  # a pipe has no width: wide enough that no table or panel is cut

# Lines wrap at the terminal's width (panels and tables stay whole at 80 columns); raw text goes through .out().
stdout = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
stderr = Console(stderr=True)


def table(title: str | None, columns: Sequence[str], *, first_left: bool = True) -> Table:
    """A table with the house style: first column left, the others right-aligned numbers, no cell wrapping."""
    out = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
                show_edge=False)
    for i, column in enumerate(columns):
        out.add_column(column, justify="left" if (i == 0 and first_left) else "right", no_wrap=True)
    return out


def size_text(n_bytes: float) -> str:
    """Bytes in binary units with three significant digits: "1.56 MiB", "312 MiB", "2.59 GiB" (at most 8 wide)."""
    value, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 999.5 or unit == "PiB":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)} B"
    digits = 0 if abs(value) >= 99.95 else 1 if abs(value) >= 9.995 else 2
    return f"{value:.{digits}f} {unit}"


def write_json(value) -> None:
    """One JSON object on stdout (machine output: no colour, no wrapping)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(total: int | None, label: str) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr (silent when stderr is not a terminal); yields `advance(n, total=None)`: a total
    given there restarts the bar with that total (one bar per item of a multi-item job)."""
    columns = [SpinnerColumn(), TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("", total=total)

        def advance(n: int, total: int | None = None) -> None:
            if total is not None:
                progress.reset(task, total=total)
            progress.advance(task, n)

        yield advance
