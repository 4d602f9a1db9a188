"""Stage 2: structure-aware sentence splitting, where every unit is a span of the ORIGINAL text.

    separators[0] + sentences[0] + separators[1] + ... + sentences[-1] + separators[-1] == cot

Only the thinking part is split: `<think>` and the whitespace after it go into separators[0], the
whitespace before `</think>`, the marker and the final answer into separators[-1]. Between two units
the separator is the whitespace that stood there, so the training text is exactly what the teacher wrote.

How units are chosen (the paper's structure-aware splitting, done on spans instead of rewritten text):
- protected regions never contain a cut: code fences, display math ($$..$$, \\[..\\], \\begin..\\end),
  inline math ($..$, \\(..\\)), and balanced parentheses / brackets inside one paragraph;
- cuts are whitespace runs: a blank line, a line break (unless the line runs on in lower case), or a
  sentence end (. ! ? then a capital, digit or opening symbol) that does not follow an abbreviation;
- then merges: a unit ending in ":" (or mid-expression: "," "=" "+" ...) joins the next; a unit starting
  with Therefore / Thus / So / Hence, or with a relation ("=", "=>", ...) continuing a derivation, joins the
  previous; consecutive list items form one unit; fragments under `min_tokens` join a neighbour.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from mementokit.format.markers import DEFAULT_MARKERS

THINK_START = DEFAULT_MARKERS.think_start
THINK_END = DEFAULT_MARKERS.think_end

# Regions in which no cut may fall. Order matters only for speed; overlaps are merged.
_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.S | re.M)
_DISPLAY_MATH = re.compile(r"\$\$.+?(?:\$\$|\Z)|\\\[.+?(?:\\\]|\Z)|\\begin\{([a-zA-Z*]+)\}.*?(?:\\end\{\1\}|\Z)", re.S)
_INLINE_MATH = re.compile(r"\\\(.+?\\\)|(?<![\\$])\$(?!\$)[^$\n]+?(?<!\\)\$", re.S)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_WHITESPACE = re.compile(r"\s+")

_ABBREVIATIONS = {
    "e.g",
    "i.e",
    "etc",
    "vs",
    "cf",
    "approx",
    "resp",
    "al",
    "dr",
    "mr",
    "mrs",
    "ms",
    "prof",
    "fig",
    "figs",
    "eq",
    "eqs",
    "no",
    "nos",
    "thm",
    "lem",
    "sec",
    "ch",
    "st",
    "jr",
    "sr",
    "vol",
    "pp",
    "ex",
    "def",
    "prop",
    "cor",
    "max",
    "min",
    "deg",
    "ca",
    "incl",
    "u.s",
    "mt",
    "ft",
    "lb",
    "oz",
}
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+\u2022]|\d{1,3}[.)]|[a-zA-Z][.)]|\(\w{1,3}\))[ \t]+\S")
_CONCLUSION = re.compile(r"(?:Therefore|Thus|So|Hence)\b")
# A derivation continues: the next unit starts with a relation, or this one ends mid-expression.
_CONTINUES_DERIVATION = re.compile(r"(?:=|\u2248|\u2192|\u21d2|->|=>|<=|>=|\u2264|\u2265)")
_OPEN_ENDING = (":", ",", "=", "+", "-", "*", "/", "\\", "(", "[", "{", ";")
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]*]*$")
_NEXT_STARTS_SENTENCE = re.compile(r"[A-Z0-9\\$(\[\"'\u201c\u2018*#>|`]")


def estimate_tokens(text: str) -> int:
    """The documented fallback token count: one token per 4 characters, rounded up (at least 1)."""
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True)
class SplitResult:
    sentences: list[str]
    separators: list[str]  # one longer than sentences
    spans: list[tuple[int, int]]  # [start, end) of each sentence in the original text

    def join(self) -> str:
        parts = [self.separators[0]]
        for sentence, sep in zip(self.sentences, self.separators[1:]):
            parts += [sentence, sep]
        return "".join(parts)


def think_region(text: str) -> tuple[int, int]:
    """[start, end) of the thinking content: after `<think>`, before `</think>` (whole text when absent)."""
    open_at = text.find(THINK_START)
    start = open_at + len(THINK_START) if open_at >= 0 else 0
    close_at = text.find(THINK_END, start)
    end = close_at if close_at >= 0 else len(text)
    return start, end


def _protected_spans(region: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for pattern in (_FENCE, _DISPLAY_MATH, _INLINE_MATH):
        spans += [(m.start(), m.end()) for m in pattern.finditer(region)]
    spans += _bracket_spans(region)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _bracket_spans(region: str, max_len: int = 600) -> list[tuple[int, int]]:
    """Balanced (...) and [...] that stay inside one paragraph; unbalanced ones protect nothing."""
    spans = []
    for para in _paragraphs(region):
        a, b = para
        stack: list[tuple[str, int]] = []
        for i in range(a, b):
            ch = region[i]
            if ch in "([":
                stack.append((ch, i))
            elif ch in ")]" and stack:
                want = "(" if ch == ")" else "["
                if stack[-1][0] == want:
                    _, start = stack.pop()
                    if not stack and i + 1 - start <= max_len:
                        spans.append((start, i + 1))
                else:
                    stack.clear()  # mismatched: give up on this run rather than guess
    return spans


def _paragraphs(region: str) -> list[tuple[int, int]]:
    out, pos = [], 0
    for m in _PARAGRAPH_BREAK.finditer(region):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, len(region)))
    return out


def _is_abbreviation(before: str) -> bool:
    word = re.search(r"([A-Za-z][A-Za-z.]*)\.$", before)
    if not word:
        return False
    return word.group(1).lower().rstrip(".") in _ABBREVIATIONS


def _candidate_cuts(region: str, protected: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Whitespace runs [start, end) at which a unit may end."""
    cuts = []
    p = 0  # index into protected, advanced monotonically
    for m in _WHITESPACE.finditer(region):
        s, e = m.start(), m.end()
        if s == 0 or e == len(region):
            continue
        while p < len(protected) and protected[p][1] <= s:
            p += 1
        if p < len(protected) and protected[p][0] < s < protected[p][1]:
            continue  # inside code, math or parentheses
        gap = region[s:e]
        line_start = region.rfind("\n", 0, s) + 1
        before = region[line_start:s]
        after = region[e : e + 1]
        if "\n" in gap:
            if gap.count("\n") >= 2 or _SENTENCE_END.search(before) or not after.islower():
                cuts.append((s, e))
            continue
        if not _SENTENCE_END.search(before) or not _NEXT_STARTS_SENTENCE.match(after):
            continue
        if _is_abbreviation(before.rstrip("\"'\u201d\u2019)]*")):
            continue
        if re.fullmatch(r"[ \t]*(?:\d{1,3}|[a-zA-Z])[.)]", before):
            continue  # a list marker such as "1." at the start of a line
        cuts.append((s, e))
    return cuts


