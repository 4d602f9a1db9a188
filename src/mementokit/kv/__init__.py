"""KV-cache simulation: replay traces through the block state machine and measure cache memory.

    simulator = KVSimulator(tokenizer, config=BlockMaskingConfig.load(...), memory=preset("qwen3-8b"))
    results = list(simulator.simulate_traces(traces))
    summary = aggregate(results)
"""

from mementokit.kv.model_memory import GIB, PRESETS, KVMemoryModel, kv_memory_from_config, preset
from mementokit.kv.plots import plot_kv_curve, plot_kv_distributions
from mementokit.kv.simulator import (
    KVCurves,
    KVSimulator,
    KVStats,
    TraceKV,
    aggregate,
    bytes_after_each_position,
    occupancy_after_each_position,
    simulate_token_ids,
    window_occupancy_after_each_position,
)

__all__ = [
    "GIB",
    "PRESETS",
    "KVCurves",
    "KVMemoryModel",
    "KVSimulator",
    "KVStats",
    "TraceKV",
    "aggregate",
    "bytes_after_each_position",
    "kv_memory_from_config",
    "occupancy_after_each_position",
    "plot_kv_curve",
    "plot_kv_distributions",
    "preset",
    "simulate_token_ids",
    "window_occupancy_after_each_position",
]
