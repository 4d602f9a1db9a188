"""A lossless, one-pass model of a Memento response string.

    prefix <think> text?
      (<|block_start|> block <|block_end|> sep <|summary_start|> memento <|summary_end|> sep)*
    </think> answer

`parse_response` cuts the string into segments that tile it exactly: joining every segment's text gives
back the input byte for byte, whatever the input (malformed ones included). Problems are recorded with
their character offsets instead of being repaired, so nothing is lost or silently altered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from itertools import accumulate

from mementokit.errors import TraceFormatError
from mementokit.format.markers import DEFAULT_MARKERS, Markers
from mementokit.format.textview import MarkerRun


class Kind(str, Enum):
    PREFIX = "prefix"  # text before <think>
    THINK_START = "think_start"  # the <think> marker
    TEXT = "text"  # text inside the think section that is neither block nor memento (separators, preamble)
    BLOCK = "block"  # <|block_start|> content <|block_end|> (markers included in the span)
    SUMMARY = "summary"  # <|summary_start|> memento <|summary_end|>
    THINK_END = "think_end"  # the </think> marker
    ANSWER = "answer"  # text after </think>
    STRAY = "stray"  # a marker that has no place where it stands (e.g. <|block_end|> with no open block)

    def __str__(self) -> str:  # so f-strings show "block", not "Kind.BLOCK"
        return self.value


class Problem(str, Enum):
    BLOCK_WITHOUT_SUMMARY = "block_without_summary"
    SUMMARY_WITHOUT_BLOCK = "summary_without_block"
    NESTED_BLOCK = "nested_block"
    UNCLOSED_BLOCK = "unclosed_block"
    UNCLOSED_SUMMARY = "unclosed_summary"
    MISSING_THINK_START = "missing_think_start"
    MISSING_THINK_END = "missing_think_end"
    MARKER_AFTER_THINK_END = "marker_after_think_end"
    EMPTY_BLOCK = "empty_block"
    EMPTY_SUMMARY = "empty_summary"
    STRAY_MARKER = "stray_marker"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Issue:
    """One validation problem, at a character offset of the response."""

    problem: Problem
    offset: int
    detail: str

    def __str__(self) -> str:
        return f"{self.problem.value} at char {self.offset}: {self.detail}"


@dataclass(slots=True)
class Segment:
    kind: Kind
    start: int  # [start, end) in the response, markers included
    end: int
    content_start: int  # [content_start, content_end): the text between the markers (== start/end for text)
    content_end: int
    closed: bool = True  # False for a block or memento whose end marker never came
    index: int = -1  # block: its 0-based index; summary: the index of the block it summarises (-1: none)
    summary: int = -1  # block only: position in Trace.segments of its memento (-1: none)

    def text(self, response: str) -> str:
        return response[self.start : self.end]

    def content(self, response: str) -> str:
        return response[self.content_start : self.content_end]


class Trace:
    """A parsed response: its segments (tiling the string), its problems, the markers used.

    Well-formed responses keep only the piece boundaries found by the parser and build their Segment
    objects on first use, so statistics over many traces need not create them (see `pair_spans`).
    """

    def __init__(
        self,
        response: str,
        segments: list[Segment] | None = None,
        issues: list[Issue] | None = None,
        markers: Markers = DEFAULT_MARKERS,
        *,
        bounds: list[int] | None = None,
    ):
        self.response = response
        self.issues = issues if issues is not None else []
        self.markers = markers
        self._segments = segments
        # Canonical layout only: piece boundaries of
        # prefix <think> text (BS block BE sep SS memento SE text)* </think> answer.
        self._bounds = bounds

    def __repr__(self) -> str:
        return f"Trace({len(self.response)} chars, {len(self.segments)} segments, {len(self.issues)} issues)"

    @property
    def segments(self) -> list[Segment]:
        if self._segments is None:
            self._segments = _segments_from_bounds(self._bounds)
        return self._segments

    def pair_spans(self) -> list[tuple[int, int, int, int]]:
        """(block content start, end, memento content start, end) of every block that has a memento."""
        bounds = self._bounds
        if bounds is not None and self._segments is None:
            return [(bounds[i + 1], bounds[i + 2], bounds[i + 5], bounds[i + 6]) for i in range(3, len(bounds) - 4, 8)]
        return [(b.content_start, b.content_end, m.content_start, m.content_end) for b, m in self.pairs()]

    def answer_spans(self) -> list[tuple[int, int]]:
        """(start, end) of the text after </think> (one span, or none)."""
        bounds = self._bounds
        if bounds is not None and self._segments is None:
            return [(bounds[-2], bounds[-1])] if bounds[-1] > bounds[-2] else []
        return [(s.start, s.end) for s in self.segments if s.kind is Kind.ANSWER]

    # -- views -----------------------------------------------------------------------------------
    @property
    def blocks(self) -> list[Segment]:
        return [s for s in self.segments if s.kind is Kind.BLOCK]

    @property
    def summaries(self) -> list[Segment]:
        return [s for s in self.segments if s.kind is Kind.SUMMARY]

    def block_texts(self) -> list[str]:
        return [s.content(self.response) for s in self.segments if s.kind is Kind.BLOCK]

    def summary_texts(self) -> list[str]:
        return [s.content(self.response) for s in self.segments if s.kind is Kind.SUMMARY]

    def pairs(self) -> list[tuple[Segment, Segment]]:
        """Every block with the memento that summarises it (blocks without one are left out)."""
        return [(s, self.segments[s.summary]) for s in self.segments if s.kind is Kind.BLOCK and s.summary >= 0]

    @property
    def answer(self) -> str:
        """Everything after the first </think>, verbatim (later markers, a second </think>, all of it); "" when
        there is no </think>."""
        bounds = self._bounds
        if bounds is not None and self._segments is None:
            return self.response[bounds[-2]:]
        for seg in self.segments:
            if seg.kind is Kind.THINK_END:
                return self.response[seg.end:]
        return ""

    @property
    def has_think_end(self) -> bool:
        return any(s.kind is Kind.THINK_END for s in self.segments)

    @property
    def is_valid(self) -> bool:
        return not self.issues

    def problem_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for issue in self.issues:
            counts[issue.problem.value] = counts.get(issue.problem.value, 0) + 1
        return counts

    def render(self) -> str:
        """The response again, from the segments (equals `response` for every parsed input)."""
        return "".join(self.response[s.start : s.end] for s in self.segments)

    def check(self) -> Trace:
        """Strict mode: raise TraceFormatError listing every problem; return self when there is none."""
        if self.issues:
            listed = "; ".join(str(i) for i in self.issues[:5])
            more = f" (and {len(self.issues) - 5} more)" if len(self.issues) > 5 else ""
            raise TraceFormatError(f"{len(self.issues)} format problem(s): {listed}{more}")
        return self


def parse_response(response: str, markers: Markers = DEFAULT_MARKERS, *, strict: bool = False,
                   _general: bool = False) -> Trace:
    """Cut `response` into segments in one pass over its markers.

    Pairing is the block state machine's (mementokit.format.machine, run over the marker occurrences, each
    marker one token): a memento belongs to the most recently OPENED closed block without one, whatever the
    nesting; a block closed but never paired is "block_without_summary", a memento the machine ignores is
    "summary_without_block". The segments tile the string (the round trip is exact); for them:
    - a marker other than <|block_end|> inside an open block ends that block's segment as unclosed (a second
      <|block_start|> is reported as nesting); likewise for an open memento;
    - markers after </think> are still parsed, and reported.
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    if not _general:
        trace = _parse_canonical(response, markers)
        if trace is not None:
            return trace
    kind_of = markers.kind_of
    segments: list[Segment] = []
    issues: list[Issue] = []
    has_think_start = markers.think_start in response
    zone = 0 if has_think_start else 1  # 0 before <think>, 1 inside, 2 after </think>
    if not has_think_start:
        issues.append(Issue(Problem.MISSING_THINK_START, 0, f"no {markers.think_start}"))
    cursor = 0  # end of the last emitted segment
    open_block: Segment | None = None
    open_summary: Segment | None = None
    n_blocks = 0
    text_kind = (Kind.PREFIX, Kind.TEXT, Kind.ANSWER)

    def flush_text(upto: int) -> None:
        nonlocal cursor
        if upto > cursor:
            segments.append(Segment(text_kind[zone], cursor, upto, cursor, upto))
            cursor = upto

    def end_open_block(at: int, problem: Problem, detail: str) -> None:
        nonlocal open_block, cursor
        assert open_block is not None
        open_block.end = open_block.content_end = at
        open_block.closed = False
        segments.append(open_block)
        # Nesting is reported where the inner block starts; an unclosed block where it starts itself.
        issues.append(Issue(problem, at if problem is Problem.NESTED_BLOCK else open_block.start, detail))
        open_block = None
        cursor = at

    def end_open_summary(at: int) -> None:
        nonlocal open_summary, cursor
        assert open_summary is not None
        open_summary.end = open_summary.content_end = at
        open_summary.closed = False
        segments.append(open_summary)
        issues.append(Issue(Problem.UNCLOSED_SUMMARY, open_summary.start, "memento has no end marker"))
        open_summary = None
        cursor = at

    def stray(a: int, b: int, detail: str) -> None:
        nonlocal cursor
        flush_text(a)
        segments.append(Segment(Kind.STRAY, a, b, a, b))
        issues.append(Issue(Problem.STRAY_MARKER, a, detail))
        cursor = b

    for match in markers.pattern.finditer(response):
        a, b = match.span()
        which = kind_of[match.group()]
        if open_block is not None and which != "block_end":
            if which == "block_start":
                end_open_block(a, Problem.NESTED_BLOCK,
                               f"block opened inside the block starting at char {open_block.start}")
            else:
                end_open_block(a, Problem.UNCLOSED_BLOCK, f"block ended by {match.group()} instead of its end marker")
        if open_summary is not None and which != "summary_end":
            end_open_summary(a)
        if zone == 2 and which in ("block_start", "block_end", "summary_start", "summary_end"):
            issues.append(Issue(Problem.MARKER_AFTER_THINK_END, a, f"{match.group()} after {markers.think_end}"))

        if which == "block_start":
            flush_text(a)
            open_block = Segment(Kind.BLOCK, a, -1, b, -1, index=n_blocks)
            n_blocks += 1
        elif which == "block_end":
            if open_block is None:
                stray(a, b, f"{match.group()} with no open block")
                continue
            open_block.end, open_block.content_end = b, a
            if not response[open_block.content_start : a].strip():
                issues.append(Issue(Problem.EMPTY_BLOCK, open_block.start, "block has no text"))
            segments.append(open_block)
            open_block = None
            cursor = b
        elif which == "summary_start":
            flush_text(a)
            open_summary = Segment(Kind.SUMMARY, a, -1, b, -1)
        elif which == "summary_end":
            if open_summary is None:
                stray(a, b, f"{match.group()} with no open memento")
                continue
            open_summary.end, open_summary.content_end = b, a
            if not response[open_summary.content_start : a].strip():
                issues.append(Issue(Problem.EMPTY_SUMMARY, open_summary.start, "memento has no text"))
            segments.append(open_summary)
            open_summary = None
            cursor = b
        elif which == "think_start":
            if zone != 0:
                stray(a, b, f"second {match.group()}")
                continue
            flush_text(a)
            segments.append(Segment(Kind.THINK_START, a, b, a, b))
            cursor, zone = b, 1
        else:  # think_end
            if zone == 2:
                stray(a, b, f"second {match.group()}")
                continue
            flush_text(a)
            segments.append(Segment(Kind.THINK_END, a, b, a, b))
            cursor, zone = b, 2

    end = len(response)
    if open_block is not None:
        end_open_block(end, Problem.UNCLOSED_BLOCK, "block has no end marker")
    if open_summary is not None:
        end_open_summary(end)
    flush_text(end)
    if zone < 2:
        issues.append(Issue(Problem.MISSING_THINK_END, end, f"no {markers.think_end}"))
    _pair_with_the_machine(response, markers, segments, issues)
    issues.sort(key=lambda i: i.offset)
    trace = Trace(response, segments, issues, markers)
    return trace.check() if strict else trace


