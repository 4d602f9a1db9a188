"""One async client for any OpenAI-compatible chat-completions endpoint.

- one global concurrency limit (an asyncio semaphore shared by every trace and stage of a run);
- retries with exponential backoff and full jitter on 429, 408/409, 5xx, timeouts and dropped
  connections, honouring a Retry-After header when the server sends one;
- usage (prompt / completion tokens) counted per call into the ledgers the caller passes (trace, run);
- a content-addressed response cache: a rerun with the same inputs costs nothing and answers the same.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mementokit.errors import ConfigError
from mementokit.pipeline.cache import ResponseCache, request_key
from mementokit.pipeline.usage import Usage

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMError(Exception):
    """A call that failed for good (after its retries), or an answer that could not be used."""


@dataclass
class LLMConfig:
    model: str
    base_url: str | None = None  # default: OPENAI_BASE_URL
    api_key: str | None = None  # default: OPENAI_API_KEY ("none" for local servers)
    max_concurrency: int = 16  # LLM calls in flight at once, over the whole run
    timeout_s: float = 300.0
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int | None = None
    cache_dir: str | None = None
    extra_body: dict[str, Any] | None = None  # e.g. {"chat_template_kwargs": {"enable_thinking": false}}

    def resolved(self) -> LLMConfig:
        base_url = self.base_url or os.environ.get("OPENAI_BASE_URL")
        api_key = self.api_key or os.environ.get("OPENAI_API_KEY") or ("none" if base_url else None)
        if not self.model:
            raise ConfigError("no model named: pass --model")
        if not api_key:
            raise ConfigError("no API key: pass --api-key or set OPENAI_API_KEY (or name a local --base-url)")
        if self.max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1")
        return LLMConfig(**{**vars(self), "base_url": base_url, "api_key": api_key})


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or retry-after-ms; None if absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class LLMClient:
    def __init__(self, config: LLMConfig):
        import openai  # the "pipeline" extra; imported here so the rest of mementokit never needs it

        self._openai = openai
        self.config = config.resolved()
        self._client = openai.AsyncOpenAI(
            base_url=self.config.base_url,
            api_key=self.config.api_key,
            timeout=self.config.timeout_s,
            max_retries=0,  # we retry ourselves, with jitter and Retry-After
        )
        self._semaphore: asyncio.Semaphore | None = None
        self.cache = ResponseCache(self.config.cache_dir) if self.config.cache_dir else None
        self.usage = Usage()  # the whole run
        self.in_flight = 0

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:  # created inside the running loop
            self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
        return self._semaphore

    def request(self, messages: Sequence[dict[str, str]], max_tokens: int | None = None,
                **options: Any) -> dict[str, Any]:
        """The create() arguments; `options` are more of them (logprobs=True, top_logprobs=20, ...), and an
        `extra_body` among them is merged over the config's (server-specific fields such as return_token_ids)."""
        req: dict[str, Any] = {"model": self.config.model, "messages": list(messages),
                               "temperature": self.config.temperature}
        limit = max_tokens or self.config.max_tokens
        if limit:
            req["max_tokens"] = limit
        extra_body = {**(self.config.extra_body or {}), **(options.pop("extra_body", None) or {})}
        req.update(options)
        if extra_body:
            req["extra_body"] = extra_body
        return req

    async def complete(
        self,
        messages: Sequence[dict[str, str]],
        *,
        stage: str,
        ledgers: Sequence[Usage] = (),
        max_tokens: int | None = None,
    ) -> str:
        """The answer's text. Raises LLMError when the call fails for good."""
        response = await self.chat(messages, stage=stage, ledgers=ledgers, max_tokens=max_tokens,
                                   cache_if=lambda content: bool(content.strip()))
        return str(response["choices"][0]["message"].get("content") or "")

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        stage: str,
        ledgers: Sequence[Usage] = (),
        max_tokens: int | None = None,
        cache_if: Callable[[str], bool] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The whole response as a plain dict (choices with logprobs, server extras such as token_ids, usage).

        `options` go into the request (see `request`). The answer is cached when the response cache is on and
        `cache_if(content)` holds (default: always). Raises LLMError when the call fails for good.
        """
        req = self.request(messages, max_tokens, **options)
        key = request_key(req)
        ledgers = [self.usage, *ledgers]
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                for ledger in ledgers:
                    s = ledger.stage(stage)
                    s.calls += 1
                    s.cached += 1
                # entries written before whole responses were cached hold the text only
                return hit.get("response") or {"choices": [{"index": 0, "message": {"content": hit["content"]}}]}
        attempt = 0
        while True:
            try:
                async with self.semaphore:
                    self.in_flight += 1
                    try:
                        response = await self._client.chat.completions.create(**req)
                    finally:
                        self.in_flight -= 1
                data = response.model_dump(mode="json")  # extra fields a server adds are kept
                if not data.get("choices"):
                    raise LLMError(f"{stage}: the server answered with no choices")
                content = data["choices"][0].get("message", {}).get("content") or ""
                usage = data.get("usage") or {}
                prompt_tokens = int(usage.get("prompt_tokens") or 0)
                completion_tokens = int(usage.get("completion_tokens") or 0)
                break
            except Exception as exc:  # noqa: BLE001 - classified right below
                wait = self._retry_delay(exc, attempt)
                if wait is None or attempt >= self.config.max_retries:
                    for ledger in ledgers:
                        ledger.stage(stage).errors += 1
                    if isinstance(exc, LLMError):
                        raise
                    raise LLMError(f"{stage} call failed after {attempt + 1} attempt(s): "
                                   f"{type(exc).__name__}: {exc}") from exc
                for ledger in ledgers:
                    ledger.stage(stage).retries += 1
                attempt += 1
                await asyncio.sleep(wait)
        for ledger in ledgers:
            s = ledger.stage(stage)
            s.calls += 1
            s.prompt_tokens += prompt_tokens
            s.completion_tokens += completion_tokens
        if self.cache is not None and (cache_if is None or cache_if(content)):
            self.cache.put(key, {"content": content, "prompt_tokens": prompt_tokens,
                                 "completion_tokens": completion_tokens, "response": data})
        return data

    def _retry_delay(self, exc: Exception, attempt: int) -> float | None:
        """Seconds to wait before retrying `exc`, or None when it must not be retried."""
        o = self._openai
        if isinstance(exc, o.APIStatusError):
            if exc.status_code not in RETRYABLE_STATUS:
                return None
            hinted = retry_after_seconds(getattr(exc.response, "headers", None))
        elif isinstance(exc, (o.APITimeoutError, o.APIConnectionError, asyncio.TimeoutError, ConnectionError)):
            hinted = None
        else:
            return None
        # full jitter: uniform in [0, min(max, base * 2^attempt)]; a server hint is a floor
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * (2**attempt))
        wait = random.uniform(0, ceiling)
        if hinted is not None:
            wait = max(wait, min(hinted, self.config.backoff_max_s * 5))
        return wait

    async def aclose(self) -> None:
        await self._client.close()
