"""vLLM's OpenAI dialect: reading request bodies (every bad field is a 400 naming it) and writing responses.

Request fields follow vLLM's ChatCompletionRequest / CompletionRequest; unknown fields are ignored (as vLLM does),
known ones are checked strictly. Response shapes, SSE frames and logprob formats follow vLLM's serving code:
  - chat logprobs: choices[].logprobs.content[] = {token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}
    (top_logprobs are the k most likely tokens, as OpenAI defines them);
  - completions logprobs: {text_offset, token_logprobs, tokens, top_logprobs: [{token: logprob}]} (the chosen
    token plus the k most likely, as vLLM gives them);
  - prompt_logprobs: [None, {"<id>": {logprob, rank, decoded_token}}, ...] (the prompt token plus the top k);
  - return_token_ids: `token_ids` per choice, `prompt_token_ids` (per response for chat, per choice for
    completions); return_tokens_as_token_ids: every token string is "token_id:N";
  - logprobs are the model's raw distribution (before temperature and filters), clamped at -9999.0.
Memento additions: skip_special_tokens defaults to FALSE (the block markers stay visible), `vllm_xargs` may
override any block-masking key, and `usage` carries evicted_tokens, completed_blocks and peak_cache_tokens.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field, fields

from mementokit.blocks import BlockMaskingConfig
from mementokit.errors import ConfigError
from mementokit.generate.batch import DecodeSequence, TokenLogprob
from mementokit.generate.sampling import SamplingParams

MAX_N = 128


class RequestError(Exception):
    """A request the server refuses: rendered as vLLM's {"error": {message, type, param, code}}."""

    TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 429: "RateLimitError",
             500: "InternalServerError"}

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status

    def body(self) -> dict:
        return error_body(self.message, self.status, self.param)


def error_body(message: str, status: int, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": RequestError.TYPES.get(status, "BadRequestError"),
                      "param": param, "code": status}}


# ----- reading fields -----------------------------------------------------------------------------------------
_MISSING = object()


def _get(body: dict, name: str, default):
    value = body.get(name, _MISSING)
    return default if value is _MISSING or value is None else value