def _merge(
    units: list[tuple[int, int]], region: str, count: Callable[[str], int], min_tokens: int
) -> list[tuple[int, int]]:
    """Apply the joining rules to consecutive spans; a join keeps the whitespace between them inside."""
    if not units:
        return units

    def text(u: tuple[int, int]) -> str:
        return region[u[0] : u[1]]

    # 1. colon joins the next, conclusion words join the previous, list items stay together
    out: list[tuple[int, int]] = [units[0]]
    for u in units[1:]:
        prev = out[-1]
        prev_text, cur_text = text(prev), text(u)
        prev_last_line = prev_text[prev_text.rfind("\n") + 1 :]
        join = (
            prev_text.endswith(_OPEN_ENDING)
            or _CONCLUSION.match(cur_text) is not None
            or _CONTINUES_DERIVATION.match(cur_text) is not None
            or (_LIST_ITEM.match(cur_text) is not None and _LIST_ITEM.match(prev_last_line) is not None)
        )
        if join:
            out[-1] = (prev[0], u[1])
        else:
            out.append(u)
    # 2. fragments under min_tokens join a neighbour (the next one; the last joins the previous)
    merged: list[tuple[int, int]] = []
    carry: tuple[int, int] | None = None
    for u in out:
        if carry is not None:
            u = (carry[0], u[1])
            carry = None
        if count(text(u)) < min_tokens:
            carry = u
            continue
        merged.append(u)
    if carry is not None:
        if merged:
            merged[-1] = (merged[-1][0], carry[1])
        else:
            merged.append(carry)
    return merged


def split_spans(
    region: str, *, count_tokens: Callable[[str], int] = estimate_tokens, min_tokens: int = 5
) -> list[tuple[int, int]]:
    """Units of `region` as [start, end) spans: stripped of surrounding whitespace, never empty."""
    first = _WHITESPACE.match(region)
    lead = first.end() if first else 0
    if lead == len(region):
        return []
    protected = _protected_spans(region)
    cuts = _candidate_cuts(region, protected)
    units, pos = [], lead
    for s, e in cuts:
        if s > pos:
            units.append((pos, s))
        pos = e
    tail = len(region.rstrip())
    if tail > pos:
        units.append((pos, tail))
    return _merge(units, region, count_tokens, min_tokens)


def split_trace(text: str, *, count_tokens: Callable[[str], int] = estimate_tokens, min_tokens: int = 5) -> SplitResult:
    """Split a trace (with or without the think wrapper) into sentences and the separators between them."""
    start, end = think_region(text)
    spans = [
        (start + a, start + b)
        for a, b in split_spans(text[start:end], count_tokens=count_tokens, min_tokens=min_tokens)
    ]
    if not spans:
        return SplitResult([], [text], [])
    separators = [text[: spans[0][0]]]
    for (_, e), (s, _) in zip(spans, spans[1:]):
        separators.append(text[e:s])
    separators.append(text[spans[-1][1] :])
    return SplitResult([text[s:e] for s, e in spans], separators, spans)


def naive_boundary_count(text: str) -> int:
    """Boundaries a naive splitter finds: every . ! ? followed by whitespace, and every line break."""
    start, end = think_region(text)
    region = text[start:end].strip()
    pieces = [p for p in re.split(r"(?<=[.!?])\s+|\s*\n\s*", region) if p.strip()]
    return max(0, len(pieces) - 1)
