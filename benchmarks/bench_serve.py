"""Benchmark of `memento serve`: the continuous-batching engine on Memento traces, and the HTTP layer's cost.

A random-weight model never writes a memento, so the measurement has two parts; every figure is a ratio against
a baseline measured in the same run.

  1. Engine (in process): the shipped sample traces (src/mementokit/data/sample.jsonl), tokenized with a BPE
     trained on them (the four markers and ChatML tokens are single tokens), arrive as a queue of requests whose
     responses are teacher-forced (a logits processor allows only the trace's next token, so memento and vanilla
     decode exactly the same tokens). Block masking on vs off at the SAME --max-cache-tokens budget: tokens/s,
     peak physical KV (tokens and bytes), preemptions; and the same-batch overhead (no budget, every request in
     one batch).
  2. HTTP: requests/s and time to first token with short generations at 1, 8 and 32 concurrent clients, through
     `memento serve` (a subprocess, SSE streaming) vs the same engine called directly in process.

    /work/main/.venv/bin/python benchmarks/bench_serve.py                 # about 3 minutes on 2 CPU cores
    /work/main/.venv/bin/python benchmarks/bench_serve.py --traces 41 --max-response-tokens 0 --shape qwen3-0.6b \\
        --device cuda --dtype bfloat16 --max-cache-tokens 400000      # the whole sample on a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib.resources import files
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from mementokit.format.chat import chat_prompt_ids
from mementokit.generate import SamplingParams
from mementokit.jsonl import read_jsonl
from mementokit.serve import Engine, EngineRequest

MASKING = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|block_start|>",
            "<|block_end|>", "<|summary_start|>", "<|summary_end|>"]
SHAPES = {"tiny": dict(hidden=128, layers=2, heads=4, kv_heads=2, head_dim=32),
          "small": dict(hidden=256, layers=4, heads=8, kv_heads=4, head_dim=32),
          "qwen3-0.6b": dict(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128)}


# ----- model and data -----------------------------------------------------------------------------------------
def sample_rows(limit: int) -> list[dict]:
    path = files("mementokit") / "data" / "sample.jsonl"
    return [row for _, row in read_jsonl(str(path))][:limit]


def train_tokenizer(rows: list[dict], vocab: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the sample; markers and ChatML tokens are special (one token each)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([r["problem"] for r in rows] + [r["response"] for r in rows], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS], special_tokens=True)
    tokenizer.add_tokens([AddedToken("assistant", special=False, normalized=False)])
    return tokenizer


def build_model(shape: str, vocab: int, dtype: str, device: str) -> Qwen3ForCausalLM:
    s = SHAPES[shape]
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["hidden"] * 3,
                         num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"], max_position_embeddings=131072,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = Qwen3ForCausalLM._from_config(config, attn_implementation="sdpa", dtype=getattr(torch, dtype))
    return model.to(device).eval()


class Force:
    """Teacher forcing as a logits processor: only the trace's next token may be chosen."""

    def __init__(self, prompt_length: int, response: list[int]) -> None:
        self.prompt_length, self.response = prompt_length, response

    def __call__(self, ids, logits):
        forced = torch.full_like(logits, float("-inf"))
        forced[self.response[len(ids) - self.prompt_length]] = 0.0
        return forced


