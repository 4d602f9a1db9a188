"""The compiled scanner against the Python parser and word counter, on adversarial text.

Whatever the scanner takes (canonical responses) must give exactly the parser's numbers; whatever it refuses
goes to the parser. The texts mix every Unicode whitespace code point, lone surrogates, JSON-ish escapes,
non-BMP characters and marker look-alikes (cut, doubled, mis-cased), with the default and with custom markers.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mementokit.analysis import cscan
from mementokit.analysis.stats import measure_chunk
from mementokit.analysis.textstats import WHITESPACE
from mementokit.format import DEFAULT_MARKERS, Markers, build_response, parse_response
from mementokit.records import TraceRecord

pytestmark = pytest.mark.skipif(not cscan.available(), reason="no C compiler here: the Python path is the only one")

CUSTOM = Markers(
    think_start="«think»",
    think_end="«/think»",
    block_start="[[B",
    block_end="[[B/",  # a marker that the start marker is a prefix of: longest first decides
    summary_start="‹S›",
    summary_end="‹/S›",
)
LOOK_ALIKES = [
    "<|block_start|",
    "|block_end|>",
    "<think",
    "</think >",
    "<|BLOCK_START|>",
    "<|summary_start|>>",
    "<<think>",
    "\\u003cthink>",
]
ALPHABET = [
    *WHITESPACE,
    "a",
    "é",
    "😀",
    "\u0301",
    "\ud800",
    "\udfff",
    "\\n",
    '\\"',
    "\\u00a0",
    "\x00",
    "\x1b",
    "ab",
    *LOOK_ALIKES,
]


def texts(min_size: int = 0) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(ALPHABET), min_size=min_size, max_size=12).map("".join)


def content() -> st.SearchStrategy[str]:
    """Block or memento text: often with a word in it (else the trace is malformed and the parser takes it)."""
    return st.one_of(texts(1), st.tuples(texts(), texts()).map(lambda t: t[0] + "w" + t[1]))


def both(responses: list[str], markers: Markers = DEFAULT_MARKERS):
    records = [TraceRecord(None, r, origin=f"t:{i}", index=i) for i, r in enumerate(responses)]
    fast = measure_chunk(records, markers=markers, scanner=True)
    slow = measure_chunk(records, markers=markers, scanner=False)
    return fast, slow


def assert_same(fast, slow):
    assert fast.meta == slow.meta
    assert fast.pair_domain == slow.pair_domain
    for name in slow.rows:
        assert json.dumps(fast.rows[name]) == json.dumps(slow.rows[name]), name  # NaN == NaN, 1 != 1.0
    for name in slow.pairs:
        assert json.dumps(fast.pairs[name]) == json.dumps(slow.pairs[name]), name


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(content(), content()), max_size=5), texts(), texts(), st.sampled_from(["\n", "", " \u2028"]))
def test_well_formed_responses_give_the_parser_numbers(pairs, prefix, answer, separator):
    for markers in (DEFAULT_MARKERS, CUSTOM):
        body = build_response(
            [b for b, _ in pairs], [m for _, m in pairs], answer, separator=separator, markers=markers
        )
        assert_same(*both([prefix.replace("<think>", "") + body, body], markers))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*DEFAULT_MARKERS.all, *ALPHABET]), max_size=30))
def test_any_marker_soup_gives_the_parser_numbers(pieces):
    assert_same(*both(["".join(pieces)]))


def test_the_scanner_takes_canonical_traces_and_refuses_the_rest():
    good = build_response(["a b"], ["m"], "x")
    assert cscan.scan(good, DEFAULT_MARKERS) is not None
    for bad in (good.replace("<|summary_end|>", ""), good + "<think>", good.replace("m", " \u3000"), good + "\ud800"):
        assert cscan.scan(bad, DEFAULT_MARKERS) is None
        assert parse_response(bad).issues or "\ud800" in bad


def test_whitespace_is_str_isspace_on_every_code_point_below_u3100_and_a_sample_above():
    rng = random.Random(0)
    points = list(range(0x3100)) + rng.sample(range(0x3100, 0x110000), 3000)
    responses, expected = [], []
    for point in points:
        if 0xD800 <= point <= 0xDFFF:
            continue
        char = chr(point)
        responses.append(build_response(["x" + char + "y"], ["m"], ""))
        expected.append(len(("x" + char + "y").split()))
    fast, slow = both(responses)
    assert fast.pairs["block_words"] == expected == slow.pairs["block_words"]
    assert fast.pairs["block_chars"] == [3] * len(expected)


def test_long_responses_with_many_pairs():
    rng = random.Random(1)
    responses = [
        build_response([f"b{i} " * rng.randint(1, 50) for i in range(n)], ["m é"] * n, "answer")
        for n in (0, 1, 63, 64, 65, 300)
    ]
    assert_same(*both(responses))
