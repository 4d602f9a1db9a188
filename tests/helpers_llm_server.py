"""A scripted LLM: a real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol.

It answers deterministically FROM THE PROMPT, the way a model would have to: it finds the numbered
boundaries / blocks / mementos in the text and answers for those numbers. A script decides how it answers
(plain or messy formatting), and can inject the faults real providers show, consumed one request at a time:

    transport: 429 (with Retry-After), 500, 503, 401, 404, "slow" (a hang past the client's timeout),
               "truncated" (a 200 whose JSON body is cut short), "empty_choices" (a 200 with `choices: []`),
               "drop" (the connection closes in the middle of the body)
    content:   "malformed" (prose instead of the format), "wrong_count", "out_of_range"

`fault_rate` adds random transport faults (seeded) to any request. The server keeps its own books: `requests`
(every request received), and billed tokens: `prompt_tokens` / `completion_tokens` for every reply whose body
carried a usage block to the client (the truncated and dropped replies never reach it whole, so they bill nothing).

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
import random
import re
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

ROLES = {
    "You rate where a chain of thought": "score",
    "You compress reasoning blocks": "compress",
    "You judge mementos": "judge",
}


@dataclass
class Fault:
    kind: str  # see the module docstring
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
    fault_rate: float = 0.0  # probability of a random transport fault on any request
    random_faults: tuple[str, ...] = ("429", "500", "503", "truncated", "empty_choices", "slow", "drop")
    slow_s: float = 1.0  # how long a random "slow" fault hangs
    seed: int = 0
    # observations (the server's own books)
    roles: Counter = field(default_factory=Counter)
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: Counter = field(default_factory=Counter)
    users: list = field(default_factory=list)  # the user message of every request, in arrival order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def take_fault(self, role: str) -> Fault | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault.role in (None, role):
                    return self.faults.pop(i)
            if self.fault_rate and self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.random_faults)
                return Fault(kind, retry_after=0.01 if kind == "429" else None, seconds=self.slow_s)
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
    pattern = re.compile(
        r"=== BLOCK (\d+) \(about \d+ tokens; memento target (\d+) tokens\) ===\n(.*?)(?=\n\n=== BLOCK |\Z)", re.S
    )
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
        out.append(
            (
                int(m.group(1)),
                score,
                "none" if score >= 8 else "Missing formulas and values from the middle of the block.",
            )
        )
    return out


def render(role: str, user: str, script: Script, fault: Fault | None) -> str:
    messy = script.style == "messy"
    if fault and fault.kind == "malformed":
        return "<think>Let me think about this.</think>\nI am not sure what you want me to do here."
    if role == "score":
        scores = answer_scores(user, fault)
        if messy:
            return (
                "<think>\nScoring each boundary.\n</think>\nHere are the scores:\n```json\n"
                + json.dumps({"scores": scores}, indent=1)
                + "\n```\nHope this helps."
            )
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


def _completion(body: dict[str, Any], content: str, prompt_tokens: int, choices: bool = True) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
        if choices
        else [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens(content),
            "total_tokens": prompt_tokens + tokens(content),
        },
    }


def _transport_fault(fault: Fault, script: Script, body: dict[str, Any], prompt_tokens: int) -> Any:
    """The reply of a transport fault, or None when the fault is about content."""
    kind = fault.kind
    if kind in ("429", "500", "503", "401", "404"):
        headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        message = {"401": "Incorrect API key provided", "404": "The model does not exist"}.get(kind, "scripted failure")
        return JSONResponse({"error": {"message": message, "type": "scripted"}}, status_code=int(kind), headers=headers)
    if kind == "truncated":
        text = json.dumps(_completion(body, "cut short", prompt_tokens))
        return Response(text[: len(text) // 2], media_type="application/json")
    if kind == "empty_choices":
        with script.lock:
            script.prompt_tokens += prompt_tokens  # a whole body with a usage block: billed
        return _completion(body, "", prompt_tokens, choices=False)
    if kind == "drop":
        data = json.dumps(_completion(body, "dropped", prompt_tokens)).encode()

        async def half():
            yield data[: len(data) // 2]
            raise ConnectionResetError("scripted: connection dropped mid-body")

        return StreamingResponse(half(), media_type="application/json", headers={"content-length": str(len(data))})
    return None


def make_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        with script.lock:
            script.requests += 1  # counted on arrival, before anything can fail
        body = await request.json()
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        user = "\n".join(m["content"] for m in messages if m.get("role") == "user")
        role = next((r for prefix, r in ROLES.items() if system.startswith(prefix)), "other")
        prompt_tokens = sum(tokens(m.get("content", "")) for m in messages)
        fault = script.take_fault(role)
        with script.lock:
            script.users.append(user)
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
        try:
            if script.latency_s:
                await asyncio.sleep(script.latency_s)
            if fault and fault.kind == "slow":
                await asyncio.sleep(fault.seconds)
                if await request.is_disconnected():  # the client gave up: nothing delivered, nothing billed
                    with script.lock:
                        script.statuses["slow"] += 1
                    return Response(status_code=499)
            if fault:
                with script.lock:
                    script.statuses[fault.kind] += 1
                reply = _transport_fault(fault, script, body, prompt_tokens)
                if reply is not None:
                    return reply
            content = render(role, user, script, fault)
            if await request.is_disconnected():  # the client gave up (its timeout): nothing delivered or billed
                return Response(status_code=499)
            with script.lock:
                script.roles[role] += 1
                script.prompt_tokens += prompt_tokens
                script.completion_tokens += tokens(content)
                script.statuses["200"] += 1
            return _completion(body, content, prompt_tokens)
        finally:
            with script.lock:
                script.in_flight -= 1

    return app


FIXTURE = __import__("pathlib").Path(__file__).parent / "data" / "raw_cot_openthoughts3.jsonl"


def trace_variants(count: int, low: float = 0.1, high: float = 0.3, prefix: str = "t") -> list[dict[str, Any]]:
    """Distinct, short traces cut from the fixture at paragraph ends between `low` and `high` of its length."""
    row = json.loads(FIXTURE.read_text().splitlines()[0])
    cot = row["cot"]
    body = cot[len("<think>") : cot.index("</think>")]
    cuts = [i for i in range(len(body)) if body.startswith("\n\n", i)]
    out = []
    for k in range(count):
        frac = low + (high - low) * k / max(1, count - 1)
        end = cuts[min(len(cuts) - 1, int(len(cuts) * frac))]
        out.append({**row, "task_id": f"{prefix}{k:02d}", "cot": "<think>" + body[:end] + "\n</think>\nDone."})
    return out


@contextlib.contextmanager
def serve_app(app: Any, lifespan: str = "off"):
    """Serve any ASGI app on 127.0.0.1 (a free port) in a background thread; yields "http://127.0.0.1:PORT".

    One way to run a real local HTTP server in tests (the scripted LLM below; other test servers can use it too).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", lifespan=lifespan, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("local test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@contextlib.contextmanager
def running_server(script: Script):
    """Serve `script` on 127.0.0.1 (a free port) in a background thread; yields the base URL (.../v1)."""
    with serve_app(make_app(script)) as root:
        yield f"{root}/v1"


def write_input(path, rows) -> Any:
    """Rows as a JSONL input file; returns its path."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pipeline_run_command(source, out, url: str, *options: str) -> list[str]:
    """`memento pipeline run SOURCE --out OUT` against the local server, as a subprocess argument list."""
    return [
        sys.executable,
        "-m",
        "mementokit.cli",
        "pipeline",
        "run",
        str(source),
        "--out",
        str(out),
        "--model",
        "m",
        "--base-url",
        url,
        "--api-key",
        "x",
        *options,
    ]


def ledger_lines(path) -> int:
    """Whole lines in a ledger file (0 when it does not exist yet)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0
