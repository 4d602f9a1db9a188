"""The consoles every command prints through: results on stdout, progress and messages on stderr."""

from __future__ import annotations

import sys

from rich.console import Console

# Piped output is not cut to 80 columns: files and pagers can hold a whole table.
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True)
