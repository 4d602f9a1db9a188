"""Reading real-world LLM answers: by number, robust to decoration, never inventing values."""

from __future__ import annotations

from mementokit.pipeline.parsing import (
    find_json,
    parse_boundary_scores,
    parse_numbered_sections,
    parse_verdict,
    parse_verdicts,
)


def test_scores_inside_prose_and_a_fence_after_a_think_preamble():
    text = '<think>\nhmm {"scores": {"1": 3}}\n</think>\nSure! Here you go:\n```json\n{"scores": {"4": 2, "5": "1", "6": 0}}\n```'
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
