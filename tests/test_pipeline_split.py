"""Stage 2: every unit is a span of the original text, and the structure rules hold."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mementokit.pipeline.split import naive_boundary_count, split_trace

FIXTURE = Path(__file__).parent / "data" / "raw_cot_openthoughts3.jsonl"

# Pieces that exercise every rule, mixed with arbitrary text and whitespace.
PIECES = st.sampled_from(
    [
        "Okay, so",
        " Let me see.",
        " Therefore x = 2.",
        "\n\n",
        "\n",
        "  ",
        "So we get",
        ": ",
        "e.g. ",
        "Dr. Smith",
        "$x^2 + 1$",
        "$$\na = b.\nC = d.\n$$",
        "\\(t. T\\)",
        "\\[ y. Z \\]",
        "```python\nx = 1. Y = 2\n\n```",
        "(see. Above)",
        "1. first\n2. second\n",
        "- item\n- item\n",
        "Thus,",
        "Hmm.",
        "=",
        "<think>",
        "</think>",
        "\t",
        "Wait. ",
        "A.",
        "?",
        "!",
    ]
)
TEXTS = st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_sentences_and_separators_rebuild_the_text_byte_for_byte(text):
    result = split_trace(text)
    assert len(result.separators) == len(result.sentences) + 1
    assert result.join() == text
    assert all(s and s == s.strip() for s in result.sentences)
    assert all(sep.strip() == "" for sep in result.separators[1:-1])
    assert [text[a:b] for a, b in result.spans] == result.sentences


def test_fixture_trace_round_trips_and_halves_naive_boundaries():
    cot = json.loads(FIXTURE.read_text().splitlines()[0])["cot"]
    result = split_trace(cot)
    assert result.join() == cot
    assert result.separators[0].startswith("<think>")
    assert result.separators[-1].rstrip().endswith("</think>")
    ratio = (len(result.sentences) - 1) / naive_boundary_count(cot)
    assert 0.35 <= ratio <= 0.6, ratio  # the paper: 397 -> 187 (0.47)


def test_answer_after_think_stays_in_the_last_separator():
    result = split_trace(
        "<think>First we add the two numbers together carefully. Then we are done with it.</think>\nThe answer is 4."
    )
    assert result.separators[-1] == "</think>\nThe answer is 4."
    assert result.sentences[-1].endswith("done with it.")


def test_code_fence_is_one_unit_even_with_sentences_and_blank_lines_inside():
    text = (
        "Here is the program I will use.\n\n```python\nx = 1. Y = 2\n\nprint(x). Done\n```\n\n"
        "Now it runs and prints one line."
    )
    units = split_trace(text).sentences
    assert any(u.startswith("```python") and u.endswith("```") for u in units)


def test_display_and_inline_math_are_never_cut():
    text = (
        "We compute the value now. $$ a = b. C = d. $$ That settles the first part of it. The inline $x. Y$ stays too."
    )
    units = split_trace(text).sentences
    assert any("$$ a = b. C = d. $$" in u for u in units)
    assert any("$x. Y$" in u for u in units)


def test_no_cut_inside_parentheses_or_after_abbreviations():
    text = (
        "We use the method (see the book. Chapter two has it) here again. "
        "It works, e.g. For the case n equal two it does."
    )
    units = split_trace(text).sentences
    assert any("(see the book. Chapter two has it)" in u for u in units)
    assert any("e.g. For the case" in u for u in units)


def test_colon_joins_the_next_unit_and_conclusion_words_join_the_previous():
    text = (
        "Let me write down both equations again for clarity:\n\nx + y = 10 and x - y = 2 hold together.\n\n"
        "Adding the two equations gives the value of x directly here. Therefore x = 6 and y = 4 follow."
    )
    units = split_trace(text).sentences
    assert any(u.startswith("Let me write") and "x + y = 10" in u for u in units)
    assert any(u.startswith("Adding") and "Therefore x = 6" in u for u in units)


def test_list_items_stay_together():
    text = (
        "The two equations we must satisfy are listed now.\n\n1. the first equation here\n"
        "2. the second equation here\n3. the third one\n\nNow we solve them one at a time."
    )
    units = split_trace(text).sentences
    assert any("1. the first" in u and "3. the third one" in u for u in units)


def test_short_fragments_merge_into_a_neighbour():
    units = split_trace("Hmm. Let me think about the problem from the start again.").sentences
    assert units == ["Hmm. Let me think about the problem from the start again."]


def test_no_think_content_gives_no_sentences_and_one_separator():
    result = split_trace("<think>   </think>answer")
    assert result.sentences == [] and result.separators == ["<think>   </think>answer"]
