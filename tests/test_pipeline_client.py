"""The LLM client against a real local HTTP server: retries, Retry-After, concurrency, usage, cache."""

from __future__ import annotations

import asyncio

import pytest

from helpers_llm_server import Fault, Script, running_server
from mementokit.pipeline.client import LLMClient, LLMConfig, LLMError, retry_after_seconds

SCORE_MESSAGES = [
    {"role": "system", "content": "You rate where a chain of thought may be cut."},
    {"role": "user", "content": "One. [[B0]] Two. [[B1]] Three."},
]


def make_client(url, **kwargs):
    defaults = dict(model="scripted", base_url=url, api_key="x", backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5)
    defaults.update(kwargs)
    return LLMClient(LLMConfig(**defaults))


def test_429_with_retry_after_and_500_are_retried_until_an_answer():
    script = Script(faults=[Fault("429", retry_after=0.05), Fault("500"), Fault("429", retry_after=0)])
    with running_server(script) as url:
        client = make_client(url)
        answer = asyncio.run(client.complete(SCORE_MESSAGES, stage="score"))
    assert '"0"' in answer and '"1"' in answer
    assert script.statuses["429"] == 2 and script.statuses["500"] == 1
    assert client.usage.stage("score").retries == 3 and client.usage.stage("score").calls == 1


def test_retry_after_is_a_floor_for_the_backoff():
    client = LLMClient(
        LLMConfig(model="m", base_url="http://127.0.0.1:9/v1", api_key="x", backoff_base_s=0.01, backoff_max_s=60)
    )
    import httpx2
    import openai

    response = httpx2.Response(429, headers={"retry-after": "7"}, request=httpx2.Request("POST", "http://x"))
    exc = openai.RateLimitError("slow down", response=response, body=None)
    assert all(client._retry_delay(exc, attempt) >= 7 for attempt in range(5))
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    bad = openai.BadRequestError(
        "no", response=httpx2.Response(400, request=httpx2.Request("POST", "http://x")), body=None
    )
    assert client._retry_delay(bad, 0) is None  # a 400 is not retried


def test_a_call_that_keeps_failing_raises_after_its_retries():
    script = Script(faults=[Fault("500") for _ in range(10)])
    with running_server(script) as url:
        client = make_client(url, max_retries=2)
        with pytest.raises(LLMError, match="3 attempt"):
            asyncio.run(client.complete(SCORE_MESSAGES, stage="score"))
    assert client.usage.stage("score").errors == 1


def test_a_slow_answer_times_out_and_is_retried():
    script = Script(faults=[Fault("slow", seconds=2.0)])
    with running_server(script) as url:
        client = make_client(url, timeout_s=0.3)
        answer = asyncio.run(client.complete(SCORE_MESSAGES, stage="score"))
    assert "scores" in answer and client.usage.stage("score").retries == 1


def test_global_concurrency_limit_holds_across_many_calls():
    script = Script(latency_s=0.05)
    with running_server(script) as url:
        client = make_client(url, max_concurrency=3)

        async def many():
            msgs = [[SCORE_MESSAGES[0], {"role": "user", "content": f"n{i} [[B{i}]] x"}] for i in range(12)]
            return await asyncio.gather(*[client.complete(m, stage="score") for m in msgs])

        asyncio.run(many())
    assert script.max_in_flight <= 3 and script.roles["score"] == 12


def test_usage_matches_what_the_server_counted_and_the_cache_makes_a_rerun_free(tmp_path):
    script = Script()
    with running_server(script) as url:
        first = make_client(url, cache_dir=str(tmp_path))
        a = asyncio.run(first.complete(SCORE_MESSAGES, stage="score"))
        assert first.usage.stage("score").prompt_tokens == script.prompt_tokens > 0
        second = make_client(url, cache_dir=str(tmp_path))
        b = asyncio.run(second.complete(SCORE_MESSAGES, stage="score"))
    assert a == b and script.roles["score"] == 1
    assert second.usage.stage("score").cached == 1 and second.usage.stage("score").prompt_tokens == 0
