"""A scripted LLM: a real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol.

It answers deterministically FROM THE PROMPT, the way a model would have to: it finds the numbered
boundaries / blocks / mementos in the text and answers for those numbers. A script decides how it answers
(plain or messy formatting), and can inject faults, consumed one request at a time: 429 with Retry-After,
500, slow answers, malformed answers, wrong counts, out-of-range values.

    script = Script(style="messy", latency_s=0.01)
    script.faults += [Fault("429", retry_after=0.05), Fault("malformed")]
    with running_server(script) as base_url: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ROLES = {"You rate where a chain of thought": "score", "You compress reasoning blocks": "compress", "You judge mementos": "judge"}


@dataclass
class Fault:
    kind: str  # "429" | "500" | "slow" | "malformed" | "wrong_count" | "out_of_range"
    retry_after: float | None = None
    seconds: float = 0.0
    role: str | None = None  # only for requests of this role (None: the next request of any role)


@dataclass
class Script:
    style: str = "plain"  # "plain" or "messy" (think preambles, fences, markdown, shuffled order)
    latency_s: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    pass_ratio: float = 0.2  # a memento this long (chars, relative to its block) or longer scores 9
    refine_factor: float = 3.0  # a refined memento is this many times longer than a first one
    # observations
    roles: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, role: str) -> Fault | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault.role in (None, role):
                    return self.faults.pop(i)
        return None


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _digest(*parts: Any) -> int:
    return int(hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def answer_scores(user: str, fault: Fault | None) -> dict[str, float]:
    out = {}
    for m in re.finditer(r"\[\[B(\d+)\]\]", user):
        n = int(m.group(1))
        before = user[: m.start()].rstrip()
        after = user[m.end() :].lstrip()
        if before.endswith((":", "=")):
            s = 0
        elif re.match(r"(Alternatively|Let me (check|verify)|Another (approach|way|idea))", after):
            s = 3  # a new approach or a verification phase
        elif re.match(r"(Wait|Now|Hmm|But)\b", after):
            s = 2
        else:
            s = _digest("score", n) % 2
        out[str(n)] = s
    if fault and fault.kind == "wrong_count" and len(out) > 1:
        out.pop(next(iter(out)))
    if fault and fault.kind == "out_of_range" and out:
        first = next(iter(out))
        out[first] = 7
    return out


def _blocks(user: str) -> list[tuple[int, int, str, str | None]]:
    """(number, target tokens, block text, previous memento or None) for compressor prompts."""
    out = []
    pattern = re.compile(r"=== BLOCK (\d+) \(about \d+ tokens; memento target (\d+) tokens\) ===\n(.*?)(?=\n\n=== BLOCK |\Z)", re.S)
    for m in pattern.finditer(user):
        body = m.group(3)
        previous = None
        if "--- previous memento" in body:
            body, rest = body.split("\n--- previous memento", 1)
            previous = rest
        out.append((int(m.group(1)), int(m.group(2)), body, previous))
    return out


def answer_mementos(user: str, fault: Fault | None, refine_factor: float = 3.0) -> list[tuple[int, str]]:
    out = []
    for number, target, text, previous in _blocks(user):
        flat = " ".join(text.split())
        size = int(4 * target * (refine_factor if previous is not None else 1))  # a refined one keeps more
        out.append((number, flat[:size]))
    if fault and fault.kind == "wrong_count" and len(out) > 1:
        out = out[:-1]
    return out


def answer_verdicts(user: str, pass_ratio: float) -> list[tuple[int, float, str]]:
    out = []
    pattern = re.compile(r"=== BLOCK (\d+) ===\n(.*?)\n=== MEMENTO \1 ===\n(.*?)(?=\n\n=== BLOCK |\Z)", re.S)
    for m in pattern.finditer(user):
        block, memento = m.group(2), m.group(3)
        ratio = len(memento) / max(1, len(" ".join(block.split())))
        score = float(min(9, int(9 * ratio / pass_ratio)))  # graded: 9 at pass_ratio, less when shorter
        out.append((int(m.group(1)), score, "none" if score >= 8 else "Missing formulas and values from the middle of the block."))
    return out


def render(role: str, user: str, script: Script, fault: Fault | None) -> str:
    messy = script.style == "messy"
    if fault and fault.kind == "malformed":
        return "<think>Let me think about this.</think>\nI am not sure what you want me to do here."
    if role == "score":
        scores = answer_scores(user, fault)
        if messy:
            return "<think>\nScoring each boundary.\n</think>\nHere are the scores:\n```json\n" + json.dumps({"scores": scores}, indent=1) + "\n```\nHope this helps."
        return json.dumps({"scores": scores})
    if role == "compress":
        items = answer_mementos(user, fault, script.refine_factor)
        if messy:  # markdown headers, no blank lines, reversed order
            return "<think>ok</think>" + "\n".join(f"**Memento {n}:** {text}" for n, text in reversed(items))
        return "\n\n".join(f"MEMENTO {n}:\n{text}" for n, text in items)
    if role == "judge":
        items = answer_verdicts(user, script.pass_ratio)
        if messy:
            return "\n".join(f"### Judge {n}\n**SCORE:** {s:g}/10\n**Feedback:** {fb}" for n, s, fb in reversed(items))
        return "\n\n".join(f"JUDGE {n}:\nSCORE: {s:g}/10\nFEEDBACK: {fb}" for n, s, fb in items)
    return "I can only score, compress and judge."


def make_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        user = "\n".join(m["content"] for m in messages if m.get("role") == "user")
        role = next((r for prefix, r in ROLES.items() if system.startswith(prefix)), "other")
        prompt_tokens = sum(tokens(m.get("content", "")) for m in messages)
        fault = script.take_fault(role)
        with script.lock:
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
        try:
            if script.latency_s:
                await asyncio.sleep(script.latency_s)
            if fault and fault.kind == "slow":
                await asyncio.sleep(fault.seconds)
            if fault and fault.kind in ("429", "500"):
                with script.lock:
                    script.statuses[fault.kind] += 1
                headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                status = int(fault.kind)
                return JSONResponse({"error": {"message": "scripted failure", "type": "scripted"}}, status_code=status, headers=headers)
            content = render(role, user, script, fault)
            with script.lock:
                script.roles[role] += 1
                script.prompt_tokens += prompt_tokens
                script.statuses["200"] += 1
            return {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "scripted"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens(content), "total_tokens": prompt_tokens + tokens(content)},
            }
        finally:
            with script.lock:
                script.in_flight -= 1

    return app


@contextlib.contextmanager
def running_server(script: Script):
    """Serve `script` on 127.0.0.1 (a free port) in a background thread; yields the base URL (…/v1)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(script), log_level="error", lifespan="off", timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("scripted LLM server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
