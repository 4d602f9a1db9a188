"""Reading real-world LLM answers: by number, robust to decoration, never inventing values."""

from __future__ import annotations

import json

from mementokit.pipeline.parsing import (
    find_json,
    parse_boundary_scores,
    parse_numbered_sections,
    parse_verdict,
    parse_verdicts,
)


def test_scores_inside_prose_and_a_fence_after_a_think_preamble():
    text = (
        '<think>\nhmm {"scores": {"1": 3}}\n</think>\nSure! Here you go:\n'
        '```json\n{"scores": {"4": 2, "5": "1", "6": 0}}\n```'
    )
    parsed = parse_boundary_scores(text, [4, 5, 6])
    assert parsed.scores == {4: 2.0, 5: 1.0, 6: 0.0} and not parsed.problem


def test_scores_matched_by_number_not_position_and_missing_ones_reported():
    parsed = parse_boundary_scores('{"scores": {"B7": 1, "5": 3}}', [5, 6, 7])
    assert parsed.scores == {5: 3.0, 7: 1.0}
    assert "6" in parsed.problem


def test_out_of_range_scores_are_clamped_and_counted():
    parsed = parse_boundary_scores('{"scores": {"1": 7, "2": -1, "3": 2.5}}', [1, 2, 3])
    assert parsed.scores == {1: 3.0, 2: 0.0, 3: 2.5} and parsed.clamped == 2


def test_a_bare_list_counts_only_when_its_length_is_right():
    assert parse_boundary_scores("[1, 2, 3]", [10, 11, 12]).scores == {10: 1.0, 11: 2.0, 12: 3.0}
    wrong = parse_boundary_scores("[1, 2]", [10, 11, 12])
    assert wrong.scores == {} and "2 scores for 3" in wrong.problem


def test_garbage_gives_no_scores_and_a_reason():
    parsed = parse_boundary_scores("I cannot help with that.", [1, 2])
    assert parsed.scores == {} and parsed.problem


def test_numbered_sections_without_blank_lines_with_markdown_in_any_order():
    text = "<think>x</think>**Memento 2:** second one\n**MEMENTO 1:**\nfirst one\nspans lines\n## memento 3 - third"
    assert parse_numbered_sections(text, "memento") == {2: "second one", 1: "first one\nspans lines", 3: "third"}


def test_verdict_formats():
    assert parse_verdict("**SCORE:** 8/10\n**FEEDBACK:** add x=2").score == 8.0
    assert parse_verdict("Score = 7\nFeedback: none").feedback == "none"
    assert parse_verdict('{"score": "9", "feedback": "ok"}').score == 9.0
    assert parse_verdict("SCORE: 4/5").score == 8.0
    assert parse_verdict("SCORE: 14/10").score == 10.0
    assert parse_verdict("no number here") is None


def test_verdicts_by_number_and_a_lone_unnumbered_one():
    text = "JUDGE 3:\nSCORE: 9/10\nFEEDBACK: none\n\nJUDGE 2:\nSCORE: 5/10\nFEEDBACK: missing t=4"
    verdicts = parse_verdicts(text, [2, 3, 4])
    assert {n: v.score for n, v in verdicts.items()} == {2: 5.0, 3: 9.0}
    assert parse_verdicts("SCORE: 8/10\nFEEDBACK: fine", [5])[5].score == 8.0


def test_find_json_skips_invalid_candidates():
    assert find_json('first {not json} then {"a": 1}') == {"a": 1}


# --- every common score format, as property tests ------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mementokit.pipeline.parsing import parse_verdicts as _verdicts  # noqa: E402

SCORE_FORMATS = [
    "SCORE: {s}/10",
    "**SCORE:** {s}/10",
    "Score = {s}",
    "Score (0-10): {s}",
    "Score 0-10: {s}",
    "score: {s} / 10",
    "Score (out of 10): {s}",
    "Score: {s} out of 10",
    "Rating: {s}/10",
    "**Score**: {s}",
    "SCORE - {s}",
    "Grade: {s}/10",
    '{{"score": {s}, "feedback": "fine"}}',
    '{{"score": "{s}/10"}}',
]


@given(
    st.integers(0, 10),
    st.sampled_from(SCORE_FORMATS),
    st.sampled_from(["", "\n", "  "]),
    st.sampled_from(["", "\nFEEDBACK: add x=2", "\n**Feedback:** keep 0-10 scale values"]),
)
def test_every_common_score_format_reads_the_score_given(score, template, pad, feedback):
    verdict = parse_verdict(pad + template.format(s=score) + feedback)
    assert verdict is not None and verdict.score == score


@given(
    st.dictionaries(st.integers(1, 30), st.integers(0, 10), min_size=1, max_size=8),
    st.sampled_from(["block", "judge", "number", "id"]),
    st.booleans(),
)
def test_a_json_list_of_verdicts_is_read_by_number(scores, key, wrapped):
    items = [{key: n, "score": s, "feedback": f"fb {n}"} for n, s in reversed(list(scores.items()))]
    text = json.dumps({"verdicts": items}) if wrapped else "Here you go:\n```json\n" + json.dumps(items) + "\n```"
    got = _verdicts(text, sorted(scores))
    assert {n: v.score for n, v in got.items()} == {n: float(s) for n, s in scores.items()}
    assert all(v.feedback == f"fb {n}" for n, v in got.items())


@given(
    st.dictionaries(st.integers(1, 30), st.integers(0, 10), min_size=1, max_size=6), st.sampled_from(SCORE_FORMATS[:12])
)
def test_numbered_judge_sections_in_any_order_with_any_score_format(scores, template):
    text = "\n\n".join(f"JUDGE {n}:\n{template.format(s=s)}\nFEEDBACK: none" for n, s in reversed(list(scores.items())))
    got = _verdicts(text, sorted(scores))
    assert {n: v.score for n, v in got.items()} == {n: float(s) for n, s in scores.items()}
