"""The block state machine run over a response's marker occurrences: the text view of block semantics.

Each marker string is one token and the text between two markers is one token, so the machine pairs blocks with
mementos, and evicts, exactly as it does over the token ids of the same string (a tokenizer never merges text
across a special-token marker, and every eviction span starts and ends at a marker). Token 2j is the text
before marker j, token 2j+1 is marker j, token 2n the text after the last marker.
"""

from __future__ import annotations

from dataclasses import dataclass

from mementokit.format.machine import BlockMachine, Eviction
from mementokit.format.markers import DEFAULT_MARKERS, Markers

_TEXT = 0  # the token standing for a run of text between two markers (never a marker kind)


@dataclass(frozen=True)
class TextRules:
    """The options the machine reads, for the text view: keep the last `keep_last_n_blocks` completed blocks;
    mask_delimiters=False keeps a dropped block's two markers (its content goes). No gating, no restart, no cap:
    the response is the assistant's text, seen at its end."""

    keep_last_n_blocks: int = -1
    mask_delimiters: bool = True
    enable: bool = True
    compact_on_summary_end: bool = True
    require_assistant_section: bool = False
    restart_mode: bool = False
    keep_last_block_for_answer: bool = False
    max_block_tokens: int = 0
    debug: bool = False


@dataclass(frozen=True)
class _Kinds:
    block_start: str = "block_start"
    block_end: str = "block_end"
    summary_start: str = "summary_start"
    summary_end: str = "summary_end"
    im_start: None = None
    assistant: None = None


_KINDS = _Kinds()


class MarkerRun:
    """One machine run over the markers of `response` (see the module docstring)."""

    def __init__(self, response: str, markers: Markers = DEFAULT_MARKERS, rules: TextRules | None = None):
        self.response = response
        kind_of = markers.kind_of
        self.occurrences: list[tuple[str, int, int]] = [
            (kind_of[m.group()], m.start(), m.end()) for m in markers.pattern.finditer(response)]
        self.machine = BlockMachine(rules or TextRules(), _KINDS, start_inside_assistant=True, record=True)
        tokens: list = []
        for kind, _, _ in self.occurrences:
            tokens += [_TEXT, kind]
        tokens.append(_TEXT)
        self.evictions: list[Eviction] = self.machine.feed(tokens)

    # ---- positions <-> characters ----
    def char_span(self, position: int) -> tuple[int, int]:
        """Characters [start, stop) of machine token `position`."""
        j, is_marker = divmod(position, 2)
        if is_marker:
            _, a, b = self.occurrences[j]
            return a, b
        start = self.occurrences[j - 1][2] if j > 0 else 0
        stop = self.occurrences[j][1] if j < len(self.occurrences) else len(self.response)
        return start, stop

    def occurrence_index(self, position: int) -> int:
        """The index in `occurrences` of the marker token at `position`."""
        return (position - 1) // 2

    def evicted_char_spans(self) -> list[tuple[int, int]]:
        """Characters evicted at the end of the response, as merged half-open spans in order."""
        spans = []
        for start, stop in self.machine.evicted_spans:
            a, b = self.char_span(start)[0], self.char_span(stop - 1)[1]
            if spans and spans[-1][1] >= a:
                spans[-1] = (spans[-1][0], max(spans[-1][1], b))
            elif b > a:
                spans.append((a, b))
        return spans

    def kept_text(self) -> str:
        """The response without its evicted characters; everything kept stays byte for byte."""
        parts, cursor = [], 0
        for a, b in self.evicted_char_spans():
            parts.append(self.response[cursor:a])
            cursor = b
        parts.append(self.response[cursor:])
        return "".join(parts)

    def pairs(self) -> list[tuple[int, int]]:
        """(block start marker, summary start marker) occurrence indices of every block the machine paired with a
        memento (a memento claims its block at its start marker), in block creation order."""
        return [(self.occurrence_index(b.start), self.occurrence_index(b.summary_start))
                for b in self.machine.blocks if b.summary_start >= 0]

    def unsummarised_blocks(self) -> list[int]:
        """Occurrence indices of block start markers whose block was closed but never got a memento."""
        return [self.occurrence_index(b.start) for b in self.machine.blocks if b.end >= 0 and b.summary_start < 0]