def traces(tokenizer, rows, max_response_tokens: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for row in rows:
        prompt = chat_prompt_ids(tokenizer, row["problem"])
        response = tokenizer.encode(row["response"], add_special_tokens=False)
        out.append((prompt, response[:max_response_tokens] if max_response_tokens else response))
    return out


# ----- part 1: the engine on traces ---------------------------------------------------------------------------
def run_engine(model, tokenizer, work, *, masking, budget, batch) -> dict:
    engine = Engine(model, tokenizer, masking, max_batch_size=batch, max_cache_tokens=budget,
                    max_waiting=len(work) + 1)
    requests = [EngineRequest(p, SamplingParams(max_new_tokens=len(r), ignore_eos=True), processors=(Force(len(p), r),))
                for p, r in work]
    start = time.perf_counter()
    for request in requests:
        engine.submit(request)
    engine.run_until_idle()
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    generated = sum(len(r.sequences[0].generated) for r in requests)
    assert all(r.sequences[0].generated == w[1] for r, w in zip(requests, work)), "teacher forcing went astray"
    bytes_per_token = engine.batch.kv.bytes_per_token()
    return {"seconds": seconds, "tokens": generated, "tokens_per_s": generated / seconds,
            "peak_physical_tokens": engine.peak_physical_tokens,
            "peak_physical_bytes": engine.peak_physical_tokens * bytes_per_token,
            "peak_window_bytes": engine.batch.peak_bytes,
            "preemptions": int(engine.metrics.preemptions._value.get()),
            "evicted_tokens": int(engine.metrics.evicted_tokens._value.get()), "steps": engine.batch.steps}


def part_engine(args, model, tokenizer, work) -> dict:
    logical = [len(p) + len(r) for p, r in work]
    budget = args.max_cache_tokens or max(max(logical) + 1, sum(logical) // 4)
    out = {"requests": len(work), "response_tokens": sum(len(r) for _, r in work), "max_cache_tokens": budget,
           "longest_request": max(logical)}
    run_engine(model, tokenizer, work[:2], masking=MASKING, budget=None, batch=2)  # warm-up
    for name, masking in (("memento", MASKING), ("vanilla", {"enable": False})):
        out[f"budget_{name}"] = run_engine(model, tokenizer, work, masking=masking, budget=budget,
                                           batch=args.max_batch_size)
        out[f"same_batch_{name}"] = run_engine(model, tokenizer, work, masking=masking, budget=None,
                                               batch=len(work))
    out["budget_speedup"] = out["budget_memento"]["tokens_per_s"] / out["budget_vanilla"]["tokens_per_s"]
    out["same_batch_ratio"] = out["same_batch_memento"]["tokens_per_s"] / out["same_batch_vanilla"]["tokens_per_s"]
    out["peak_kv_ratio_same_batch"] = (out["same_batch_memento"]["peak_physical_bytes"]
                                       / out["same_batch_vanilla"]["peak_physical_bytes"])
    return out


# ----- part 2: HTTP vs direct ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "mementokit", "serve", "--model", str(folder), "--port",
                                str(port), "--log-level", "warning", "--dtype", "float32", "--device", "cpu",
                                "--max-batch-size", "32", "--max-waiting", "1024"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"memento serve exited: {process.stderr.read().decode()[-2000:]}")
    raise RuntimeError("memento serve did not start")


async def http_level(port: int, clients: int, requests_each: int, max_tokens: int) -> dict:
    import httpx

    ttfts = []

    async def client(http, k):
        for i in range(requests_each):
            body = {"prompt": f"Client {k} request {i}: the answer is", "max_tokens": max_tokens, "temperature": 0,
                    "ignore_eos": True, "stream": True}
            start = time.perf_counter()
            first = None
            async with http.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if first is None and line.startswith("data: {"):
                        first = time.perf_counter() - start
            ttfts.append(first)

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients + 4)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http, k) for k in range(clients)))
        seconds = time.perf_counter() - start
    return {"requests_per_s": clients * requests_each / seconds,
            "ttft_ms_median": 1000 * sorted(ttfts)[len(ttfts) // 2]}


def direct_level(engine: Engine, tokenizer, clients: int, requests_each: int, max_tokens: int) -> dict:
    ttfts = []
    lock = threading.Lock()

    def client(k):
        for i in range(requests_each):
            done, first = threading.Event(), []
            start = time.perf_counter()

            def sink(event, first=first, start=start, done=done):
                if event.kind == "token" and not first:
                    first.append(time.perf_counter() - start)
                elif event.kind == "finish":
                    done.set()

            ids = tokenizer.encode(f"Client {k} request {i}: the answer is", add_special_tokens=False)
            engine.submit(EngineRequest(ids, SamplingParams(max_new_tokens=max_tokens, ignore_eos=True), sink=sink))
            done.wait()
            with lock:
                ttfts.append(first[0])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return {"requests_per_s": clients * requests_each / seconds,
            "ttft_ms_median": 1000 * sorted(ttfts)[len(ttfts) // 2]}


def part_http(args, tokenizer) -> dict:
    model = build_model("tiny", len(tokenizer), "float32", "cpu")
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        port = free_port()
        server = start_server(Path(folder), port)
        try:
            engine = Engine(model, tokenizer, MASKING, max_batch_size=32, max_waiting=1024)
            engine.start()
            for clients in args.clients:
                each = max(2, args.http_requests // clients)
                asyncio.run(http_level(port, clients, 1, args.http_tokens))  # warm-up
                direct_level(engine, tokenizer, clients, 1, args.http_tokens)
                http = asyncio.run(http_level(port, clients, each, args.http_tokens))
                direct = direct_level(engine, tokenizer, clients, each, args.http_tokens)
                out[str(clients)] = {"http": http, "direct": direct,
                                     "throughput_ratio": http["requests_per_s"] / direct["requests_per_s"],
                                     "ttft_overhead_ms": http["ttft_ms_median"] - direct["ttft_ms_median"]}
            engine.stop()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=16, help="sample traces to serve (41 in the sample)")
    parser.add_argument("--max-response-tokens", type=int, default=3072, help="truncate responses (0: whole)")
    parser.add_argument("--max-cache-tokens", type=int, default=0, help="budget (default: a quarter of the logical "
                                                                        "total, at least the longest request)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--http-requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--http-tokens", type=int, default=8, help="tokens per HTTP request")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows = sample_rows(args.traces)
    tokenizer = train_tokenizer(sample_rows(1000), args.vocab)
    work = traces(tokenizer, rows, args.max_response_tokens)
    model = build_model(args.shape, len(tokenizer), args.dtype, args.device)
    with torch.no_grad():
        results = {"engine": part_engine(args, model, tokenizer, work)}
    if not args.skip_http:
        results["http"] = part_http(args, tokenizer)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    e = results["engine"]
    print(f"engine: {e['requests']} sample traces, {e['response_tokens']:,} teacher-forced tokens, "
          f"--max-cache-tokens {e['max_cache_tokens']:,} (longest request {e['longest_request']:,} logical)")
    for name in ("memento", "vanilla"):
        b, s = e[f"budget_{name}"], e[f"same_batch_{name}"]
        print(f"  {name:8s} budget: {b['tokens_per_s']:8.0f} tok/s  peak {b['peak_physical_tokens']:7,} physical "
              f"tokens ({b['peak_physical_bytes'] / 2**20:6.1f} MiB)  preemptions {b['preemptions']:3d}  |  "
              f"same batch: {s['tokens_per_s']:8.0f} tok/s  peak {s['peak_physical_tokens']:7,} tokens")
    print(f"  memento / vanilla at the same budget: {e['budget_speedup']:.2f}x tokens/s; same batch: "
          f"{e['same_batch_ratio']:.2f}x tokens/s, {e['peak_kv_ratio_same_batch']:.2f}x peak KV")
    for clients, level in results.get("http", {}).items():
        h, d = level["http"], level["direct"]
        print(f"http {clients:>2} clients: {h['requests_per_s']:6.1f} req/s (direct {d['requests_per_s']:6.1f}, "
              f"{level['throughput_ratio']:.2f}x); TTFT median {h['ttft_ms_median']:6.1f} ms (direct "
              f"{d['ttft_ms_median']:6.1f} ms, +{level['ttft_overhead_ms']:.1f} ms)")


if __name__ == "__main__":
    main()