def _pair_with_the_machine(response: str, markers: Markers, segments: list[Segment], issues: list[Issue]) -> None:
    """Link blocks and mementos as the block state machine pairs them (a memento claims its block when it opens,
    so an unclosed memento still counts as the block's), and report what it leaves unpaired."""
    run = MarkerRun(response, markers)
    # Every block start / summary start marker begins a segment of its kind: find it by its offset.
    at = {seg.start: position for position, seg in enumerate(segments) if seg.kind in (Kind.BLOCK, Kind.SUMMARY)}
    occurrences = run.occurrences
    claimed: set[int] = set()
    for block_marker, summary_marker in run.pairs():
        block = segments[at[occurrences[block_marker][1]]]
        summary_position = at[occurrences[summary_marker][1]]
        block.summary = summary_position
        segments[summary_position].index = block.index
        claimed.add(summary_marker)
    for block_marker in run.unsummarised_blocks():
        block = segments[at[occurrences[block_marker][1]]]
        issues.append(Issue(Problem.BLOCK_WITHOUT_SUMMARY, block.start, f"block {block.index} has no memento"))
    for j, (kind, a, _) in enumerate(occurrences):
        if kind == "summary_start" and j not in claimed:
            issues.append(Issue(Problem.SUMMARY_WITHOUT_BLOCK, a, "memento with no closed block to claim"))


