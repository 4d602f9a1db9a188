"""Fast character and word counts over spans of one string.

Words are counted exactly as `len(text.split())` would count them, without building the list: the text
is mapped once to a byte string where whitespace is b" " and everything else b"x" (one byte per
character, so character offsets are byte offsets), and a span's words are the b" x" transitions in it.
"""

from __future__ import annotations

import sys

# Every character str.split() treats as whitespace, by code point.


def _whitespace_chars() -> str:
    # str.isspace() agrees with str.split() on every code point; the set is small and below U+3001.
    return "".join(chr(c) for c in range(0x3001) if chr(c).isspace())


WHITESPACE = _whitespace_chars()
_LATIN1_WHITESPACE = bytes(ord(c) for c in WHITESPACE if ord(c) < 256)
_WIDE_WHITESPACE = tuple(c for c in WHITESPACE if ord(c) >= 256)
# Byte -> b" " for whitespace, b"x" for anything else.
_TO_CLASS = bytes(0x20 if b in _LATIN1_WHITESPACE else 0x78 for b in range(256))


class WordCounter:
    """Word counts of spans [a, b) of one text, in O(1) Python calls per span."""

    __slots__ = ("_classes", "_text")

    def __init__(self, text: str):
        if not text.isascii() and any(c in text for c in _WIDE_WHITESPACE):
            # Rare: whitespace beyond Latin-1 (e.g. U+3000). Fall back to exact slicing.
            self._classes = None
            self._text = text
        else:
            # Latin-1 keeps one byte per character; characters beyond it become "?", which is not whitespace.
            self._classes = text.encode("latin-1", "replace").translate(_TO_CLASS)
            self._text = None

    def words(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        classes = self._classes
        if classes is None:
            return len(self._text[start:end].split())
        # A word starts at `start` if that character is not whitespace, and after every b" x" inside.
        return (classes[start] == 0x78) + classes.count(b" x", start, end)


def count_words(text: str) -> int:
    """len(text.split()), without the list."""
    return WordCounter(text).words(0, len(text))
