"""Speed of the block state machine and the KV simulator (prints figures; not a test).

    /work/venv/bin/python benchmarks/bench_blocks.py [--traces 200] [--repeat 3]

Goals (issue 3): the simulator replays >= 5 million tokens/s on one core; the incremental step() costs < 1 us per
token. Baselines are measured in the same run: the simulator against replaying every token through step()
(what a naive simulator would do), and step() against an empty Python method call (the interpreter's floor).
Synthetic traces have the OpenMementos shape: ~9 blocks of ~1,150 tokens, mementos of ~194 tokens.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, MarkerIds  # noqa: E402
from mementokit.kv import KVMemoryModel, occupancy_after_each_position, preset, simulate_token_ids  # noqa: E402

MARKERS = MarkerIds(block_start=151669, block_end=151670, summary_start=151671, summary_end=151672,
                    think_end=151668, im_start=151644, assistant=77091)
CONFIG = BlockMaskingConfig(enable=True, keep_last_n_blocks=0, mask_delimiters=False)


def synthetic_trace(rng: np.random.Generator) -> np.ndarray:
    parts = [rng.integers(100, 150_000, size=2)]
    for _ in range(max(1, int(rng.poisson(9)))):
        block = int(rng.gamma(4.0, 1150 / 4.0)) + 1
        summary = int(rng.gamma(4.0, 194 / 4.0)) + 1
        parts += [[MARKERS.block_start], rng.integers(100, 150_000, size=block), [MARKERS.block_end, 198],
                  [MARKERS.summary_start], rng.integers(100, 150_000, size=summary), [MARKERS.summary_end, 198]]
    parts += [[MARKERS.think_end], rng.integers(100, 150_000, size=int(rng.integers(50, 800)))]
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def best_of(repeat: int, function) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def step_replay(trace: np.ndarray) -> np.ndarray:
    """The naive simulator: every token through step(), cache length read after each."""
    machine = BlockStateMachine(CONFIG, MARKERS, start_inside_assistant=True)
    occupancy = np.empty(len(trace), dtype=np.int64)
    step = machine.step
    for i, token in enumerate(trace.tolist()):
        step(token)
        occupancy[i] = machine.cache_tokens
    return occupancy


class _Empty:
    def step(self, token_id):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    traces = [synthetic_trace(rng) for _ in range(args.traces)]
    total = int(sum(len(t) for t in traces))
    print(f"{args.traces} synthetic traces, {total:,} tokens (mean {total / args.traces:,.0f} per trace)")

    # Agreement first: the fast path must give the step-by-step machine's occupancy exactly.
    for trace in traces[:20]:
        fast = simulate_token_ids(trace, CONFIG, MARKERS, start_inside_assistant=True, keep_curves=True)
        assert np.array_equal(fast.curves.memento_tokens, step_replay(trace)), "fast path disagrees with step()"

    qwen = preset("qwen3-8b")
    olmo = KVMemoryModel("olmo3-like", 32, full_bytes_per_token=8 * 16384, sliding=((4096, 24 * 16384),))
    results = {}
    for label, memory in (("tokens only", None), ("qwen3-8b bytes", qwen), ("olmo-3 sliding windows", olmo)):
        seconds = best_of(args.repeat, lambda m=memory: [simulate_token_ids(t, CONFIG, MARKERS, m,
                                                                              start_inside_assistant=True)
                                                           for t in traces])
        results[label] = total / seconds
    subset = traces[: max(1, args.traces // 10)]
    subset_tokens = int(sum(len(t) for t in subset))
    baseline = subset_tokens / best_of(args.repeat, lambda: [step_replay(t) for t in subset])
    print("\nKV simulator replay (tokenized traces, one core; goal >= 5,000,000 tokens/s)")
    for label, rate in results.items():
        print(f"  {label:<24} {rate / 1e6:8.1f} M tokens/s   {rate / baseline:6.1f}x the step-by-step replay")
    print(f"  {'baseline: step() replay':<24} {baseline / 1e6:8.2f} M tokens/s")

    # Incremental step(): what a generator pays per produced token.
    long_trace = np.concatenate(traces[:20]).tolist()
    n = len(long_trace)

    def run_steps():
        machine = BlockStateMachine(CONFIG, MARKERS, start_inside_assistant=True)
        step = machine.step
        for token in long_trace:
            step(token)

    def run_ordinary():
        machine = BlockStateMachine(CONFIG, MARKERS, start_inside_assistant=True)
        step = machine.step
        for _ in range(n):
            step(12345)

    def run_gated():
        machine = BlockStateMachine(CONFIG, MARKERS)  # gate closed the whole time: watches im_start/assistant
        step = machine.step
        for token in long_trace:
            step(token)

    def run_empty():
        step = _Empty().step
        for token in long_trace:
            step(token)

    per_token = {
        "step() on traces": best_of(args.repeat, run_steps) / n,
        "step() ordinary token": best_of(args.repeat, run_ordinary) / n,
        "step() before the gate": best_of(args.repeat, run_gated) / n,
    }
    floor = best_of(args.repeat, run_empty) / n
    print(f"\nIncremental state machine ({n:,} tokens; goal < 1 us per token)")
    for label, seconds in per_token.items():
        print(f"  {label:<24} {seconds * 1e9:8.0f} ns/token   {seconds / floor:5.1f}x an empty method call")
    print(f"  {'baseline: empty call':<24} {floor * 1e9:8.0f} ns/token")

    occupancy = occupancy_after_each_position([], 10)  # keep the import honest
    assert occupancy[-1] == 10


if __name__ == "__main__":
    main()
