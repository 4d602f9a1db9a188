"""The format core: lossless parsing, every validation problem, every builder, the text-level compression."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mementokit.errors import InputError, TraceFormatError
from mementokit.format import (
    DEFAULT_MARKERS,
    Kind,
    Markers,
    Problem,
    build_response,
    compress_trace,
    full_row_from_trace,
    parse_response,
    response_from_full_row,
    response_from_pipeline_row,
    response_from_row,
    response_from_segments,
)

DATA = Path(__file__).parent / "data"
M = DEFAULT_MARKERS
BS, BE, SS, SE = M.block_markers

# Random mixes of markers and text, markers over-represented so malformed layouts are common.
pieces = st.one_of(
    st.sampled_from(M.all),
    st.text(alphabet=st.sampled_from("ab <|>_/\n\té≠"), max_size=6),
    st.sampled_from(["<|block", "_start|>", "<think", "|>", "</", "think>"]),  # fragments of markers
)


def problems_of(text: str) -> list[Problem]:
    return [i.problem for i in parse_response(text).issues]


@settings(max_examples=600, deadline=None)
@given(st.lists(pieces, max_size=30))
def test_render_gives_back_the_input_for_any_mix_of_markers_and_text(parts):
    text = "".join(parts)
    trace = parse_response(text)
    assert trace.render() == text
    # Segments tile the string: contiguous, in order, no gaps, no overlaps.
    position = 0
    for seg in trace.segments:
        assert seg.start == position and seg.end >= seg.start
        assert seg.start <= seg.content_start <= seg.content_end <= seg.end
        position = seg.end
    assert position == len(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.text(max_size=20), st.text(max_size=10)), max_size=8),
    st.text(max_size=20),
    st.sampled_from(["\n", "", " \n\n"]),
)
def test_built_responses_parse_back_to_their_blocks_and_mementos(pairs, answer, separator):
    for block, summary in pairs:  # marker text inside the content would change the structure itself
        if any(m in block + summary + answer for m in M.all):
            return
    blocks = [b for b, _ in pairs]
    summaries = [s for _, s in pairs]
    response = build_response(blocks, summaries, answer, separator=separator)
    trace = parse_response(response)
    assert trace.block_texts() == blocks
    assert trace.summary_texts() == summaries
    assert trace.answer == answer
    assert [(b.index, s.index) for b, s in trace.pairs()] == [(i, i) for i in range(len(pairs))]
    assert trace.render() == response
    expected_problems = {Problem.EMPTY_BLOCK for b in blocks if not b.strip()} | {
        Problem.EMPTY_SUMMARY for s in summaries if not s.strip()
    }
    assert set(problems_of(response)) == expected_problems


def test_a_valid_trace_has_no_problems_and_exact_offsets():
    text = f"pre<think>{BS}one two{BE}\n{SS}m1{SE}\n{BS}three{BE}{SS}m2{SE}</think>final"
    trace = parse_response(text)
    assert trace.is_valid
    kinds = [s.kind for s in trace.segments]
    assert kinds == [
        Kind.PREFIX,
        Kind.THINK_START,
        Kind.BLOCK,
        Kind.TEXT,
        Kind.SUMMARY,
        Kind.TEXT,
        Kind.BLOCK,
        Kind.SUMMARY,
        Kind.THINK_END,
        Kind.ANSWER,
    ]
    first = trace.blocks[0]
    assert text[first.start : first.end] == f"{BS}one two{BE}"
    assert text[first.content_start : first.content_end] == "one two"
    assert trace.answer == "final"


@pytest.mark.parametrize(
    ("text", "problem", "offset"),
    [
        (f"<think>{BS}a{BE}</think>", Problem.BLOCK_WITHOUT_SUMMARY, 7),
        (f"<think>{SS}m{SE}</think>", Problem.SUMMARY_WITHOUT_BLOCK, 7),
        (f"<think>{BS}a{BS}b{BE}{SS}m{SE}</think>", Problem.NESTED_BLOCK, 7 + len(BS) + 1),
        (f"<think>{BS}a</think>", Problem.UNCLOSED_BLOCK, 7),
        (f"<think>{BS}a{BE}{SS}m</think>", Problem.UNCLOSED_SUMMARY, 7 + len(BS) + 1 + len(BE)),
        (f"<think>{BS}a{BE}{SS}m{SE}", Problem.MISSING_THINK_END, 7 + len(BS) + 1 + len(BE) + len(SS) + 1 + len(SE)),
        (f"{BS}a{BE}{SS}m{SE}</think>", Problem.MISSING_THINK_START, 0),
        (f"<think></think>x{BS}", Problem.MARKER_AFTER_THINK_END, 16),
        (f"<think>{BS} \n{BE}{SS}m{SE}</think>", Problem.EMPTY_BLOCK, 7),
        (f"<think>{BS}a{BE}{SS}  {SE}</think>", Problem.EMPTY_SUMMARY, 7 + len(BS) + 1 + len(BE)),
        (f"<think>{BE}</think>", Problem.STRAY_MARKER, 7),
        (f"<think>{SE}</think>", Problem.STRAY_MARKER, 7),
        ("<think><think></think>", Problem.STRAY_MARKER, 7),
    ],
)
def test_each_validation_problem_is_named_with_its_offset(text, problem, offset):
    trace = parse_response(text)
    found = [(i.problem, i.offset) for i in trace.issues]
    assert (problem, offset) in found, found
    assert trace.render() == text
    with pytest.raises(TraceFormatError, match=problem.value):
        parse_response(text, strict=True)


def test_memento_attaches_to_the_most_recent_closed_block_without_one():
    # Two blocks closed before any memento: the memento belongs to the second (the state machine's rule).
    trace = parse_response(f"<think>{BS}a{BE}{BS}b{BE}{SS}m{SE}</think>")
    ((block, summary),) = trace.pairs()
    assert block.index == 1 and summary.index == 1
    assert problems_of(trace.response) == [Problem.BLOCK_WITHOUT_SUMMARY]


def test_custom_markers_are_honoured():
    markers = Markers(
        think_start="<t>",
        think_end="</t>",
        block_start="[B]",
        block_end="[/B]",
        summary_start="[S]",
        summary_end="[/S]",
    )
    text = build_response(["x y"], ["m"], "ans", markers=markers)
    assert text == "<t>[B]x y[/B]\n[S]m[/S]\n</t>ans"
    trace = parse_response(text, markers)
    assert trace.is_valid and trace.block_texts() == ["x y"]
    # With the custom markers, the default ones are plain text.
    assert parse_response(f"<t>{BS}</t>", markers).segments[1].kind is Kind.TEXT


def test_markers_must_be_distinct_and_non_empty():
    with pytest.raises(ValueError):
        Markers(block_start="<x>", block_end="<x>")
    with pytest.raises(ValueError):
        Markers(summary_end="")


# -- builders ------------------------------------------------------------------------------------------


def test_segments_fixture_builds_a_valid_trace_matching_its_segments():
    data = json.loads((DATA / "memento_trace_aime2025_p5.json").read_text())
    response = response_from_segments(data["segments"])
    trace = parse_response(response)
    assert trace.is_valid
    by_type = {kind: [s for s in data["segments"] if s["type"] == kind] for kind in ("block", "summary", "answer")}
    assert trace.block_texts() == [s["text"] for s in by_type["block"]]
    assert trace.summary_texts() == [s["text"] for s in by_type["summary"]]
    assert trace.answer == by_type["answer"][0]["text"]
    assert [len(t) for t in trace.block_texts()] == [s["char_len"] for s in by_type["block"]]


def test_segments_are_matched_by_block_index_not_position():
    segments = [
        {"type": "summary", "block_idx": 2, "text": "m2"},
        {"type": "block", "block_idx": 2, "text": "b2"},
        {"type": "block", "block_idx": 1, "text": "b1"},
        {"type": "summary", "block_idx": 1, "text": "m1"},
    ]
    trace = parse_response(response_from_segments(segments))
    assert trace.block_texts() == ["b1", "b2"] and trace.summary_texts() == ["m1", "m2"]
    with pytest.raises(InputError, match="block_idx"):
        response_from_segments(segments[:3], where="x.json")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abc .,\n", min_size=1, max_size=8).filter(lambda s: s.strip() == s and s),
        min_size=1,
        max_size=12,
    ),
    st.data(),
)
def test_full_row_round_trip(sentences, data):
    # Random tiling of the sentences into blocks, inclusive [start, end].
    cuts = sorted(
        data.draw(st.sets(st.integers(1, len(sentences) - 1), max_size=len(sentences) - 1))
        if len(sentences) > 1
        else set()
    )
    bounds = [0, *cuts, len(sentences)]
    blocks = [[bounds[i], bounds[i + 1] - 1] for i in range(len(bounds) - 1)]
    row = {"sentences": sentences, "blocks": blocks, "block_summaries": [f"s{i}" for i in range(len(blocks))]}
    response = response_from_full_row(row)
    trace = parse_response(response)
    assert trace.block_texts() == [" ".join(sentences[a : b + 1]) for a, b in blocks]
    assert full_row_from_trace(trace, sentences) == row


def test_full_row_errors_name_the_field():
    row = {"sentences": ["a", "b"], "blocks": [[0, 0], [2, 3]], "block_summaries": ["x", "y"]}
    with pytest.raises(InputError, match=r"f\.jsonl:3, field 'blocks'"):
        response_from_full_row(row, where="f.jsonl:3")
    with pytest.raises(InputError, match="block_summaries"):
        response_from_full_row({"sentences": ["a"], "blocks": [[0, 0]], "block_summaries": []})
    with pytest.raises(InputError, match="sentences"):
        response_from_full_row({"blocks": [], "block_summaries": []})


def test_pipeline_row_with_think_prefix_and_suffix():
    row = {
        "task_id": "t1",
        "sentences": ["First.", "Second.", "Third."],
        "blocks": [[0, 1], [2, 2]],
        "block_summaries": ["s0", "s1"],
        "think_prefix": "<think> ",
        "think_suffix": "\n</think>\n\nThe answer is 4.",
    }
    trace = parse_response(response_from_pipeline_row(row))
    assert trace.is_valid
    assert trace.block_texts() == ["First. Second.", "Third."]
    assert trace.answer == "\n\nThe answer is 4."
    assert response_from_row(row) == trace.response
    bare = parse_response(response_from_pipeline_row({k: v for k, v in row.items() if not k.startswith("think_")}))
    assert bare.is_valid and bare.answer == ""


def test_response_from_row_dispatches_and_reports_missing_field():
    assert response_from_row({"response": "x"}) == "x"
    with pytest.raises(InputError, match=r"a\.jsonl:7, field 'response'"):
        response_from_row({"problem": "p"}, where="a.jsonl:7")


# -- text-level compression --------------------------------------------------------------------------


def naive_compress(text: str, keep_last: int, keep_delimiters: bool) -> str:
    """Independent reference: drop block spans found by regex, oldest first, keeping the last k."""
    spans = [m.span() for m in re.finditer(re.escape(BS) + r".*?" + re.escape(BE), text, re.S)]
    dropped = spans[: max(0, len(spans) - keep_last)]
    out, pos = [], 0
    for a, b in dropped:
        out.append(text[pos:a])
        out.append(BS + BE if keep_delimiters else "")
        pos = b
    out.append(text[pos:])
    return "".join(out)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.text("ab \n", max_size=6), st.text("xy \n", max_size=4)), max_size=6),
    st.integers(0, 7),
    st.booleans(),
)
def test_compress_keeps_last_k_blocks_and_everything_else_verbatim(pairs, keep_last, keep_delimiters):
    text = build_response([b for b, _ in pairs], [s for _, s in pairs], " answer\n", separator="\n\n")
    trace = parse_response(text)
    compressed = compress_trace(trace, keep_last, keep_delimiters=keep_delimiters)
    assert compressed == naive_compress(text, keep_last, keep_delimiters)
    after = parse_response(compressed)
    assert after.summary_texts() == trace.summary_texts()
    assert after.answer == trace.answer
    n_dropped = max(0, len(pairs) - keep_last)
    kept = trace.block_texts()[n_dropped:]
    assert after.block_texts() == ([""] * n_dropped if keep_delimiters else []) + kept


def test_fixture_compression_matches_the_block_arithmetic():
    data = json.loads((DATA / "memento_trace_aime2025_p5.json").read_text())
    trace = parse_response(response_from_segments(data["segments"]))
    blocks = [s for s in data["segments"] if s["type"] == "block"]
    dropped_chars = sum(s["char_len"] + len(BS) + len(BE) for s in blocks[:-1])
    assert len(compress_trace(trace, 1)) == len(trace.response) - dropped_chars
    assert len(compress_trace(trace, 1, keep_delimiters=True)) == len(trace.response) - dropped_chars + 4 * (
        len(BS) + len(BE)
    )


@settings(max_examples=600, deadline=None)
@given(st.lists(pieces, max_size=30), st.booleans())
def test_fast_path_for_valid_responses_equals_the_general_parser(parts, make_valid):
    if make_valid:  # half the examples are well formed, so the fast path really runs
        texts = [p for p in parts if not any(m in p for m in M.all)] or ["x"]
        text = build_response(texts, texts[::-1], "".join(texts), separator=texts[0])
    else:
        text = "".join(parts)
    fast, general = parse_response(text), parse_response(text, _general=True)
    assert fast.segments == general.segments
    assert fast.issues == general.issues
    assert fast.pair_spans() == general.pair_spans()
    assert fast.answer_spans() == general.answer_spans()
    # And a fresh fast parse answers pair_spans without building segments, with the same result.
    assert parse_response(text).pair_spans() == general.pair_spans()


@pytest.mark.parametrize(
    "after",
    [
        "The answer is 4.",
        "first</think> second",  # a second </think> stays in the answer
        "x <|block_start|>late<|block_end|> y<|summary_end|>",  # stray markers after </think> too
        "",
    ],
)
def test_answer_is_everything_after_the_first_think_end_verbatim(after):
    response = f"<think>{M.block_start}a{M.block_end}{M.summary_start}s{M.summary_end}</think>" + after
    trace = parse_response(response)
    assert trace.answer == after
    assert parse_response(response, _general=True).answer == after
    assert parse_response("<think>no end" + after.replace("</think>", "")).answer == ""
