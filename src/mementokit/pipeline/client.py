"""One async client for any OpenAI-compatible chat-completions endpoint (generic: the pipeline and memory
distillation both use it).

- one global concurrency limit (an asyncio semaphore shared by every trace and stage of a run);
- retries with exponential backoff and full jitter on 429, 408/409, 5xx, timeouts, dropped connections AND
  replies that are not a well-formed completion (a truncated JSON body, no `choices`, no content), honouring a
  Retry-After header when the server sends one;
- every request counted (`requests`), every billed token counted, per call, into the ledgers the caller passes;
- early abort: when the first `abort_after` attempts of a run all fail the same non-transient way (401, 404,
  connection refused) the client raises `LLMAbort` naming the URL, instead of failing every trace slowly;
- a content-addressed response cache: a rerun with the same inputs costs nothing and answers the same; an
  answer the caller cannot use (`usable`) is never cached.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mementokit.errors import ConfigError, LLMAbort, LLMError
from mementokit.pipeline.cache import ResponseCache, request_key
from mementokit.pipeline.usage import Usage

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


__all__ = ["LLMAbort", "LLMClient", "LLMConfig", "LLMError", "MalformedReply", "retry_after_seconds"]


class MalformedReply(Exception):
    """A 200 reply that is not a usable completion (no choices, no content): retried like a 5xx."""


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
    abort_after: int = 8  # failed attempts, all alike and before any success, that stop the run (0: never)

    def __post_init__(self) -> None:
        for name in ("max_concurrency",):
            if getattr(self, name) < 1:
                raise ConfigError(f"LLMConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("timeout_s", "backoff_max_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"LLMConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_retries", "backoff_base_s", "temperature", "abort_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"LLMConfig.{name} must be >= 0, got {getattr(self, name)}")

    def resolved(self) -> LLMConfig:
        base_url = self.base_url or os.environ.get("OPENAI_BASE_URL")
        api_key = self.api_key or os.environ.get("OPENAI_API_KEY") or ("none" if base_url else None)
        if not self.model:
            raise ConfigError("no model named: pass --model")
        if not api_key:
            raise ConfigError("no API key: pass --api-key or set OPENAI_API_KEY (or name a local --base-url)")
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


def _clean_text(text: Any) -> Any:
    """A lone surrogate cannot be sent as UTF-8: replace it (the trace itself keeps it)."""
    if isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace").decode("utf-8")
    return text


class LLMClient:
    """`await client.complete(messages, stage=..., ledgers=[...])` -> the answer's text (raises LLMError)."""

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
        self.successes = 0  # replies received that were well-formed completions
        self._streak: list[str] = []  # descriptions of the failed attempts before the first success
        self.aborted: LLMAbort | None = None

    @property
    def url(self) -> str:
        return str(self._client.base_url).rstrip("/")

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:  # created inside the running loop
            self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
        return self._semaphore

    def request(
        self, messages: Sequence[dict[str, str]], max_tokens: int | None = None, **options: Any
    ) -> dict[str, Any]:
        """The create() arguments; `options` are more of them (logprobs=True, top_logprobs=20, ...), and an
        `extra_body` among them is merged over the config's (server-specific fields such as return_token_ids)."""
        cleaned = [{k: _clean_text(v) for k, v in m.items()} for m in messages]
        req: dict[str, Any] = {"model": self.config.model, "messages": cleaned, "temperature": self.config.temperature}
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
        usable: Callable[[str], bool] | None = None,
    ) -> str:
        """The answer's text. Raises LLMError when the call fails for good, LLMAbort when the endpoint is unusable.

        `usable(text)`: whether the caller can use the answer; an unusable one is returned but never cached.
        """
        response = await self.chat(messages, stage=stage, ledgers=ledgers, max_tokens=max_tokens, cache_if=usable)
        return str(response["choices"][0]["message"].get("content") or "")

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        stage: str,
        ledgers: Sequence[Usage] = (),
        max_tokens: int | None = None,
        cache_if: Callable[[str], bool] | None = None,
        require_text: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        """The whole response as a plain dict (choices with logprobs, server extras such as token_ids, usage).

        `options` go into the request (see `request`). A reply with no choices (or, with `require_text`, no text)
        is a transient fault, retried like a 5xx. The answer is cached when the cache is on, it has text, and
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
            if self.aborted is not None:
                raise self.aborted
            try:
                data, prompt_tokens, completion_tokens = await self._attempt(req, stage, ledgers, require_text)
                break
            except Exception as exc:  # noqa: BLE001 - classified right below
                failure: BaseException = exc
            wait = self._retry_delay(failure, attempt)
            self._note_failure(failure, transient=wait is not None)
            if self.aborted is not None or wait is None or attempt >= self.config.max_retries:
                for ledger in ledgers:
                    ledger.stage(stage).errors += 1
                if self.aborted is not None:
                    raise self.aborted from failure
                raise LLMError(
                    f"{stage} call to {self.url} failed after {attempt + 1} attempt(s): {describe_failure(failure)}"
                ) from failure
            for ledger in ledgers:
                ledger.stage(stage).retries += 1
            attempt += 1
            await asyncio.sleep(wait)
        for ledger in ledgers:
            ledger.stage(stage).calls += 1
        content = data["choices"][0].get("message", {}).get("content") or ""
        if self.cache is not None and content.strip() and (cache_if is None or cache_if(content)):
            self.cache.put(
                key,
                {
                    "content": content,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "response": data,
                },
            )
        return data

    async def _attempt(
        self, req: dict[str, Any], stage: str, ledgers: Sequence[Usage], require_text: bool
    ) -> tuple[dict[str, Any], int, int]:
        """One request on the wire: (response dict, prompt tokens, completion tokens); tokens counted even when
        the reply turns out unusable."""
        for ledger in ledgers:
            ledger.stage(stage).requests += 1
        async with self.semaphore:
            self.in_flight += 1
            try:
                response = await self._client.chat.completions.create(**req)
            finally:
                self.in_flight -= 1
        if not hasattr(response, "model_dump"):  # a body that is not a JSON object (openai returns the raw text)
            raise MalformedReply(f"the reply is not a completion object ({type(response).__name__})")
        data = response.model_dump(mode="json")  # extra fields a server adds are kept
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        for ledger in ledgers:
            s = ledger.stage(stage)
            s.prompt_tokens += prompt_tokens
            s.completion_tokens += completion_tokens
        choices = data.get("choices")
        if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
            raise MalformedReply("the reply has no choices")
        content = choices[0]["message"].get("content")
        if require_text and (not isinstance(content, str) or not content.strip()):
            raise MalformedReply("the reply has no content")
        self.successes += 1
        self._streak.clear()
        return data, prompt_tokens, completion_tokens

    def _note_failure(self, exc: BaseException, transient: bool) -> None:
        """Count failures before the first success; abort when `abort_after` of them are all alike and fatal."""
        limit = self.config.abort_after
        if not limit or self.successes or self.aborted is not None:
            return
        refused = describe_failure(exc).startswith("connection refused")
        if transient and not refused:
            self._streak.clear()  # a 429 or a timeout says the endpoint is there
            return
        self._streak.append(describe_failure(exc))
        if len(self._streak) >= limit and len(set(self._streak[-limit:])) == 1:
            self.aborted = LLMAbort(
                f"stopping: the first {len(self._streak)} calls to {self.url} all failed with {self._streak[-1]} "
                "(check --base-url, --api-key and --model)"
            )
            self.aborted.signature = self._streak[-1]

    def _retry_delay(self, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before retrying `exc`, or None when it must not be retried."""
        o = self._openai
        hinted = None
        if isinstance(exc, o.APIStatusError):
            if exc.status_code not in RETRYABLE_STATUS:
                return None
            hinted = retry_after_seconds(getattr(exc.response, "headers", None))
        elif not isinstance(
            exc, TRANSIENT_ERRORS + (o.APITimeoutError, o.APIConnectionError, o.APIResponseValidationError)
        ):
            return None
        # full jitter: uniform in [0, min(max, base * 2^attempt)]; a server hint is a floor
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * (2**attempt))
        wait = random.uniform(0, ceiling)
        if hinted is not None:
            wait = max(wait, min(hinted, self.config.backoff_max_s * 5))
        return wait

    async def aclose(self) -> None:
        await self._client.close()


# Replies that are not a well-formed completion, and a connection that breaks: worth another try.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    MalformedReply,
    json.JSONDecodeError,
    asyncio.TimeoutError,
    ConnectionError,
    UnicodeDecodeError,
)


def describe_failure(exc: BaseException) -> str:
    """A short, stable description of a failed attempt (the same failure gives the same text)."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = body["error"].get("message", message)
        return f"HTTP {status}" + (f" ({str(message)[:120]})" if message else "")
    cause = exc.__cause__ or exc.__context__
    if type(exc).__name__ == "APIConnectionError" and cause is not None:
        text = str(cause) or type(cause).__name__
        if "refused" in text.lower() or type(cause).__name__ == "ConnectError":
            return f"connection refused ({type(cause).__name__})"
        return f"connection error ({type(cause).__name__}: {text[:120]})"
    text = str(exc)
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__
