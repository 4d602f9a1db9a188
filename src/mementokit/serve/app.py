"""The FastAPI application: vLLM's OpenAI-compatible endpoints over the embedded engine.

    server = Server(engine, tokenizer, model_name="memento-qwen3-8b")
    uvicorn.run(server.app, host="127.0.0.1", port=8000)

Endpoints: POST /v1/chat/completions, POST /v1/completions (JSON or SSE), GET /v1/models, POST /tokenize,
POST /detokenize, GET /health, GET /version, GET /metrics. Errors are vLLM's JSON; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mementokit.format.chat import render_chat
from mementokit.generate.batch import DecodeSequence
from mementokit.serve import protocol as p
from mementokit.serve.engine import Engine, EngineEvent, EngineRequest, QueueFull

log = logging.getLogger("mementokit.serve")


@dataclass
class _Choice:
    """One choice being assembled from engine events."""

    text: p.StopText
    token_ids: list[int] = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    sequence: DecodeSequence | None = None


class _Run:
    """The engine requests of one API call (several prompts x n choices) and their merged event queue."""

    def __init__(self, server: Server, options: p.Options, chat: bool) -> None:
        self.server, self.options, self.chat = server, options, chat
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.requests: list[EngineRequest] = []
        for k, prompt in enumerate(options.prompts):
            def sink(event: EngineEvent, k=k) -> None:
                loop.call_soon_threadsafe(self.queue.put_nowait, (k, event))

            self.requests.append(EngineRequest(
                prompt, options.params, n=options.n, logprobs=options.logprobs,
                prompt_logprobs=options.prompt_logprobs, skip_special_tokens=options.skip_special_tokens,
                block_masking=options.block_masking, processors=_processors(options, server, len(prompt)),
                sink=sink))
        self.choices = [_Choice(p.StopText(options.params.stop, options.include_stop_str))
                        for _ in range(len(options.prompts) * options.n)]
        self.prompt_logprobs: list = [None] * len(options.prompts)
        self.remaining = len(self.choices)
        self.error: str | None = None

    def submit(self) -> None:
        try:
            for request in self.requests:
                self.server.engine.submit(request)
        except QueueFull as exc:
            self.cancel()
            raise p.RequestError(str(exc), None, 429) from None

    def cancel(self) -> None:
        for request in self.requests:
            request.cancel()

    async def events(self):
        """Yield (choice index, event, released text) until every choice has finished."""
        while self.remaining and self.error is None:
            k, event = await self.queue.get()
            if event.kind == "prompt_logprobs":
                self.prompt_logprobs[k] = p.prompt_logprobs_json(self.options.prompts[k], event.payload,
                                                                 self.server.token_text)
                continue
            if event.kind == "error":
                self.error = str(event.payload)
                return
            index = k * self.options.n + event.index
            choice = self.choices[index]
            if event.kind == "token":
                step = event.step
                choice.token_ids.append(step.token_id)
                if step.logprob is not None:
                    choice.logprobs.append(step.logprob)
                released = choice.text.push(step.text, finish_reason=step.finish_reason, stop_reason=step.stop_reason)
                yield index, event, released
            elif event.kind == "finish":
                sequence = event.sequence
                choice.sequence = sequence
                choice.finish_reason = "length" if sequence.finish_reason == "cache_full" else sequence.finish_reason
                choice.stop_reason = sequence.stop_reason
                self.remaining -= 1
                yield index, event, choice.text.flush()

    def usage(self) -> dict:
        sequences = [c.sequence for c in self.choices if c.sequence is not None]
        return p.usage_json(sum(len(ids) for ids in self.options.prompts), sequences)


def _processors(options: p.Options, server: Server, prompt_length: int) -> tuple:
    """min_tokens and logit_bias as logits processors (the generator's own hook)."""
    processors = []
    if options.logit_bias:
        ids = list(options.logit_bias)
        bias = list(options.logit_bias.values())

        def add_bias(_ids, logits):
            logits = logits.clone()
            logits[ids] += logits.new_tensor(bias)
            return logits

        processors.append(add_bias)
    stops = sorted(set(options.params.stop_token_ids) | (set() if options.params.ignore_eos
                                                          else set(server.engine.eos_ids)))
    if options.min_tokens and stops:
        minimum = options.min_tokens

        def hold_stops(ids, logits):
            if len(ids) - prompt_length < minimum:  # stop tokens and EOS wait until min_tokens are out
                logits = logits.clone()
                logits[stops] = float("-inf")
            return logits

        processors.append(hold_stops)
    return tuple(processors)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


class Server:
    """The HTTP front of one engine (one served model)."""

    def __init__(self, engine: Engine, tokenizer, *, model_name: str, chat_template: str | None = None,
                 api_key: str | None = None, model_root: str | None = None, tokens_as_ids: bool = False) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.chat_template = chat_template
        self.api_key = api_key
        self.model_root = model_root or model_name
        self.tokens_as_ids = tokens_as_ids
        self.token_text = p.TokenText(tokenizer)
        self.app = self._build()

    # ----- app -----
    def _build(self) -> FastAPI:
        from mementokit import __version__

        @contextlib.asynccontextmanager
        async def lifespan(_app):
            self.engine.start()
            try:
                yield
            finally:
                self.engine.stop()

        app = FastAPI(title="memento serve", version=__version__, lifespan=lifespan)

        @app.exception_handler(p.RequestError)
        async def request_error(_request: Request, exc: p.RequestError):
            return JSONResponse(exc.body(), status_code=exc.status)

        @app.exception_handler(Exception)
        async def internal_error(_request: Request, exc: Exception):
            log.exception("request failed")
            return JSONResponse(p.error_body(f"internal server error: {type(exc).__name__}", 500), status_code=500)

        @app.middleware("http")
        async def check_api_key(request: Request, call_next):
            if self.api_key and request.url.path.startswith("/v1"):
                if request.headers.get("authorization") != f"Bearer {self.api_key}":
                    return JSONResponse(p.error_body("invalid or missing API key", 401), status_code=401)
            return await call_next(request)

        app.get("/health")(self.health)
        app.get("/version")(lambda: {"version": __version__})
        app.get("/v1/models")(self.models)
        app.get("/metrics")(self.metrics)
        app.post("/tokenize")(self.tokenize)
        app.post("/detokenize")(self.detokenize)
        app.post("/v1/chat/completions")(self.chat_completions)
        app.post("/v1/completions")(self.completions)
        return app

    async def health(self) -> Response:
        return Response(status_code=200)

    async def models(self) -> dict:
        card = {"id": self.model_name, "object": "model", "created": p.now(), "owned_by": "mementokit",
                "root": self.model_root, "parent": None, "max_model_len": self.engine.max_model_len,
                "permission": []}
        return {"object": "list", "data": [card]}

    async def metrics(self) -> Response:
        return Response(self.engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ----- request helpers -----
    async def _body(self, request: Request) -> dict:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise p.RequestError(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise p.RequestError("the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise p.RequestError(f"The model `{model}` does not exist.", "model", 404)
        return body

    def _chat_ids(self, body: dict) -> list[int]:
        messages = p.chat_messages(body)
        add_generation_prompt = p._bool(body, "add_generation_prompt", True)
        continue_final = p._bool(body, "continue_final_message", False)
        if add_generation_prompt and continue_final and body.get("add_generation_prompt") is not None:
            raise p.RequestError("'continue_final_message' and 'add_generation_prompt' cannot both be true",
                                 "continue_final_message")
        try:
            text = render_chat(self.tokenizer, messages, chat_template=self.chat_template,
                               add_generation_prompt=add_generation_prompt, continue_final_message=continue_final)
        except Exception as exc:  # noqa: BLE001 - a template error is the request's fault
            raise p.RequestError(f"cannot apply the chat template to 'messages': {exc}", "messages") from None
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]

    def _check_physical(self, options: p.Options, field_name: str) -> None:
        budget = self.engine.max_cache_tokens
        if budget is None:
            return
        for ids in options.prompts:
            need = self.engine.physical_need(ids, options.block_masking)
            if need + 1 > budget:
                raise p.RequestError(f"the {field_name} needs {need} physical cache tokens after eviction (plus one "
                                     f"to generate), above this server's --max-cache-tokens {budget}", field_name)

    # ----- tokenize -----
    async def tokenize(self, request: Request) -> dict:
        body = await self._body(request)
        if "messages" in body:
            ids = self._chat_ids(body)
        elif isinstance(body.get("prompt"), str):
            special = p._bool(body, "add_special_tokens", True)
            ids = [int(i) for i in self.tokenizer.encode(body["prompt"], add_special_tokens=special)]
        else:
            raise p.RequestError("give 'prompt' (a string) or 'messages'", "prompt")
        out = {"count": len(ids), "max_model_len": self.engine.max_model_len, "tokens": ids, "token_strs": None}
        if p._bool(body, "return_token_strs", False):
            out["token_strs"] = self.tokenizer.convert_ids_to_tokens(ids)
        return out

    async def detokenize(self, request: Request) -> dict:
        body = await self._body(request)
        ids = p._token_ids(body.get("tokens"), "tokens", self.engine.vocab_size)
        return {"prompt": self.tokenizer.decode(ids, skip_special_tokens=False)}

    # ----- generation -----
    async def chat_completions(self, request: Request):
        body = await self._body(request)
        ids = self._chat_ids(body)
        options = p.parse_common(body, chat=True, server=self, prompts=[ids], prompt_field="messages")
        return await self._generate(request, options, chat=True)

    async def completions(self, request: Request):
        body = await self._body(request)
        if body.get("suffix"):
            raise p.RequestError("'suffix' is not supported by this server", "suffix")
        prompts = p.completion_prompts(body, self.tokenizer, self.engine.vocab_size)
        options = p.parse_common(body, chat=False, server=self, prompts=prompts, prompt_field="prompt")
        if options.echo and options.logprobs is not None:
            raise p.RequestError("'echo' together with 'logprobs' is not supported by this server", "echo")
        return await self._generate(request, options, chat=False)

    async def _generate(self, request: Request, options: p.Options, *, chat: bool):
        if options.stream and options.prompt_logprobs is not None:
            raise p.RequestError("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs")
        self._check_physical(options, "messages" if chat else "prompt")
        run = _Run(self, options, chat)
        run.submit()
        if options.stream:
            frames = _ChatStream(self, run) if chat else _CompletionStream(self, run)
            return StreamingResponse(frames.frames(), media_type="text/event-stream")
        watcher = asyncio.create_task(_cancel_on_disconnect(request, run))
        try:
            async for _ in run.events():
                pass
        finally:
            watcher.cancel()
            if run.remaining:
                run.cancel()
        if run.error is not None:
            raise p.RequestError(run.error, None, 500)
        return self._chat_response(run) if chat else self._completion_response(run)

    def _chat_response(self, run: _Run) -> dict:
        o = run.options
        choices = []
        for index, choice in enumerate(run.choices):
            entry = {"index": index, "message": {"role": "assistant", "content": choice.text.text,
                                                 "reasoning_content": None},
                     "logprobs": None, "finish_reason": choice.finish_reason, "stop_reason": choice.stop_reason}
            if o.logprobs is not None:
                entry["logprobs"] = {"content": [p.chat_logprob_entry(t, lp, self.token_text, o.tokens_as_ids)
                                                 for t, lp in zip(choice.token_ids, choice.logprobs)]}
            if o.return_token_ids:
                entry["token_ids"] = choice.token_ids
            choices.append(entry)
        out = {"id": p.new_id("chatcmpl"), "object": "chat.completion", "created": p.now(), "model": self.model_name,
               "choices": choices, "usage": run.usage(), "prompt_logprobs": run.prompt_logprobs[0]}
        if o.return_token_ids:
            out["prompt_token_ids"] = o.prompts[0]
        return out

    def _completion_response(self, run: _Run) -> dict:
        o = run.options
        choices = []
        for index, choice in enumerate(run.choices):
            k = index // o.n
            text = choice.text.text
            if o.echo:
                text = self.tokenizer.decode(o.prompts[k], skip_special_tokens=o.skip_special_tokens) + text
            entry = {"index": index, "text": text, "logprobs": None, "finish_reason": choice.finish_reason,
                     "stop_reason": choice.stop_reason, "prompt_logprobs": run.prompt_logprobs[k]}
            if o.logprobs is not None:
                entry["logprobs"] = p.CompletionLogprobs(self.token_text, o.tokens_as_ids).entries(
                    choice.token_ids, choice.logprobs)
            if o.return_token_ids:
                entry["prompt_token_ids"] = o.prompts[k]
                entry["token_ids"] = choice.token_ids
            choices.append(entry)
        return {"id": p.new_id("cmpl"), "object": "text_completion", "created": p.now(), "model": self.model_name,
                "choices": choices, "usage": run.usage()}


async def _cancel_on_disconnect(request: Request, run: _Run) -> None:
    """A non-streaming client that goes away frees its rows: wait for the disconnect message, then cancel."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            run.cancel()
            return


class _Stream:
    """SSE frames of one run; a client that disconnects (the generator is closed) cancels the run at once."""

    object_name = ""
    id_prefix = ""

    def __init__(self, server: Server, run: _Run) -> None:
        self.server, self.run, self.options = server, run, run.options
        self.id, self.created = p.new_id(self.id_prefix), p.now()

    def chunk(self, choices: list, **extra) -> dict:
        return {"id": self.id, "object": self.object_name, "created": self.created, "model": self.server.model_name,
                "choices": choices, **extra}

    async def frames(self):
        run = self.run
        try:
            for frame in self.opening():
                yield _sse(frame)
            async for index, event, released in run.events():
                frame = self.frame(index, event, released)
                if frame is not None:
                    if self.options.continuous_usage:
                        frame["usage"] = run.usage()
                    yield _sse(frame)
            if run.error is not None:
                yield _sse(p.error_body(run.error, 500))
            elif self.options.include_usage:
                yield _sse(self.chunk([], usage=run.usage()))
            yield "data: [DONE]\n\n"
        finally:
            if run.remaining or run.error is not None:
                run.cancel()

    def opening(self) -> list:
        return []

    def frame(self, index: int, event: EngineEvent, released: str) -> dict | None:
        raise NotImplementedError


class _ChatStream(_Stream):
    object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def opening(self) -> list:
        frames = []
        for index in range(len(self.run.choices)):
            extra = {"prompt_token_ids": self.options.prompts[0]} if self.options.return_token_ids and not index else {}
            frames.append(self.chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                                       "logprobs": None, "finish_reason": None}], **extra))
        return frames

    def frame(self, index: int, event: EngineEvent, released: str) -> dict | None:
        o = self.options
        if event.kind == "finish":
            choice = self.run.choices[index]
            return self.chunk([{"index": index, "delta": {"content": released} if released else {},
                                "logprobs": None, "finish_reason": choice.finish_reason,
                                "stop_reason": choice.stop_reason}])
        step = event.step
        if not released and step.logprob is None and not o.return_token_ids:
            return None
        entry = {"index": index, "delta": {"content": released}, "logprobs": None, "finish_reason": None}
        if step.logprob is not None:
            entry["logprobs"] = {"content": [p.chat_logprob_entry(step.token_id, step.logprob, self.server.token_text,
                                                                  o.tokens_as_ids)]}
        if o.return_token_ids:
            entry["token_ids"] = [step.token_id]
        return self.chunk([entry])


class _CompletionStream(_Stream):
    object_name = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, server: Server, run: _Run) -> None:
        super().__init__(server, run)
        self.logprobs = [p.CompletionLogprobs(server.token_text, self.options.tokens_as_ids)
                         for _ in run.choices]
        self.echoed: set[int] = set()

    def frame(self, index: int, event: EngineEvent, released: str) -> dict | None:
        o = self.options
        if o.echo and index not in self.echoed:
            self.echoed.add(index)
            released = self.server.tokenizer.decode(o.prompts[index // o.n],
                                                    skip_special_tokens=o.skip_special_tokens) + released
        if event.kind == "finish":
            choice = self.run.choices[index]
            return self.chunk([{"index": index, "text": released, "logprobs": None,
                                "finish_reason": choice.finish_reason, "stop_reason": choice.stop_reason}])
        step = event.step
        if not released and step.logprob is None and not o.return_token_ids:
            return None
        entry = {"index": index, "text": released, "logprobs": None, "finish_reason": None, "stop_reason": None}
        if step.logprob is not None:
            entry["logprobs"] = self.logprobs[index].entries([step.token_id], [step.logprob])
        if o.return_token_ids:
            entry["token_ids"] = [step.token_id]
            if len(self.run.choices[index].token_ids) == 1:
                entry["prompt_token_ids"] = o.prompts[index // o.n]
        return self.chunk([entry])
