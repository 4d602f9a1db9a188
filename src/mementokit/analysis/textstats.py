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
# Word-character tables indexed by code unit: True where a character is NOT whitespace.
_BMP_IS_WORD = np.ones(0x10000, dtype=bool)
_BMP_IS_WORD[[ord(c) for c in WHITESPACE]] = False
_ASCII_IS_WORD = _BMP_IS_WORD[:256].copy()


def _code_units(text: str) -> np.ndarray:
    """One integer per character (code point, or U+FFFF for anything beyond the BMP: never whitespace)."""
    if text.isascii():  # O(1) in CPython; then encoding is a copy
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    # surrogatepass: a lone surrogate (valid in a Python str, e.g. from a JSON "\ud800") is one unit, not an error.
    units = text.encode("utf-16-le", "surrogatepass")
    if len(units) == 2 * len(text):  # no character beyond the BMP: one code unit per character
        return np.frombuffer(units, dtype=np.uint16)
    return np.minimum(np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32), 0xFFFF)


def _is_word_char(units: np.ndarray) -> np.ndarray:
    """Boolean array: is each character a word character for str.split()?"""
    # Fast guess by one comparison: whitespace is <= U+0020. Then correct the few characters where the
    # guess can be wrong: control characters that are not whitespace, and whitespace above U+0084.
    inside = units > 32
    # Control characters that are not whitespace (U+0000-0008, U+000E-001B) are rare: look only if present.
    if (units < 9).any() or ((units > 13) & (units < 28)).any():
        doubtful = np.flatnonzero(units < 32)
        inside[doubtful] = _BMP_IS_WORD[units[doubtful]]
    if units.dtype != np.uint8:  # beyond ASCII: a few characters above U+0084 are whitespace
        doubtful = np.flatnonzero(units > 0x84)
        inside[doubtful] = _BMP_IS_WORD[units[doubtful]]
    return inside


class WordCounter:
    """Word counts of spans [a, b) of one text."""

    __slots__ = ("_inside", "_begins")

    def __init__(self, text: str):
        inside = _is_word_char(_code_units(text))  # (n,) True where a word character is
        self._inside = inside
        self._begins = inside[1:] > inside[:-1]  # (n-1,) [j]: a word begins at j + 1

    def words(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        # Position `start` counts if it holds a word character (a word begins there or runs into the span);
        # then every word beginning at start+1 .. end-1.
        return int(self._inside[start]) + int(np.count_nonzero(self._begins[start : end - 1]))

    def words_many(self, starts: Sequence[int], ends: Sequence[int]) -> list[int]:
        """Words in each span [starts[i], ends[i])."""
        return [self.words(a, b) for a, b in zip(starts, ends)]


def count_words(text: str) -> int:
    """len(text.split()), without the list."""
    return WordCounter(text).words(0, len(text))
