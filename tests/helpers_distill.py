"""Helpers for the distillation tests: a HistoryAgent checkpoint written in the documented layout, and a real
teacher: a tiny random causal LM behind an OpenAI-compatible HTTP server on
127.0.0.1, speaking vLLM's dialect for logprobs (chat `logprobs` + `top_logprobs`, `return_token_ids`,
`return_tokens_as_token_ids`, the stop token's row included). Its logprobs are the model's own, so a student
equal to the teacher can be checked against them.

    teacher = build_teacher(tmp_path)                 # model + tokenizer saved in tmp_path/"teacher"
    with memento_serve(teacher) as base_url: ...      # the project's own server (`memento serve`), masking off
    with serve_teacher(teacher) as (base_url, stats): ...   # a scripted one that can misbehave (latency, fewer
                                                      # top logprobs, raw strings); stats.generated: its ids
    write_checkpoint(tmp_path / "ep_000200", entries, system_prompt="...")   # memory_1 ... memory_N.jsonl
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from helpers_models import build_tiny_model
from helpers_tokenizer import build_tiny_tokenizer
from mementokit.sft.chat import ChatRenderer


@dataclass
class Teacher:
    folder: Path
    model: object
    tokenizer: object


def build_teacher(tmp_path, *, seed: int = 0, sharpness: float = 4.0) -> Teacher:
    """A tiny Qwen3 over the tests' byte-level BPE tokenizer, saved (weights + tokenizer) in tmp_path/teacher.

    `sharpness` scales the output layer: a random model is nearly uniform over its vocabulary, a real one is not
    (at 4, the top 20 hold about 99 % of the mass and the top 1 about 70 %)."""
    tokenizer = build_tiny_tokenizer(tmp_path)
    model = build_tiny_model("qwen3", len(tokenizer), seed=seed, eos_token_id=tokenizer.eos_token_id)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
    folder = Path(tmp_path) / "teacher"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Teacher(folder, model, tokenizer)


def write_checkpoint(folder, entries: list[dict], *, system_prompt: str = "You are a careful calculator.",
                     snapshots: int | None = None) -> Path:
    """An episode folder: agent.json, runtime.json and memory_1 ... memory_N.jsonl, snapshot n holding the first
    n * len(entries) / N entries (so memory_N, the newest by NUMBER, holds the whole history; memory_9 is the last
    by name and holds less)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = snapshots or len(entries)
    (folder / "agent.json").write_text(json.dumps({"agent_config": {"system_prompt": system_prompt,
                                                                    "history_k": None}}), encoding="utf-8")
    (folder / "runtime.json").write_text(json.dumps({"episode": folder.name}), encoding="utf-8")
    for n in range(1, count + 1):
        upto = round(n * len(entries) / count)
        (folder / f"memory_{n}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries[:upto]),
                                                 encoding="utf-8")
    return folder


def calculator_history(samples: int) -> list[dict]:
    """Observation -> Action -> Feedback triples; every third answer is wrong (text or an object with score 0)."""
    entries = []
    for i in range(samples):
        a, b = i % 7 + 1, i % 5 + 2
        wrong = i % 3 == 1
        entries.append({"type": "Observation", "content": f"What is {a} * {b}?"})
        entries.append({"type": "Action", "content": str(a * b + (1 if wrong else 0))})
        feedback = ({"score": 0, "message": "wrong"} if i % 2 else "Incorrect") if wrong else "Correct"
        entries.append({"type": "Feedback", "content": feedback})
    return entries


@dataclass
class ServerStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    latency_s: float = 0.0
    top_limit: int | None = None  # send at most this many top logprobs, whatever was asked (a faulty server)
    raw_strings: bool = False  # token strings as raw vocabulary entries ("Ġthe", Tokasaurus) instead of decoded
    generated: list[list[int]] = field(default_factory=list)  # every completion's ids, stop token included
    generated_top: list[list[list[int]]] = field(default_factory=list)  # and its top-k ids per token
    lock: threading.Lock = field(default_factory=threading.Lock)


def _token_text(tokenizer, token_id: int, as_ids: bool, raw: bool) -> str:
    # vLLM's decoded strings are lossy: a lone byte of a multi-byte character decodes to U+FFFD.
    if as_ids:
        return f"token_id:{token_id}"
    return tokenizer.convert_ids_to_tokens(token_id) if raw else tokenizer.decode([token_id])


