"""Benchmark of block-masked generation on CPU: memory measured from the tensors, decode overhead, batch throughput.

A small Qwen3-architecture model with random weights is driven along synthetic Memento traces (block and memento
sizes in the proportions of OpenMementos: ~1,150 tokens per block, ~194 per memento, scaled by --block-tokens /
--summary-tokens). Every figure is a ratio against a baseline measured in the same run:

  1. Replay (teacher forcing, one token per step) of one long trace: peak KV bytes read from the key/value
     tensors, block masking vs vanilla; per-token time of the evicting loop vs the same loop without eviction
     (block masking disabled) and vs a plain transformers DynamicCache loop; time spent in the masking machinery
     itself (state machine + cache surgery) as a share of the loop.
  2. Batched decoding (the generator's own loop, tokens forced along the traces by a logits processor, so both
     sides decode exactly the same tokens): tokens/s with block masking vs vanilla at the same batch size, and at a
     fixed KV memory budget (vanilla's measured peak for --budget-rows rows), where block masking fits more rows.

    /work/venv/bin/python benchmarks/bench_generate.py                  # defaults: about 5 minutes on 2 CPU cores
    /work/venv/bin/python benchmarks/bench_generate.py --hidden 512 --layers 4 --blocks 10 --json

Performance goals (issue 4): decode overhead <= 5 %, same-batch throughput >= 0.95x, fixed-budget >= 1.5x.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from transformers import DynamicCache, Qwen3Config, Qwen3ForCausalLM

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, MarkerIds
from mementokit.generate import BlockMaskedGenerator, SamplingParams, replay
from mementokit.generate.cache import PhysicalKVCache
from mementokit.generate.engine import EvictingRunner
from mementokit.kv import simulate_token_ids

MASKING = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}


# Qwen3-0.6B's shape (for a GPU run): 28 layers, hidden 1024, 16 heads, 8 KV heads of 128, vocab 151,936.
SHAPES = {
    "qwen3-0.6b": dict(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072, vocab=151936)
}


def build_model(args) -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate or args.hidden * 2,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim or args.hidden // args.heads,
        max_position_embeddings=65536,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = Qwen3ForCausalLM._from_config(config, attn_implementation="sdpa", dtype=getattr(torch, args.dtype))
    return model.to(args.device).eval()


def markers_for(vocab: int) -> MarkerIds:
    # The four markers take the last ids; no assistant gate (replays start inside the response).
    return MarkerIds(block_start=vocab - 4, block_end=vocab - 3, summary_start=vocab - 2, summary_end=vocab - 1)


def synthetic_trace(
    rng: random.Random,
    markers: MarkerIds,
    vocab: int,
    *,
    blocks: int,
    block_tokens: int,
    summary_tokens: int,
    answer_tokens: int,
) -> list[int]:
    """<think>-less Memento response: blocks of ~block_tokens, each followed by a memento of ~summary_tokens."""

    def ordinary(mean: int) -> list[int]:
        n = max(1, int(rng.gauss(mean, mean * 0.25)))
        return [rng.randrange(8, vocab - 8) for _ in range(n)]

    ids: list[int] = []
    for _ in range(blocks):
        ids += [markers.block_start] + ordinary(block_tokens) + [markers.block_end]
        ids += [markers.summary_start] + ordinary(summary_tokens) + [markers.summary_end]
    return ids + ordinary(answer_tokens)


# ----- 1. replay of one long trace ----------------------------------------------------------------------------
def synchronize(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def plain_transformers_loop(model, ids: list[int]) -> float:
    """The loop without any of our machinery: DynamicCache, implicit positions. Returns seconds."""
    cache = DynamicCache()
    start = time.perf_counter()
    with torch.no_grad():
        for token in ids:
            model(
                input_ids=torch.tensor([[token]], device=model.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
    synchronize(model)
    return time.perf_counter() - start


def machinery_seconds(model, ids: list[int], config: BlockMaskingConfig, markers: MarkerIds) -> float:
    """Time of the masking machinery alone along the trace: state machine steps + physical evictions.

    Replays the trace's schedule on a cache of the real shape, without the model: what block masking adds to a step.
    """
    runner = EvictingRunner(model, config, markers)
    machine = BlockStateMachine(config, markers, start_inside_assistant=True)
    kv = PhysicalKVCache()
    layers = model.config.num_hidden_layers
    heads, dim = model.config.num_key_value_heads, model.config.head_dim
    one = torch.zeros(1, heads, 1, dim, dtype=model.dtype, device=model.device)
    elapsed = 0.0
    for position, token in enumerate(ids):
        start = time.perf_counter()
        evictions = machine.step(token)
        if evictions:
            runner.evict(kv, 0, evictions)
        elapsed += time.perf_counter() - start
        for layer in range(layers):  # what the model's forward would append (not timed)
            kv.cache.update(one, one, layer)
        kv.note_appended([[position]])
    return elapsed


def bench_replay(model, trace: list[int], markers: MarkerIds, args) -> dict:
    memento_config = BlockMaskingConfig.load(MASKING)
    vanilla_config = BlockMaskingConfig.vanilla()
    timings = {"memento": [], "vanilla": [], "plain": []}
    results = {}
    for config in (memento_config, vanilla_config):  # warm-up: the first forward passes are slow
        replay(model, trace[:256], config, markers=markers, start_inside_assistant=True)
    for _ in range(args.repeats):
        for name, config in (("memento", memento_config), ("vanilla", vanilla_config)):
            start = time.perf_counter()
            results[name] = replay(model, trace, config, markers=markers, start_inside_assistant=True)
            synchronize(model)
            timings[name].append(time.perf_counter() - start)
        if args.plain:
            timings["plain"].append(plain_transformers_loop(model, trace))
    best = {k: min(v) if v else None for k, v in timings.items()}
    machinery = machinery_seconds(model, trace, memento_config, markers)
    simulated = simulate_token_ids(trace, memento_config, markers, start_inside_assistant=True)
    memento, vanilla = results["memento"].stats, results["vanilla"].stats
    n = len(trace)
    return {
        "tokens": n,
        "blocks": len({e.block_index for e in memento.evictions}),
        "memento_peak_bytes": memento.peak_bytes,
        "vanilla_peak_bytes": vanilla.peak_bytes,
        "peak_bytes_ratio": memento.peak_bytes / vanilla.peak_bytes,
        "auc_bytes_ratio": memento.auc_bytes / vanilla.auc_bytes,
        "simulated_peak_ratio": simulated.peak_token_ratio,
        "measured_equals_simulated": memento.peak_tokens == simulated.memento.peak_tokens,
        "ms_per_token_memento": 1000 * best["memento"] / n,
        "ms_per_token_no_eviction": 1000 * best["vanilla"] / n,
        "ms_per_token_plain_transformers": None if best["plain"] is None else 1000 * best["plain"] / n,
        "time_ratio_vs_no_eviction": best["memento"] / best["vanilla"],
        "time_ratio_vs_plain_transformers": None if best["plain"] is None else best["memento"] / best["plain"],
        "machinery_share_of_loop": machinery / best["memento"],
    }


# ----- 2. batched decoding ------------------------------------------------------------------------------------
class ForceTrace:
    """Logits processor that makes row r emit its trace token by token (teacher forcing through generation)."""

    def __init__(self, prompts: list[list[int]], traces: list[list[int]]):
        self.by_head = {prompt[0]: (len(prompt), trace) for prompt, trace in zip(prompts, traces)}

    def __call__(self, ids, logits):
        prompt_length, trace = self.by_head[ids[0]]
        forced = torch.full_like(logits, float("-inf"))  # on the model's device: sampling syncs as in real use
        forced[trace[min(len(ids) - prompt_length, len(trace) - 1)]] = 0.0
        return forced


def run_batch(model, markers, config, prompts, traces, decode_tokens: int) -> dict:
    # No tokenizer: ids in, ids out (no text is decoded on either side).
    generator = BlockMaskedGenerator(model, None, config, markers=markers)
    params = SamplingParams(max_new_tokens=decode_tokens, ignore_eos=True)
    stream = generator.stream_batch(
        prompts, params, logits_processors=[ForceTrace(prompts, traces)], start_inside_assistant=True
    )
    start = time.perf_counter()
    for _ in stream:
        pass
    synchronize(model)
    seconds = time.perf_counter() - start
    generated = sum(len(r.token_ids) for r in stream.results)
    return {
        "rows": len(prompts),
        "tokens": generated,
        "seconds": seconds,
        "tokens_per_s": generated / seconds,
        "peak_batch_bytes": stream.peak_batch_bytes,
        "row_peak_tokens": max(r.stats.peak_tokens for r in stream.results),
    }


def bench_batches(model, markers: MarkerIds, args) -> dict:
    rng = random.Random(1)

    def rows(count: int):
        prompts, traces = [], []
        for r in range(count):
            # A unique first id tells the forcing processor which row it looks at; prompt lengths differ a little.
            prompts.append([8 + r] + [rng.randrange(8, args.vocab - 8) for _ in range(args.prompt_tokens + r % 5)])
            traces.append(
                synthetic_trace(
                    rng,
                    markers,
                    args.vocab,
                    blocks=args.batch_blocks,
                    block_tokens=args.batch_block_tokens,
                    summary_tokens=args.batch_summary_tokens,
                    answer_tokens=16,
                )
            )
        return prompts, traces

    memento_config, vanilla_config = BlockMaskingConfig.load(MASKING), BlockMaskingConfig.vanilla()
    prompts, traces = rows(args.batch)
    decode = min(len(t) for t in traces)
    run_batch(model, markers, memento_config, prompts[:2], traces[:2], 64)  # warm-up
    same_vanilla = run_batch(model, markers, vanilla_config, prompts, traces, decode)
    same_memento = run_batch(model, markers, memento_config, prompts, traces, decode)

    # Fixed KV budget: what vanilla needs for --budget-rows rows; block masking gets as many rows as fit.
    prompts_v, traces_v = prompts[: args.budget_rows], traces[: args.budget_rows]
    budget_vanilla = run_batch(model, markers, vanilla_config, prompts_v, traces_v, decode)
    budget = budget_vanilla["peak_batch_bytes"]
    per_row = same_memento["peak_batch_bytes"] / args.batch  # measured, padding included
    fitted = max(args.budget_rows, int(budget // per_row))
    while True:
        prompts_m, traces_m = rows(fitted)
        budget_memento = run_batch(model, markers, memento_config, prompts_m, traces_m, decode)
        if budget_memento["peak_batch_bytes"] <= budget or fitted <= args.budget_rows:
            break
        fitted -= 1  # padding made it overflow: one row fewer, measured again
    return {
        "decode_tokens_per_row": decode,
        "same_batch": {
            "vanilla": same_vanilla,
            "memento": same_memento,
            "throughput_ratio": same_memento["tokens_per_s"] / same_vanilla["tokens_per_s"],
            "peak_batch_bytes_ratio": same_memento["peak_batch_bytes"] / same_vanilla["peak_batch_bytes"],
        },
        "fixed_budget": {
            "budget_bytes": budget,
            "vanilla": budget_vanilla,
            "memento": budget_memento,
            "rows_ratio": budget_memento["rows"] / budget_vanilla["rows"],
            "throughput_ratio": budget_memento["tokens_per_s"] / budget_vanilla["tokens_per_s"],
            "memento_within_budget": budget_memento["peak_batch_bytes"] <= budget,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--blocks", type=int, default=8, help="blocks in the replayed trace")
    parser.add_argument("--block-tokens", type=int, default=850)
    parser.add_argument("--summary-tokens", type=int, default=150)
    parser.add_argument("--answer-tokens", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8, help="rows in the same-batch comparison")
    parser.add_argument("--budget-rows", type=int, default=4, help="vanilla rows that define the fixed KV budget")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--batch-blocks", type=int, default=6)
    parser.add_argument("--batch-block-tokens", type=int, default=200)
    parser.add_argument("--batch-summary-tokens", type=int, default=35)
    parser.add_argument("--repeats", type=int, default=1, help="replay timings: best of this many runs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch default; 1 avoids OpenMP spinning on shared cores)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="also time a plain transformers DynamicCache loop on the replay trace (adds ~2 min)",
    )
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-batches", action="store_true")
    parser.add_argument("--head-dim", type=int, default=0, help="0: hidden / heads")
    parser.add_argument("--intermediate", type=int, default=0, help="0: 2 x hidden")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a known model shape (overrides the size flags)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.shape:
        for name, value in SHAPES[args.shape].items():
            setattr(args, name, value)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args)
    markers = markers_for(args.vocab)
    report = {
        "model": {
            "hidden": args.hidden,
            "layers": args.layers,
            "heads": args.heads,
            "kv_heads": args.kv_heads,
            "head_dim": model.config.head_dim,
            "vocab": args.vocab,
            "dtype": args.dtype,
            "device": args.device,
            "attention": "sdpa",
        },
        "torch_threads": torch.get_num_threads(),
    }
    if not args.skip_replay:
        trace = synthetic_trace(
            random.Random(0),
            markers,
            args.vocab,
            blocks=args.blocks,
            block_tokens=args.block_tokens,
            summary_tokens=args.summary_tokens,
            answer_tokens=args.answer_tokens,
        )
        report["replay"] = bench_replay(model, trace, markers, args)
    if not args.skip_batches:
        report["batches"] = bench_batches(model, markers, args)
    if args.device.startswith("cuda"):
        report["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated()
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"model: Qwen3 architecture, hidden {args.hidden}, {args.layers} layers, {args.heads} heads "
        f"({args.kv_heads} KV x {model.config.head_dim}), {args.dtype} on {args.device}, sdpa, random weights; "
        f"torch threads {report['torch_threads']}"
    )
    if "cuda_max_memory_allocated" in report:
        print(f"peak CUDA memory allocated: {report['cuda_max_memory_allocated'] / 2**30:.2f} GiB")
    if "replay" in report:
        r = report["replay"]
        print(f"\n1. replay of one trace: {r['tokens']:,} tokens, {r['blocks']} blocks")
        print(
            f"   peak KV bytes (measured from the tensors): memento {r['memento_peak_bytes'] / 2**20:.1f} MiB, "
            f"vanilla {r['vanilla_peak_bytes'] / 2**20:.1f} MiB -> ratio {r['peak_bytes_ratio']:.3f} "
            f"(simulator: {r['simulated_peak_ratio']:.3f}, equal: {r['measured_equals_simulated']})"
        )
        print(f"   KV AUC ratio {r['auc_bytes_ratio']:.3f}")
        plain = (
            ""
            if r["ms_per_token_plain_transformers"] is None
            else f", plain transformers loop {r['ms_per_token_plain_transformers']:.3f}"
        )
        print(
            f"   ms/token: memento {r['ms_per_token_memento']:.3f}, same loop without eviction "
            f"{r['ms_per_token_no_eviction']:.3f}{plain}"
        )
        versus_plain = (
            ""
            if r["time_ratio_vs_plain_transformers"] is None
            else f", vs plain transformers {r['time_ratio_vs_plain_transformers']:.3f}"
        )
        print(
            f"   time ratio vs no eviction {r['time_ratio_vs_no_eviction']:.3f} (goal <= 1.05){versus_plain}; "
            f"masking machinery (state machine + cache surgery) = {100 * r['machinery_share_of_loop']:.2f} % "
            "of the loop"
        )
    if "batches" in report:
        b = report["batches"]
        s, f = b["same_batch"], b["fixed_budget"]
        print(f"\n2. batched decoding, {b['decode_tokens_per_row']:,} tokens per row")
        print(
            f"   same batch ({s['memento']['rows']} rows): memento {s['memento']['tokens_per_s']:.0f} tok/s, "
            f"vanilla {s['vanilla']['tokens_per_s']:.0f} tok/s -> ratio {s['throughput_ratio']:.3f} (goal >= 0.95); "
            f"peak batch KV ratio {s['peak_batch_bytes_ratio']:.3f}"
        )
        print(
            f"   fixed KV budget {f['budget_bytes'] / 2**20:.1f} MiB (vanilla, {f['vanilla']['rows']} rows): "
            f"memento fits "
            f"{f['memento']['rows']} rows (peak {f['memento']['peak_batch_bytes'] / 2**20:.1f} MiB, within budget: "
            f"{f['memento_within_budget']}); tok/s {f['memento']['tokens_per_s']:.0f} vs "
            f"{f['vanilla']['tokens_per_s']:.0f} -> ratio {f['throughput_ratio']:.3f} (goal >= 1.5)"
        )


if __name__ == "__main__":
    main()
