"""The optional compiled scanner: pair spans and word counts of a well-formed response in one C pass.

`_scan.c` is built on first use with the C compiler the machine has (`cc`, or $CC), into a cache folder
($MEMENTOKIT_CACHE, else ~/.cache/mementokit), and loaded with ctypes: no extra toolchain, no build step
at install. Where there is no compiler (or MEMENTOKIT_NO_CSCAN is set) `available()` is False and the
analysis uses the Python parser. The scanner only takes responses in the canonical layout (the parser's
fast path); anything else (malformed traces, lone surrogates) returns None and goes through the parser, so
the numbers are the parser's either way (tests compare both on adversarial text).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from functools import cache
from pathlib import Path

from mementokit.format.markers import Markers

_SOURCE = Path(__file__).with_name("_scan.c")

# What scan() returns: (characters, (answer start, answer end), answer words, pair spans, block words, memento words).
Scan = tuple[int, tuple[int, int], int, list[tuple[int, int, int, int]], list[int], list[int]]


def _cache_dir() -> Path:
    return Path(os.environ.get("MEMENTOKIT_CACHE") or Path.home() / ".cache" / "mementokit")


@cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("MEMENTOKIT_NO_CSCAN"):
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + sys.version.encode() + sysconfig.get_platform().encode()).hexdigest()[:16]
    target = _cache_dir() / f"memento_scan-{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / target.name
                subprocess.run(
                    [compiler, "-O2", "-shared", "-fPIC", "-o", str(built), str(_SOURCE)],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                os.replace(built, target)  # atomic: another process may be building it too
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        library = ctypes.CDLL(str(target))
    except OSError:
        return None
    function = library.memento_scan
    function.restype = ctypes.c_long
    function.argtypes = [
        ctypes.c_char_p,
        ctypes.c_long,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.POINTER(ctypes.c_long),
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_void_p,
        ctypes.c_long,
    ]
    return library


def available() -> bool:
    """Whether the compiled scanner could be built and loaded here."""
    return _library() is not None


@cache
def _marker_args(markers: Markers):
    ordered = (markers.think_start, markers.think_end, markers.block_start, markers.block_end,
               markers.summary_start, markers.summary_end)  # fmt: skip
    encoded = [m.encode("utf-8") for m in ordered]
    strings = (ctypes.c_char_p * 6)(*encoded)
    lengths = (ctypes.c_long * 6)(*map(len, encoded))
    # The order the regex alternation tries them: longest first, ties in Markers.all order (a stable sort).
    order = (ctypes.c_int * 6)(*sorted(range(6), key=lambda i: -len(ordered[i])))
    return strings, lengths, order, encoded


def scan(response: str, markers: Markers) -> Scan | None:
    """The spans and counts of a canonical response, or None (not canonical, or no scanner): use the parser."""
    library = _library()
    if library is None:
        return None
    try:
        data = response.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the parser copes
        return None
    strings, lengths, order, _ = _marker_args(markers)
    capacity = 4 + 6 * 64
    while True:
        out = (ctypes.c_long * capacity)()
        pairs = library.memento_scan(data, len(data), strings, lengths, order, ctypes.addressof(out), capacity)
        if pairs != -2:
            break
        capacity = 4 + 6 * (len(data) // 4 + 1)  # a pair takes at least four marker bytes
    if pairs < 0:
        return None
    values = out[: 4 + 6 * pairs]
    spans = [tuple(values[4 + 6 * k : 8 + 6 * k]) for k in range(pairs)]
    block_words = values[8 : 4 + 6 * pairs : 6]
    memento_words = values[9 : 4 + 6 * pairs : 6]
    return values[0], (values[1], values[2]), values[3], spans, block_words, memento_words
