"""Scoring, summarising and assembling against the scripted LLM: by number, with retries, never padded."""

from __future__ import annotations

import asyncio

import pytest

from helpers_llm_server import Fault, Script, running_server
from mementokit.format import parse_response
from mementokit.pipeline.assemble import answer_after_think, assemble_response
from mementokit.pipeline.client import LLMClient, LLMConfig
from mementokit.pipeline.score import ScoreConfig, StageFailure, score_boundaries, windows
from mementokit.pipeline.split import split_trace
from mementokit.pipeline.summarize import SummarizeConfig, Summarizer

SENTENCES = [f"Sentence number {i} says something about the value x = {i}." for i in range(40)]


def client_for(url):
    return LLMClient(LLMConfig(model="scripted", base_url=url, api_key="x", backoff_base_s=0.01, backoff_max_s=0.02))


def test_windows_cover_every_boundary_once_and_the_second_pass_is_shifted():
    first = windows(100, 32)
    second = windows(100, 23, first=11)
    assert sorted(b for w in first for b in w) == list(range(100)) == sorted(b for w in second for b in w)
    edges_first = {w[-1] for w in first[:-1]}
    edges_second = {w[-1] for w in second[:-1]}
    assert not edges_first & edges_second


def test_scores_for_every_boundary_with_two_passes_averaged():
    script = Script(style="messy")
    with running_server(script) as url:
        result = asyncio.run(score_boundaries(client_for(url), SENTENCES, None, ScoreConfig(window=8, second_window=5)))
    assert len(result.scores) == 39 and len(result.passes) == 2
    assert all(s == (a + b) / 2 for s, a, b in zip(result.scores, *result.passes))


def test_malformed_and_incomplete_answers_are_asked_again():
    script = Script(
        faults=[
            Fault("malformed", role="score"),
            Fault("wrong_count", role="score"),
            Fault("out_of_range", role="score"),
        ]
    )
    with running_server(script) as url:
        client = client_for(url)
        result = asyncio.run(score_boundaries(client, SENTENCES[:10], None, ScoreConfig(window=32, max_attempts=4)))
    assert len(result.scores) == 9 and all(0 <= s <= 3 for s in result.scores)
    assert client.usage.stage("score").reasks >= 2


def test_a_window_that_never_parses_is_a_failure_not_zeros():
    script = Script(faults=[Fault("malformed", role="score") for _ in range(10)])
    with running_server(script) as url:
        with pytest.raises(StageFailure, match="no usable scores") as info:
            asyncio.run(score_boundaries(client_for(url), SENTENCES[:10], None, ScoreConfig(max_attempts=3)))
    assert info.value.stage == "score"


BLOCKS = [
    " ".join(f"In block {b} step {i} we find y_{i} = {i * b} + sqrt({i})." for i in range(30)) for b in range(1, 6)
]


def test_messy_answers_in_reversed_order_are_matched_to_blocks_by_number():
    script = Script(style="messy")
    with running_server(script) as url:
        summaries = asyncio.run(
            Summarizer(client_for(url), SummarizeConfig(batch_tokens=700, judge_batch_tokens=700)).summarize(
                "p", BLOCKS
            )
        )
    for block, summary in zip(BLOCKS, summaries):
        assert " ".join(block.split()).startswith(summary.memento[:40])  # the memento of THIS block
    assert all(s.passed and len(s.history) == 2 for s in summaries)  # failed round 1, passed after refining


def test_the_best_memento_is_kept_not_the_last():
    script = Script(refine_factor=0.3)  # refining makes mementos shorter, and the judge scores them lower
    with running_server(script) as url:
        summaries = asyncio.run(Summarizer(client_for(url), SummarizeConfig(rounds=2)).summarize("p", BLOCKS))
    for s in summaries:
        assert s.history[1].score < s.history[0].score
        assert s.memento == s.history[0].memento and s.score == s.history[0].score and not s.passed


def test_a_missing_memento_is_asked_for_again():
    script = Script(faults=[Fault("wrong_count", role="compress")])
    with running_server(script) as url:
        client = client_for(url)
        summaries = asyncio.run(Summarizer(client, SummarizeConfig(rounds=1)).summarize("p", BLOCKS))
    assert len(summaries) == 5 and all(s.memento for s in summaries)
    assert client.usage.stage("compress").reasks == 1


def test_assembled_response_parses_back_to_the_same_blocks_and_mementos():
    cot = (
        "<think>\nFirst we set up the equation carefully here.\n\n"
        "Then we solve it for x and get 4.\n</think>\n\nThe answer is 4."
    )
    split = split_trace(cot)
    response = assemble_response(cot, split.spans, [(0, 0), (1, 1)], ["set up eq", "x=4"])
    trace = parse_response(response)
    assert trace.is_valid and trace.block_texts() == split.sentences and trace.summary_texts() == ["set up eq", "x=4"]
    assert response.startswith("<think><|block_start|>First") and response.endswith("</think>\n\nThe answer is 4.")
    assert answer_after_think(cot) == "\n\nThe answer is 4."


def test_a_trace_containing_marker_strings_fails_assembly():
    cot = "<think>We print <|block_end|> literally in this sentence here. And then we stop right here now.</think>"
    split = split_trace(cot)
    with pytest.raises(StageFailure) as info:
        assemble_response(cot, split.spans, [(0, len(split.sentences) - 1)], ["m"])
    assert info.value.stage == "assemble"
