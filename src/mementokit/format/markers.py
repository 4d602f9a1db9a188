"""The six marker strings of the Memento format (formats.md), configurable as one frozen value."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import cached_property


@dataclass(frozen=True)
class Markers:
    think_start: str = "<think>"
    think_end: str = "</think>"
    block_start: str = "<|block_start|>"
    block_end: str = "<|block_end|>"
    summary_start: str = "<|summary_start|>"
    summary_end: str = "<|summary_end|>"

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        if any(not v for v in values):
            raise ValueError("marker strings must be non-empty")
        if len(set(values)) != len(values):
            raise ValueError(f"marker strings must be distinct, got {values}")

    @property
    def block_markers(self) -> tuple[str, str, str, str]:
        """The four markers a tokenizer must hold as special tokens."""
        return (self.block_start, self.block_end, self.summary_start, self.summary_end)

    @property
    def all(self) -> tuple[str, ...]:
        return (self.think_start, self.think_end, *self.block_markers)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        # Longest first, so that a marker that is a prefix of another never shadows it.
        alternatives = sorted(self.all, key=len, reverse=True)
        return re.compile("|".join(re.escape(m) for m in alternatives))

    @cached_property
    def split_pattern(self) -> re.Pattern[str]:
        """Like `pattern`, capturing, so re.split keeps the markers between the text pieces."""
        return re.compile(f"({self.pattern.pattern})")

    @cached_property
    def code_of(self) -> dict[str, str]:
        """One letter per marker (T B E S F U), for matching the marker sequence with a regex."""
        letters = {"think_start": "T", "block_start": "B", "block_end": "E", "summary_start": "S",
                   "summary_end": "F", "think_end": "U"}
        return {marker: letters[name] for marker, name in self.kind_of.items()}

    @cached_property
    def kind_of(self) -> dict[str, str]:
        return {getattr(self, f.name): f.name for f in fields(self)}


DEFAULT_MARKERS = Markers()
