"""MementoScheduler: vLLM's scheduler with block masking (runs in the engine core).

Per request, mementokit's BlockStateMachine sees every token (prompt and sampled). Each Eviction it reports
names logical key positions that must leave the cache before the token at position `at` is computed. So:

- A prefill chunk never crosses an eviction point: it ends at `at`, the compaction runs, the next chunk starts
  at `at`. Every prompt token is computed under exactly the dense mask (block-semantics.md, invariant 5), and a
  prompt full of blocks never stalls.
- Before each step, every request whose next eviction is due gets ONE compaction plan: the surviving slots after
  the first evicted one move down (source and destination slot lists, executed by the worker as one indexed
  copy per layer), pages emptied at the tail go back to the pool, and the worker is told to truncate the
  request's block table and to subtract the evicted count from its positions when it maps slots. All evictions
  due at once (several in one step, or a prompt chunk's) are merged into that one plan.
- Admission and page allocation count PHYSICAL tokens: the KV cache manager sees a request whose computed and
  total lengths are minus its evicted tokens.
- Preemption frees every page and resets the physical layout; re-prefill replays the same evictions at the same
  points (the state machine has already seen those tokens), so evicted blocks never come back.

Logical lengths (positions, `max_model_len`, `max_tokens`) are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from vllm.v1.core.sched.scheduler import Scheduler

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, Eviction, MarkerIds, resolve_marker_ids
from mementokit.errors import ConfigError
from mementokit.vllm_plugin import log
from mementokit.vllm_plugin.config import check_engine, request_config, server_config

PLAN_ATTR = "memento_plan"  # attribute of SchedulerOutput read by the worker patches


@dataclass
class CompactionPlan:
    """What the worker does before the step: copy slots, truncate block tables, map physical slots."""

    src_slots: list[np.ndarray] = field(default_factory=list)
    dst_slots: list[np.ndarray] = field(default_factory=list)
    truncate: dict[str, int] = field(default_factory=dict)  # req_id -> pages kept (KV cache group 0)
    evicted: dict[str, int] = field(default_factory=dict)  # req_id -> logical - physical, every scheduled request

    def copies(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.src_slots:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return np.concatenate(self.src_slots), np.concatenate(self.dst_slots)

    def drop(self, req_id: str, slots: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.truncate.pop(req_id, None)
        if slots is not None:
            self.src_slots = [s for s in self.src_slots if s is not slots[0]]
            self.dst_slots = [d for d in self.dst_slots if d is not slots[1]]


class RequestMemento:
    """Block-masking state of one request: its state machine, its evictions, what the cache holds."""

    __slots__ = ("config", "machine", "fed", "evictions", "applied", "evicted_tokens", "spans", "compactions")

    def __init__(self, config: BlockMaskingConfig, markers: MarkerIds) -> None:
        self.config = config
        self.machine = BlockStateMachine(config, markers)
        self.fed = 0  # tokens the machine has seen
        self.evictions: list[Eviction] = []  # every eviction so far, in order of `at`
        self.applied = 0  # evictions[:applied] are out of the physical cache
        self.evicted_tokens = 0  # physically removed: logical length - physical length
        self.spans: list[tuple[int, int]] = []  # applied logical key spans (disjoint)
        self.compactions = 0

    def sync(self, token_ids, num_tokens: int) -> None:
        if num_tokens > self.fed:
            self.evictions.extend(self.machine.feed(token_ids[self.fed:num_tokens]))
            self.fed = num_tokens

    def due(self, num_computed: int) -> list[Eviction]:
        """Evictions not applied yet that must be applied before the token at `num_computed` is computed."""
        out = []
        i = self.applied
        while i < len(self.evictions) and self.evictions[i].at <= num_computed:
            out.append(self.evictions[i])
            i += 1
        return out

    def next_point(self, num_computed: int) -> int | None:
        """The first eviction point strictly after num_computed (a prefill chunk must end there)."""
        for e in self.evictions[self.applied:]:
            if e.at > num_computed:
                return e.at
        return None

    @property
    def known_evicted(self) -> int:
        """Tokens every known eviction removes (the physical size a request will have once prefilled)."""
        return self.machine.evicted_tokens

    def reset_physical(self) -> None:
        """After preemption: no page left; the same evictions replay during re-prefill."""
        self.applied = 0
        self.evicted_tokens = 0
        self.spans = []

    def physical_index(self, logical: int) -> int:
        return logical - sum(stop - start for start, stop in self.spans if stop <= logical)


class _PhysicalView:
    """A request as the KV cache manager must see it: lengths in physical tokens."""

    __slots__ = ("_request", "num_computed_tokens", "num_tokens", "num_prompt_tokens")

    def __init__(self, request, state: RequestMemento) -> None:
        self._request = request
        self.num_computed_tokens = request.num_computed_tokens - state.evicted_tokens
        self.num_tokens = request.num_tokens - state.known_evicted
        self.num_prompt_tokens = request.num_prompt_tokens

    def __getattr__(self, name):
        return getattr(self._request, name)


class MementoScheduler(Scheduler):
    """vLLM's Scheduler with Memento block masking. Selected by the plugin when additional_config holds
    'block_masking'; refuses prefix caching, speculative decoding and async scheduling."""

    def __init__(self, vllm_config, *args, **kwargs) -> None:
        super().__init__(vllm_config, *args, **kwargs)
        check_engine(vllm_config)
        config = server_config(vllm_config.additional_config)
        self.memento_config = config if config is not None else BlockMaskingConfig.vanilla()
        groups = self.kv_cache_config.kv_cache_groups
        if len(groups) != 1:
            raise ConfigError(f"block masking supports models with one KV cache group (full attention in every "
                              f"layer); this model has {len(groups)} (sliding-window or hybrid layers)")
        self.memento_manager = self.kv_cache_manager.coordinator.single_type_managers[0]
        self.memento_block_size = self.memento_manager.block_size
        self._memento: dict[str, RequestMemento] = {}
        self._markers: dict[tuple, MarkerIds] = {}
        self._tokenizer = None
        self._plan = CompactionPlan()
        self._planned: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.memento_counters = {"compactions": 0, "evicted_tokens": 0, "freed_pages": 0, "requests": 0}
        allocate = self.kv_cache_manager.allocate_slots

        def allocate_slots(request, *args, **kwargs):
            state = self._memento.get(request.request_id)
            if state is None:
                return allocate(request, *args, **kwargs)
            return allocate(_PhysicalView(request, state), *args, **kwargs)

        self.kv_cache_manager.allocate_slots = allocate_slots
        log.info("Memento block masking: %s", self.memento_config.to_dict())

    # ---- per-request state -----------------------------------------------------------------------------------
    def _markers_for(self, config: BlockMaskingConfig) -> MarkerIds:
        key = tuple(config.to_dict()[k] for k in ("block_start_token", "block_end_token", "summary_start_token",
                                                  "summary_end_token", "im_start_token", "assistant_token"))
        if key not in self._markers:
            if self._tokenizer is None:
                from mementokit.hf import load_hf_tokenizer

                model_config = self.vllm_config.model_config
                self._tokenizer = load_hf_tokenizer(model_config.tokenizer)
            self._markers[key] = resolve_marker_ids(self._tokenizer, config)
        return self._markers[key]

    def add_request(self, request) -> None:
        super().add_request(request)
        if request.request_id in self._memento:
            return
        config = request_config(self.memento_config, request.sampling_params.extra_args
                                if request.sampling_params is not None else None)
        if config.enable:
            self._memento[request.request_id] = RequestMemento(config, self._markers_for(config))
            self.memento_counters["requests"] += 1

    def memento_state(self, request_id: str) -> RequestMemento | None:
        return self._memento.get(request_id)

    def physical_tokens(self, request_id: str) -> int | None:
        """Tokens the cache holds for a request now (computed minus evicted), None when not tracked."""
        request = self.requests.get(request_id)
        state = self._memento.get(request_id)
        if request is None or state is None:
            return None
        return request.num_computed_tokens - state.evicted_tokens

    # ---- scheduling ------------------------------------------------------------------------------------------
    def schedule(self, *args, **kwargs):
        self._plan = CompactionPlan()
        self._planned = {}
        for request in self.running:
            state = self._memento.get(request.request_id)
            if state is None:
                continue
            state.sync(request.all_token_ids, request.num_tokens)
            due = state.due(request.num_computed_tokens)
            if due:
                self._compact(request, state, due)
        output = super().schedule(*args, **kwargs)
        for req_id in output.num_scheduled_tokens:
            state = self._memento.get(req_id)
            if state is not None and state.evicted_tokens:
                self._plan.evicted[req_id] = state.evicted_tokens
        setattr(output, PLAN_ATTR, self._plan)
        return output

    def _reserve_prefill_lookahead(self, request, num_computed_tokens: int, num_new_tokens: int) -> int:
        # Called for every request being scheduled (running and waiting): a chunk must stop at an eviction point.
        num_new_tokens = super()._reserve_prefill_lookahead(request, num_computed_tokens, num_new_tokens)
        state = self._memento.get(request.request_id)
        if state is not None and num_new_tokens > 1:
            state.sync(request.all_token_ids, request.num_tokens)
            point = state.next_point(num_computed_tokens)
            if point is not None and num_computed_tokens + num_new_tokens > point:
                num_new_tokens = point - num_computed_tokens
        return num_new_tokens

    def _compact(self, request, state: RequestMemento, due: list[Eviction]) -> None:
        """Plan the slot moves that drop `due` from the request's pages; free the pages this empties."""
        size = request.num_computed_tokens - state.evicted_tokens
        keep = np.ones(size, dtype=bool)
        removed = 0
        for e in due:
            start = state.physical_index(e.key_start)
            keep[start:start + e.size] = False
            removed += e.size
        survivors = np.flatnonzero(keep)
        first = int(np.argmin(keep)) if removed else size
        moved = survivors[survivors > first]
        dst = np.arange(first, first + len(moved), dtype=np.int64)
        bs = self.memento_block_size
        blocks = self.memento_manager.req_to_blocks[request.request_id]
        block_ids = np.fromiter((b.block_id for b in blocks), dtype=np.int64, count=len(blocks))
        if len(moved):
            src_slots = block_ids[moved // bs] * bs + moved % bs
            dst_slots = block_ids[dst // bs] * bs + dst % bs
            self._plan.src_slots.append(src_slots)
            self._plan.dst_slots.append(dst_slots)
            self._planned[request.request_id] = (src_slots, dst_slots)
        new_size = size - removed
        pages = -(-new_size // bs)
        freed = blocks[pages:]
        if freed:
            del blocks[pages:]
            self.kv_cache_manager.block_pool.free_blocks(reversed(freed))
        self._plan.truncate[request.request_id] = pages
        state.applied += len(due)
        state.evicted_tokens += removed
        state.spans.extend((e.key_start, e.key_stop) for e in due)
        state.compactions += 1
        counters = self.memento_counters
        counters["compactions"] += 1
        counters["evicted_tokens"] += removed
        counters["freed_pages"] += len(freed)
        if state.config.debug:
            log.info("memento %s: evicted %s, %d -> %d slots, %d pages freed", request.request_id,
                     [(e.key_start, e.key_stop) for e in due], size, new_size, len(freed))

    def _preempt_request(self, request, *args, **kwargs) -> None:
        super()._preempt_request(request, *args, **kwargs)
        state = self._memento.get(request.request_id)
        if state is not None:
            # Pages are gone; this step's copies for them must not run, and re-prefill replays every eviction.
            self._plan.drop(request.request_id, self._planned.pop(request.request_id, None))
            self._plan.evicted.pop(request.request_id, None)
            state.reset_physical()

    def _free_request(self, request, *args, **kwargs):
        self._memento.pop(request.request_id, None)
        return super()._free_request(request, *args, **kwargs)

    def make_stats(self, *args, **kwargs):
        stats = super().make_stats(*args, **kwargs)
        if stats is not None:
            from mementokit.vllm_plugin.metrics import attach_counters

            attach_counters(stats, self.memento_counters, self._memento_gauges())
        return stats

    def _memento_gauges(self) -> dict[str, int]:
        logical = physical = 0
        for request in self.running:
            state = self._memento.get(request.request_id)
            logical += request.num_computed_tokens
            physical += request.num_computed_tokens - (state.evicted_tokens if state is not None else 0)
        return {"logical_tokens": logical, "physical_tokens": physical}
