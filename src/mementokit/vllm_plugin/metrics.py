"""Memento counters in vLLM's metrics (entry point `vllm.stat_logger_plugins`).

The engine core's scheduler stats are the only channel from the scheduler to the front end's loggers; they
carry the counters under `memento:` keys of the one free-form mapping SchedulerStats has
(`num_kv_fetch_reqs_by_stage`, whose stock readers look up their own stage names only).

Exported (Prometheus, next to vLLM's own `vllm:` metrics in /metrics):
    memento:compactions_total        compactions run (one per request per step that evicts)
    memento:evicted_tokens_total     key/value slots removed from the cache
    memento:freed_pages_total        KV pages returned to the pool by compaction
    memento:physical_cache_tokens    tokens the running requests hold in the cache now
    memento:logical_cache_tokens     tokens the running requests would hold without eviction
"""

from __future__ import annotations

from vllm.v1.metrics.loggers import StatLoggerBase

PREFIX = "memento:"
COUNTERS = ("compactions", "evicted_tokens", "freed_pages")
GAUGES = ("physical_tokens", "logical_tokens")


def attach_counters(stats, counters: dict[str, int], gauges: dict[str, int]) -> None:
    carrier = stats.num_kv_fetch_reqs_by_stage
    for name in COUNTERS:
        carrier[PREFIX + name] = int(counters.get(name, 0))
    for name in GAUGES:
        carrier[PREFIX + name] = int(gauges.get(name, 0))


def read_counters(stats) -> dict[str, int] | None:
    carrier = getattr(stats, "num_kv_fetch_reqs_by_stage", None) or {}
    out = {k[len(PREFIX):]: v for k, v in carrier.items() if k.startswith(PREFIX)}
    return out or None


_PROM: dict[str, object] = {}


def _prometheus():
    if not _PROM:
        from prometheus_client import Counter, Gauge

        _PROM["compactions"] = Counter("memento:compactions", "Memento KV compactions", ["engine"])
        _PROM["evicted_tokens"] = Counter("memento:evicted_tokens", "KV slots evicted by block masking", ["engine"])
        _PROM["freed_pages"] = Counter("memento:freed_pages", "KV pages freed by compaction", ["engine"])
        _PROM["physical_tokens"] = Gauge("memento:physical_cache_tokens",
                                         "Cache tokens held by running requests", ["engine"])
        _PROM["logical_tokens"] = Gauge("memento:logical_cache_tokens",
                                        "Cache tokens running requests would hold without eviction", ["engine"])
    return _PROM


class MementoStatLogger(StatLoggerBase):
    """Exports the scheduler's memento counters to Prometheus (and keeps the last values for inspection)."""

    def __init__(self, vllm_config, engine_index: int = 0) -> None:
        self.engine_index = engine_index
        self.last: dict[int, dict[str, int]] = {}

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
        if scheduler_stats is None:
            return
        values = read_counters(scheduler_stats)
        if values is None:
            return
        # Hide our keys from the stock loggers' "KV fetch" line.
        for key in [k for k in scheduler_stats.num_kv_fetch_reqs_by_stage if k.startswith(PREFIX)]:
            del scheduler_stats.num_kv_fetch_reqs_by_stage[key]
        prom = _prometheus()
        before = self.last.get(engine_idx, {})
        engine = str(engine_idx)
        for name in COUNTERS:
            delta = values.get(name, 0) - before.get(name, 0)
            if delta > 0:
                prom[name].labels(engine=engine).inc(delta)
        for name in GAUGES:
            prom[name].labels(engine=engine).set(values.get(name, 0))
        self.last[engine_idx] = values

    def log_engine_initialized(self) -> None:
        pass