def _int(body: dict, name: str, default, *, minimum: int | None = None, maximum: int | None = None):
    value = _get(body, name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise RequestError(f"'{name}' must be an integer, got {value!r}", name)
    if minimum is not None and value < minimum:
        raise RequestError(f"'{name}' must be at least {minimum}, got {value}", name)
    if maximum is not None and value > maximum:
        raise RequestError(f"'{name}' must be at most {maximum}, got {value}", name)
    return value


def _float(body: dict, name: str, default, *, minimum: float | None = None, maximum: float | None = None,
           open_minimum: bool = False):
    value = _get(body, name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"'{name}' must be a number, got {value!r}", name)
    if minimum is not None and (value < minimum or (open_minimum and value == minimum)):
        bound = f"greater than {minimum}" if open_minimum else f"at least {minimum}"
        raise RequestError(f"'{name}' must be {bound}, got {value}", name)
    if maximum is not None and value > maximum:
        raise RequestError(f"'{name}' must be at most {maximum}, got {value}", name)
    return float(value)


def _bool(body: dict, name: str, default: bool) -> bool:
    value = _get(body, name, default)
    if not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false, got {value!r}", name)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    value = _get(body, "stop", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise RequestError("'stop' must be a non-empty string or a list of non-empty strings", "stop")
    return tuple(value)


def _token_ids(value, name: str, vocab: int) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise RequestError(f"'{name}' must be a list of token ids (integers)", name)
    bad = [i for i in value if not 0 <= i < vocab]
    if bad:
        raise RequestError(f"'{name}' holds ids outside the vocabulary (0..{vocab - 1}): {bad[:5]}", name)
    return list(value)


# ----- the parsed request -------------------------------------------------------------------------------------
@dataclass
class Options:
    """Everything a generation request asks for, checked."""

    model: str
    prompts: list[list[int]]  # one or more prompts (completions accept a batch)
    params: SamplingParams
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    logprobs: int | None = None  # alternatives per generated token (None: no logprobs)
    prompt_logprobs: int | None = None
    return_token_ids: bool = False
    tokens_as_ids: bool = False
    include_stop_str: bool = False
    skip_special_tokens: bool = False
    echo: bool = False
    min_tokens: int = 0
    logit_bias: dict[int, float] = field(default_factory=dict)
    block_masking: BlockMaskingConfig | None = None


def parse_common(body: dict, *, chat: bool, server, prompts: list[list[int]], prompt_field: str) -> Options:
    """The sampling, logprob and memento fields shared by both endpoints (server: mementokit.serve.app.Server)."""
    engine = server.engine
    vocab = engine.vocab_size
    n = _int(body, "n", 1, minimum=1, maximum=MAX_N)
    if chat and body.get("max_completion_tokens") is not None:
        max_name = "max_completion_tokens"
    else:
        max_name = "max_tokens"
    max_tokens = _int(body, max_name, None if chat else 16, minimum=1)
    longest = max(len(p) for p in prompts)
    room = engine.max_model_len - longest
    if room < 1:
        raise RequestError(f"This model's maximum context length is {engine.max_model_len} tokens (--max-model-len, "
                           f"logical). However, your prompt has {longest} tokens. Please reduce the length of the "
                           f"{prompt_field}.", prompt_field)
    if max_tokens is None:
        max_tokens = room
    elif max_tokens > room:
        raise RequestError(f"This model's maximum context length is {engine.max_model_len} tokens (--max-model-len, "
                           f"logical). However, you requested {longest + max_tokens} tokens ({longest} in the "
                           f"{prompt_field}, {max_tokens} in the completion). Please reduce the length of the "
                           f"{prompt_field} or completion.", max_name)
    temperature = _float(body, "temperature", 1.0, minimum=0.0)
    top_p = _float(body, "top_p", 1.0, minimum=0.0, maximum=1.0, open_minimum=True)
    top_k = _int(body, "top_k", 0, minimum=-1)
    min_p = _float(body, "min_p", 0.0, minimum=0.0, maximum=1.0)
    if min_p >= 1.0:
        raise RequestError(f"'min_p' must be below 1, got {min_p}", "min_p")
    seed = _int(body, "seed", None)
    stop_token_ids = tuple(_token_ids(_get(body, "stop_token_ids", []), "stop_token_ids", vocab))
    min_tokens = _int(body, "min_tokens", 0, minimum=0, maximum=max_tokens)
    for name in ("presence_penalty", "frequency_penalty"):
        if _float(body, name, 0.0) != 0.0:
            raise RequestError(f"'{name}' is not supported by this server (only 0)", name)
    if _float(body, "repetition_penalty", 1.0) != 1.0:
        raise RequestError("'repetition_penalty' is not supported by this server (only 1.0)", "repetition_penalty")
    if _bool(body, "use_beam_search", False):
        raise RequestError("'use_beam_search' is not supported by this server", "use_beam_search")
    stream = _bool(body, "stream", False)
    stream_options = _get(body, "stream_options", {})
    if not isinstance(stream_options, dict):
        raise RequestError("'stream_options' must be an object", "stream_options")
    if stream_options and not stream:
        raise RequestError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    include_usage = _bool(stream_options, "include_usage", False) if stream_options else False
    continuous = _bool(stream_options, "continuous_usage_stats", False) if stream_options else False
    limit = engine.max_logprobs
    if chat:
        want = _bool(body, "logprobs", False)
        top = _int(body, "top_logprobs", 0, minimum=0, maximum=limit)
        if top and not want:
            raise RequestError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        logprobs = top if want else None
    else:
        logprobs = _int(body, "logprobs", None, minimum=0, maximum=limit)
    prompt_logprobs = _int(body, "prompt_logprobs", None, minimum=0, maximum=limit)
    params = _sampling(max_tokens, temperature, top_p, top_k, min_p, seed, body, stop_token_ids)
    return Options(
        model=body.get("model") or server.model_name, prompts=prompts, params=params, n=n, stream=stream,
        include_usage=include_usage or continuous, continuous_usage=continuous, logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        return_token_ids=_bool(body, "return_token_ids", False),
        tokens_as_ids=_bool(body, "return_tokens_as_token_ids", server.tokens_as_ids),
        include_stop_str=_bool(body, "include_stop_str_in_output", False),
        skip_special_tokens=_bool(body, "skip_special_tokens", False),
        echo=_bool(body, "echo", False) if not chat else False,
        min_tokens=min_tokens, logit_bias=_logit_bias(body, vocab),
        block_masking=block_masking_override(body, server))


def _sampling(max_tokens, temperature, top_p, top_k, min_p, seed, body, stop_token_ids) -> SamplingParams:
    try:
        return SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p,
                              top_k=max(top_k, 0), min_p=min_p, seed=seed, stop=_stop(body),
                              stop_token_ids=stop_token_ids, ignore_eos=_bool(body, "ignore_eos", False))
    except ConfigError as exc:
        raise RequestError(str(exc)) from None


