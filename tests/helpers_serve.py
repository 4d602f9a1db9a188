"""`memento serve` in tests: a real uvicorn server on 127.0.0.1 over a tiny random model (no hub).

    server = tiny_server(tmp_path, block_masking=MASKING, max_cache_tokens=4096)
    with running(server) as base_url:            # http://127.0.0.1:PORT/v1
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)

Reusable by any test that needs an OpenAI-compatible teacher with exact logprobs and token ids.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import torch
import uvicorn

from helpers_models import build_tiny_model
from helpers_tokenizer import build_tiny_tokenizer
from mementokit.serve import Engine, Server

MASKING = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}


def tiny_server(tmp_path, *, block_masking=None, model_name: str = "tiny", arch: str = "qwen3",
                **engine_options) -> Server:
    """A Server over a fresh tiny model and tokenizer (the tokenizer holds the block markers)."""
    torch.set_num_threads(1)
    tokenizer = build_tiny_tokenizer(tmp_path)
    model = build_tiny_model(arch, len(tokenizer))
    engine = Engine(model, tokenizer, MASKING if block_masking is None else block_masking, model_name=model_name,
                    **engine_options)
    return Server(engine, tokenizer, model_name=model_name)


@contextlib.contextmanager
def running(server: Server):
    """Serve on a free loopback port in a background thread; yields the base URL ending in /v1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(server.app, log_level="warning", timeout_keep_alive=30))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("memento serve test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


def metric(text: str, name: str) -> float:
    """The value of one (unlabelled or single-labelled) sample in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)