# -- fast path for well-formed responses --------------------------------------------------------------
# Marker codes (Markers.code_of): T <think>, B block start, E block end, S summary start, F summary end, U </think>.
_CANONICAL = re.compile(r"T(?:BESF)*U")


def _parse_canonical(response: str, markers: Markers) -> Trace | None:
    """The parse of a valid response, done with C-level splitting; None when the response is not one.

    Valid means: <think>, then block/memento pairs, then </think>, with non-blank contents. Anything
    else goes through the general parser (and the tests check both paths agree on every input).
    """
    pieces = markers.split_pattern.split(response)  # text, marker, text, marker, ..., text
    code = markers.code_of
    if not _CANONICAL.fullmatch("".join(map(code.__getitem__, pieces[1::2]))):
        return None
    for i in range(4, len(pieces) - 4, 8):  # block and memento contents must not be blank
        if not pieces[i].strip() or not pieces[i + 4].strip():
            return None
    bounds = [0, *accumulate(map(len, pieces))]
    return Trace(response, None, [], markers, bounds=bounds)


def _segments_from_bounds(bounds: list[int]) -> list[Segment]:
    """Segments of a canonical layout (see `_parse_canonical`): piece i spans bounds[i] .. bounds[i+1]."""
    segments: list[Segment] = []

    def text(i: int, kind: Kind) -> None:
        if bounds[i + 1] > bounds[i]:
            segments.append(Segment(kind, bounds[i], bounds[i + 1], bounds[i], bounds[i + 1]))

    text(0, Kind.PREFIX)
    segments.append(Segment(Kind.THINK_START, bounds[1], bounds[2], bounds[1], bounds[2]))
    text(2, Kind.TEXT)
    n_pairs = (len(bounds) - 6) // 8
    for k in range(n_pairs):
        i = 3 + 8 * k  # piece index of this pair's block start marker
        block = Segment(Kind.BLOCK, bounds[i], bounds[i + 3], bounds[i + 1], bounds[i + 2], index=k)
        segments.append(block)
        text(i + 3, Kind.TEXT)
        block.summary = len(segments)
        segments.append(Segment(Kind.SUMMARY, bounds[i + 4], bounds[i + 7], bounds[i + 5], bounds[i + 6], index=k))
        text(i + 7, Kind.TEXT)
    u = 3 + 8 * n_pairs
    segments.append(Segment(Kind.THINK_END, bounds[u], bounds[u + 1], bounds[u], bounds[u + 1]))
    text(u + 1, Kind.ANSWER)
    return segments
