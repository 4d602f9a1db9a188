"""Fast word counts over spans of one string.

Words are counted exactly as `len(text[a:b].split())` would count them, without building any list of
words: the text becomes one array of code points (one element per character, so character offsets are
array indices), word starts are found with three vectorised passes, and a span's words are the starts
inside it (plus one if the span begins inside a word).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _whitespace_chars() -> str:
    # str.isspace() agrees with str.split() on every code point; none lies above U+3000.
    return "".join(chr(c) for c in range(0x3001) if chr(c).isspace())


WHITESPACE = _whitespace_chars()
_LATIN1_IS_SPACE = np.array([chr(c) in WHITESPACE for c in range(256)], dtype=bool)
_WIDE_SPACES = np.array([ord(c) for c in WHITESPACE if ord(c) >= 256], dtype=np.uint32)
_WIDE_LOW, _WIDE_HIGH = int(_WIDE_SPACES.min()), int(_WIDE_SPACES.max())


def _is_space(text: str) -> np.ndarray:
    """Boolean array, one element per character: is it whitespace for str.split()?"""
    if text.isascii():  # O(1) in CPython; then encoding is a copy
        return _LATIN1_IS_SPACE[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    space = _LATIN1_IS_SPACE[np.minimum(points, 255)] & (points < 256)
    maybe_wide = (points >= _WIDE_LOW) & (points <= _WIDE_HIGH)
    if maybe_wide.any():
        space |= np.isin(points, _WIDE_SPACES)
    return space


class WordCounter:
    """Word counts of spans [a, b) of one text."""

    __slots__ = ("_inside", "_starts")

    def __init__(self, text: str):
        inside = ~_is_space(text)  # (n,) True where a word character is
        begins = inside.copy()
        begins[1:] &= ~inside[:-1]  # a word begins where a word character follows a space (or the start)
        self._starts = np.flatnonzero(begins)  # positions where words begin, sorted
        self._inside = inside

    def words_many(self, starts: Sequence[int], ends: Sequence[int]) -> np.ndarray:
        """Words in each span [starts[i], ends[i]) at once."""
        a = np.asarray(starts, dtype=np.int64)
        b = np.asarray(ends, dtype=np.int64)
        if len(self._inside) == 0:
            return np.zeros(len(a), dtype=np.int64)
        counts = np.searchsorted(self._starts, b) - np.searchsorted(self._starts, a)
        # A span that begins inside a word counts that word too (its start lies before the span).
        inside = self._inside
        cut = (a > 0) & (a < b)
        if cut.any():
            prev = np.where(cut, a - 1, 0)
            cut &= inside[np.minimum(a, len(inside) - 1)] & inside[prev]
        return np.where(b > a, counts + cut, 0)

    def words(self, start: int, end: int) -> int:
        return int(self.words_many([start], [end])[0])


def count_words(text: str) -> int:
    """len(text.split()), without the list."""
    return WordCounter(text).words(0, len(text))