@torch.no_grad()
@torch.inference_mode()
def _generate(teacher: Teacher, prompt_ids: list[int], max_tokens: int, temperature: float, seed: int | None,
              top_k: int):
    """(ids, chosen logprobs, top-k ids, top-k logprobs) of one completion, the stop token included."""
    generator = torch.Generator().manual_seed(seed if seed is not None else 0)
    ids: list[int] = []
    chosen, top_ids, top_lps = [], [], []
    past = None
    inputs = torch.tensor([prompt_ids])
    for _ in range(max_tokens):
        out = teacher.model(input_ids=inputs, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # [V]
        if temperature > 0:
            token = int(torch.multinomial(torch.softmax(logprobs / temperature, -1), 1, generator=generator))
        else:
            token = int(logprobs.argmax())
        values, indices = logprobs.topk(top_k)
        ids.append(token)
        chosen.append(float(logprobs[token]))
        top_ids.append(indices.tolist())
        top_lps.append(values.tolist())
        if token == teacher.tokenizer.eos_token_id:
            break
        inputs = torch.tensor([[token]])
    return ids, chosen, top_ids, top_lps


def make_app(teacher: Teacher, stats: ServerStats, lock: threading.Lock) -> FastAPI:
    app = FastAPI()
    renderer = ChatRenderer(teacher.tokenizer)
    tokenizer = teacher.tokenizer

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        with stats.lock:
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            k = int(body.get("top_logprobs") or 0)
            if k > 20:
                return JSONResponse({"error": {"message": "top_logprobs must be <= 20", "type": "BadRequestError",
                                               "param": "top_logprobs", "code": 400}}, status_code=400)
            prompt = renderer.prompt([*body["messages"], {"role": "assistant", "content": ""}])
            prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)

            def run():
                with lock, warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # transformers' past_key_values rename notice
                    return _generate(teacher, prompt_ids, int(body.get("max_tokens") or 16),
                                     float(body.get("temperature") or 0.0), body.get("seed"), max(k, 1))

            if stats.latency_s:
                await asyncio.sleep(stats.latency_s)
            ids, chosen, top_ids, top_lps = await asyncio.to_thread(run)
            with stats.lock:
                stats.generated.append(list(ids))
                stats.generated_top.append([row[:k] for row in top_ids])
            shown = min(k, stats.top_limit) if stats.top_limit is not None else k
            as_ids = bool(body.get("return_tokens_as_token_ids"))
            text_ids = ids[:-1] if ids and ids[-1] == tokenizer.eos_token_id else ids
            choice = {"index": 0, "message": {"role": "assistant", "content": tokenizer.decode(text_ids)},
                      "finish_reason": "stop" if len(text_ids) < len(ids) else "length"}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [
                    {"token": _token_text(tokenizer, t, as_ids, stats.raw_strings), "logprob": lp,
                     "bytes": list(tokenizer.decode([t]).encode("utf-8")),
                     "top_logprobs": [{"token": _token_text(tokenizer, j, as_ids, stats.raw_strings), "logprob": v}
                                      for j, v in zip(tids[:shown], tlps[:shown])]}
                    for t, lp, tids, tlps in zip(ids, chosen, top_ids, top_lps)]}
            response = {"id": "chatcmpl-teacher", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model", "teacher"), "choices": [choice],
                        "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(ids),
                                  "total_tokens": len(prompt_ids) + len(ids)}}
            if body.get("return_token_ids"):
                choice["token_ids"] = ids
                response["prompt_token_ids"] = prompt_ids
            return response
        finally:
            with stats.lock:
                stats.in_flight -= 1

    return app


@contextlib.contextmanager
def memento_serve(teacher: Teacher, *, max_batch_size: int = 8):
    """`memento serve` (its Python API) over the teacher, block masking off, on a free loopback port."""
    from helpers_serve import running
    from mementokit.serve import Engine, Server

    torch.set_num_threads(1)
    engine = Engine(teacher.model, teacher.tokenizer, None, model_name="teacher", max_batch_size=max_batch_size)
    with running(Server(engine, teacher.tokenizer, model_name="teacher")) as url:
        yield url


@contextlib.contextmanager
def serve_teacher(teacher: Teacher, *, latency_s: float = 0.0, top_limit: int | None = None,
                  raw_strings: bool = False):
    """Serve the teacher on 127.0.0.1 (a free port) in a background thread; yields (base URL …/v1, stats)."""
    torch.set_num_threads(1)
    stats = ServerStats(latency_s=latency_s, top_limit=top_limit, raw_strings=raw_strings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(teacher, stats, threading.Lock()), log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("teacher server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1", stats
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