def _logit_bias(body: dict, vocab: int) -> dict[int, float]:
    value = _get(body, "logit_bias", {})
    if not isinstance(value, dict):
        raise RequestError("'logit_bias' must be an object mapping token ids to biases", "logit_bias")
    out = {}
    for key, bias in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise RequestError(f"'logit_bias' key {key!r} is not a token id", "logit_bias") from None
        if not 0 <= token < vocab:
            raise RequestError(f"'logit_bias' token id {token} is outside the vocabulary (0..{vocab - 1})",
                               "logit_bias")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            raise RequestError(f"'logit_bias' values must be numbers in [-100, 100], got {bias!r}", "logit_bias")
        out[token] = float(bias)
    return out


def block_masking_override(body: dict, server) -> BlockMaskingConfig | None:
    """vllm_xargs keys merged over the server's block-masking config; any other key is a 400 naming it."""
    xargs = _get(body, "vllm_xargs", None)
    if xargs is None:
        return None
    if not isinstance(xargs, dict):
        raise RequestError("'vllm_xargs' must be an object of block-masking keys", "vllm_xargs")
    if not xargs:
        return None
    known = {f.name for f in fields(BlockMaskingConfig)}
    unknown = sorted(set(xargs) - known)
    if unknown:
        raise RequestError(f"vllm_xargs: unknown key(s) {', '.join(repr(k) for k in unknown)}; this server takes "
                           f"block-masking keys only: {', '.join(sorted(known))}", "vllm_xargs")
    try:
        config = BlockMaskingConfig.from_dict({**server.engine.config.to_dict(), **xargs}, source="vllm_xargs")
        server.engine.markers_for(config)
    except ConfigError as exc:
        raise RequestError(str(exc), "vllm_xargs") from None
    return config


