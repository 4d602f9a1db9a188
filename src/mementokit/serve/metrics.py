"""Prometheus metrics: vLLM's names where they exist (dashboards carry over), memento's own beside them.

Each engine owns its registry (so several servers, e.g. in tests, never share counters); /metrics renders it.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# As vLLM does: no `_created` series beside every counter and histogram.
prometheus_client.disable_created_metrics()

# vLLM's buckets for request-level latencies (seconds)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                 40.0, 80.0, 160.0, 640.0, 2560.0)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
                960.0, 1920.0, 7680.0)


class EngineMetrics:
    """Every metric the engine reports, labelled with model_name and engine ("0") as vLLM labels them."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["model_name", "engine"]
        values = (model_name, "0")
        r = self.registry

        def gauge(name, doc):
            return Gauge(name, doc, labels, registry=r).labels(*values)

        def counter(name, doc):
            return Counter(name, doc, labels, registry=r).labels(*values)

        def histogram(name, doc, buckets):
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(*values)

        # vLLM's names
        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc",
                              "KV-cache usage: physical cache tokens / --max-cache-tokens (1 = full).")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemptions from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self._success = Counter("vllm:request_success", "Count of successfully processed requests.",
                                labels + ["finished_reason"], registry=r)
        self._values = values
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              _TTFT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             _ITL_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", _E2E_BUCKETS)
        self.queue_time = histogram("vllm:request_queue_time_seconds",
                                    "Histogram of time spent in WAITING phase for request.", _E2E_BUCKETS)
        # memento's own
        self.compactions = counter("memento:compactions",
                                   "Physical evictions applied (a completed block's keys leaving the cache).")
        self.evicted_tokens = counter("memento:evicted_tokens", "Key/value slots removed from the cache by eviction.")
        self.completed_blocks = counter("memento:completed_blocks", "Blocks whose memento ended (SE seen).")
        self.physical_tokens = gauge("memento:physical_cache_tokens",
                                     "Cache slots the running batch holds now (after eviction).")
        self.logical_tokens = gauge("memento:logical_cache_tokens",
                                    "Tokens the running batch has processed (what a cache without eviction holds).")
        self.rejected = counter("memento:requests_rejected", "Requests refused with 429 because the queue was full.")

    def success(self, finished_reason: str) -> None:
        self._success.labels(*self._values, finished_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