def chat_messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string 'role'", "messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text is served
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise RequestError(f"messages[{i}].content: only text parts are supported", "messages")
                texts.append(part["text"])
            content = "".join(texts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string or a list of text parts", "messages")
        out.append({"role": message["role"], "content": content})
    return out


def completion_prompts(body: dict, tokenizer, vocab: int) -> list[list[int]]:
    """`prompt`: a string, a list of strings, a list of ids or a list of lists of ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompt = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise RequestError("'prompt' must be a string, a list of strings, a list of token ids or a list of such "
                           "lists", "prompt")
    out = []
    for item in prompt:
        if isinstance(item, str):
            ids = tokenizer.encode(item, add_special_tokens=False)
        else:
            ids = _token_ids(item, "prompt", vocab)
        if not ids:
            raise RequestError("'prompt' must not be empty", "prompt")
        out.append([int(i) for i in ids])
    return out


# ----- writing responses --------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class TokenText:
    """Token strings for logprobs (decoded one id at a time, cached), or "token_id:N"."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int, as_id: bool = False) -> str:
        if as_id:
            return f"token_id:{token_id}"
        text = self._cache.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if len(self._cache) < 200_000:
                self._cache[token_id] = text
        return text


def clamp(logprob: float) -> float:
    return max(logprob, -9999.0)


def chat_logprob_entry(token_id: int, lp: TokenLogprob, text: TokenText, as_ids: bool) -> dict:
    token = text(token_id, as_ids)
    return {"token": token, "logprob": clamp(lp.logprob), "bytes": list(token.encode("utf-8", errors="replace")),
            "top_logprobs": [{"token": (t := text(i, as_ids)), "logprob": clamp(v),
                              "bytes": list(t.encode("utf-8", errors="replace"))} for i, v in lp.top]}


class CompletionLogprobs:
    """vLLM's completions logprobs, accumulated token by token (text_offset counts the text before each token)."""

    def __init__(self, text: TokenText, as_ids: bool, offset: int = 0) -> None:
        self.text, self.as_ids, self.offset = text, as_ids, offset

    def entries(self, token_ids: list[int], logprobs: list[TokenLogprob]) -> dict:
        out = {"text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []}
        for token_id, lp in zip(token_ids, logprobs):
            token = self.text(token_id, self.as_ids)
            out["text_offset"].append(self.offset)
            out["token_logprobs"].append(clamp(lp.logprob))
            out["tokens"].append(token)
            top = {token: clamp(lp.logprob)}
            for i, v in lp.top:
                top.setdefault(self.text(i, self.as_ids), clamp(v))
            out["top_logprobs"].append(top)
            self.offset += len(token)
        return out


def prompt_logprobs_json(prompt_ids: list[int], rows: list, text: TokenText) -> list:
    """vLLM's prompt_logprobs: None for the first token, then {id: {logprob, rank, decoded_token}} per position."""
    out = []
    for token_id, lp in zip(prompt_ids, rows):
        if lp is None:
            out.append(None)
            continue
        entry = {str(token_id): {"logprob": clamp(lp.logprob), "rank": lp.rank, "decoded_token": text(token_id)}}
        for rank, (i, v) in enumerate(lp.top, start=1):
            entry.setdefault(str(i), {"logprob": clamp(v), "rank": rank, "decoded_token": text(i)})
        out.append(entry)
    return out


class StopText:
    """The text of one choice as the client sees it: stop strings cut (unless include_stop_str_in_output), the text
    of a stop token / EOS left out, and, while streaming, a stop string's possible beginning held back."""

    def __init__(self, stops: tuple[str, ...], include_stop_str: bool) -> None:
        self.stops = stops
        self.include = include_stop_str
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""  # everything produced (stop token text excluded)
        self.sent = 0  # characters already released

    def push(self, delta: str, *, finish_reason: str | None, stop_reason) -> str:
        """Add one token's text; returns what can be released now."""
        if finish_reason == "stop" and not isinstance(stop_reason, str):
            delta = ""  # a stop token or EOS: an id and a logprob, no text
        self.text += delta
        if finish_reason == "stop" and isinstance(stop_reason, str):
            cut = self.text.find(stop_reason)
            if cut >= 0:
                self.text = self.text[: cut + len(stop_reason)] if self.include else self.text[:cut]
        if finish_reason is not None:
            return self.flush()
        release = len(self.text) - self.hold if self.stops else len(self.text)
        if release <= self.sent:
            return ""
        out = self.text[self.sent : release]
        self.sent = release
        return out

    def flush(self) -> str:
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out


def usage_json(prompt_tokens: int, sequences: list[DecodeSequence]) -> dict:
    """OpenAI usage plus memento figures: evicted_tokens and completed_blocks (prompt included, summed over
    choices), peak_cache_tokens (the largest physical cache any choice held)."""
    completion = sum(len(s.generated) for s in sequences)
    evicted = sum(s.machine.evicted_tokens for s in sequences if s.machine is not None)
    blocks = sum(s.machine.completed_blocks for s in sequences if s.machine is not None)
    peak = max((s.stats.peak_tokens for s in sequences), default=0)
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion,
            "completion_tokens": completion, "prompt_tokens_details": None,
            "evicted_tokens": evicted, "completed_blocks": blocks, "peak_cache_tokens": peak}
