"""The embedded engine: one loop owns the model and the evicting cache; requests reach it through a queue.

    engine = Engine(model, tokenizer, block_masking, max_batch_size=32, max_cache_tokens=65536)
    engine.start()                                   # the loop runs in its own thread
    request = EngineRequest(prompt_ids, SamplingParams(max_new_tokens=64), sink=events.append)
    engine.submit(request)                           # QueueFull when the waiting queue is full (HTTP 429)

Every step (generate.batch.DecodeBatch does the work, one method per phase):
  1. cancelled requests leave (a client that disconnects frees its rows at once);
  2. admission: waiting sequences join while the batch has a free row and the PHYSICAL cache budget allows, each
     counted by the slots it will hold after its prompt's evictions (not its logical length);
  3. every row chooses its next token (events go to the request's sink), evictions are applied, finished rows
     leave;
  4. if the batch would outgrow --max-cache-tokens, the newest rows are preempted: they leave the batch and
     wait at the front of the queue; when readmitted they are prefilled again with the dense mask, which gives
     exactly the cache they had (block-semantics.md, invariant 5), so preemption never changes an output;
  5. one batched forward pass.
The HTTP layer (app.py) turns the events into OpenAI responses; benchmarks drive `step()` directly.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mementokit.blocks import BlockMaskingConfig, MarkerIds, resolve_marker_ids
from mementokit.errors import ConfigError, MementoError
from mementokit.generate.batch import DecodeBatch, DecodeSequence, TokenLogprob, TokenStep, logprob_rows
from mementokit.generate.engine import EvictingRunner, check_markers, load_block_masking
from mementokit.generate.sampling import SamplingParams
from mementokit.serve.metrics import EngineMetrics

log = logging.getLogger("mementokit.serve")


class QueueFull(MementoError):
    """The waiting queue is full: the server answers 429."""


@dataclass
class EngineEvent:
    """What the engine reports to a request's sink.

    kind: "prompt_logprobs" (payload: list, one entry per prompt position), "token" (index, step),
    "finish" (index, sequence), "error" (payload: message).
    """

    kind: str
    index: int = 0
    step: TokenStep | None = None
    sequence: DecodeSequence | None = None
    payload: object = None


@dataclass
class EngineRequest:
    """One API request: a prompt and n sequences to generate from it."""

    prompt_ids: list[int]
    params: SamplingParams
    n: int = 1
    logprobs: int | None = None  # chosen-token logprob plus this many alternatives per generated token
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = False
    block_masking: BlockMaskingConfig | None = None  # per-request override (already merged over the server's)
    processors: tuple = ()
    sink: Callable[[EngineEvent], None] | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    arrival: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    # set by the engine
    sequences: list[DecodeSequence] = field(default_factory=list)
    admitted_at: float | None = None
    finished: int = 0

    def cancel(self) -> None:
        """Ask the engine to drop this request (it does so at the start of its next step)."""
        self.cancelled = True

    def emit(self, event: EngineEvent) -> None:
        if self.sink is not None:
            self.sink(event)


@dataclass
class _Timing:
    first: float | None = None
    last: float | None = None
    order: int = 0  # admission order: the newest rows are preempted first


class Engine:
    """Continuous batching with block masking over one model (see the module doc)."""

    def __init__(self, model, tokenizer, block_masking=None, *, max_batch_size: int = 32,
                 max_cache_tokens: int | None = None, max_model_len: int | None = None, max_waiting: int = 256,
                 max_logprobs: int = 20, prefill_chunk_size: int = 4096, model_name: str = "model",
                 metrics: EngineMetrics | None = None) -> None:
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_cache_tokens is not None and max_cache_tokens < 2:
            raise ConfigError(f"max_cache_tokens must be >= 2, got {max_cache_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.config = load_block_masking(block_masking)
        self.markers = self._markers(self.config)
        self.runner = EvictingRunner(model, self.config, self.markers if self.config.enable else None)
        self.max_batch_size = max_batch_size
        self.max_cache_tokens = max_cache_tokens
        config_len = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None)
        self.max_model_len = max_model_len or config_len or 4096
        self.max_waiting = max_waiting
        self.max_logprobs = max_logprobs
        self.vocab_size = model.get_input_embeddings().weight.shape[0]
        self.eos_ids = self._eos_ids()
        self.batch = DecodeBatch(self.runner, eos_ids=self.eos_ids, prefill_chunk_size=prefill_chunk_size,
                                 rows=max_batch_size)
        self.metrics = metrics or EngineMetrics(model_name)
        self.waiting: deque[DecodeSequence] = deque()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._queued = 0  # requests submitted and not yet admitted (the bound for 429)
        self._lock = threading.Lock()
        self._timing: dict[int, _Timing] = {}
        self._order = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.peak_physical_tokens = 0

    # ----- setup -----
    def _markers(self, config: BlockMaskingConfig) -> MarkerIds | None:
        """Marker ids when the tokenizer holds them (so a request may enable masking even if the server does not)."""
        if config.enable:
            return check_markers(self.model, self.tokenizer, config)
        try:
            return check_markers(self.model, self.tokenizer, BlockMaskingConfig(**{**config.to_dict(), "enable": True}))
        except (ConfigError, AttributeError, TypeError):
            return None

    def markers_for(self, config: BlockMaskingConfig) -> MarkerIds | None:
        """Marker ids for a per-request config (its marker strings may differ from the server's)."""
        if not config.enable:
            return None
        same = all(getattr(config, k) == getattr(self.config, k) for k in config.to_dict() if k.endswith("_token"))
        if same and self.markers is not None:
            return self.markers
        markers = resolve_marker_ids(self.tokenizer, config)
        check_markers(self.model, self.tokenizer, config)
        return markers

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(self.tokenizer, "eos_token_id", None),
                       getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            if source is not None:
                ids.update([source] if isinstance(source, int) else source)
        return frozenset(int(i) for i in ids)

    # ----- the request side (any thread) -----
    def submit(self, request: EngineRequest) -> EngineRequest:
        """Queue a request; QueueFull when max_waiting requests already wait."""
        with self._lock:
            if self._queued >= self.max_waiting:
                self.metrics.rejected.inc()
                raise QueueFull(f"the server's queue is full ({self.max_waiting} requests waiting); retry later")
            self._queued += 1
        request.sequences = [
            DecodeSequence(list(request.prompt_ids), request.params, index=i, processors=request.processors,
                           logprobs=request.logprobs, skip_special_tokens=request.skip_special_tokens,
                           tokenizer=self.tokenizer, tag=request, block_masking=request.block_masking,
                           markers=self.markers_for(request.block_masking) if request.block_masking else None)
            for i in range(request.n)]
        self._inbox.put(request)
        return request

    def physical_need(self, prompt_ids: list[int], block_masking: BlockMaskingConfig | None = None) -> int:
        """Cache slots a prompt holds after its own evictions (what admission counts)."""
        probe = DecodeSequence(list(prompt_ids), SamplingParams(), block_masking=block_masking,
                               markers=self.markers_for(block_masking) if block_masking else None)
        return self.batch.physical_need(probe.ids, probe)

    # ----- the loop -----
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="memento-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            idle = not self.batch.sequences and not self.waiting
            try:
                self._take_inbox(block=idle)
                self.step()
            except Exception as exc:  # noqa: BLE001 - the loop must survive; every running request learns why
                log.exception("engine step failed")
                self._fail_all(f"internal engine error: {type(exc).__name__}: {exc}")

    def run_until_idle(self) -> None:
        """Step until every submitted request is finished (in the calling thread: benchmarks, tests)."""
        while True:
            self._take_inbox(block=False)
            if not self.batch.sequences and not self.waiting:
                return
            self.step()

    def _take_inbox(self, *, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=0.05) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is not None:
                self.waiting.extend(item.sequences)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def step(self) -> None:
        """One engine step (see the module doc)."""
        before = (self.batch.evictions_applied, self.batch.slots_evicted)
        self._drop_cancelled()
        self._admit()
        if self.batch.sequences:
            for step in self.batch.choose():
                self._emit_token(step)
            self.batch.evict()
            for sequence in self.batch.release_finished():
                self._finish(sequence)
            self._preempt_over_budget()
            self.batch.forward()
        self.metrics.compactions.inc(self.batch.evictions_applied - before[0])
        self.metrics.evicted_tokens.inc(self.batch.slots_evicted - before[1])
        self._update_gauges()

    # ----- phases -----
    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self.batch.sequences if s.tag.cancelled]:
            self.batch.remove(sequence)
            self._timing.pop(id(sequence), None)
        kept = [s for s in self.waiting if not s.tag.cancelled]
        for sequence in self.waiting:
            if sequence.tag.cancelled and sequence.index == 0 and sequence.tag.admitted_at is None:
                self._unqueue(sequence.tag)
        self.waiting = deque(kept)

    def _unqueue(self, request: EngineRequest) -> None:
        with self._lock:
            self._queued -= 1

    def _admit(self) -> None:
        budget = self.max_cache_tokens
        while self.waiting and len(self.batch.sequences) < self.max_batch_size:
            sequence = self.waiting[0]
            request: EngineRequest = sequence.tag
            running = len(self.batch.sequences)
            if budget is not None:
                need = self.batch.physical_need(sequence.ids, sequence)
                if need + 1 > budget:  # it cannot fit even alone: stop it rather than wait forever
                    self.waiting.popleft()
                    self._first_admission(request)
                    sequence.finish("length")
                    self._finish(sequence)
                    continue
                if running and self.batch.physical_tokens() + running + need + 1 > budget:
                    return  # wait for rows to finish or shrink
            self.waiting.popleft()
            first = self._first_admission(request)
            want_prompt_logprobs = first and sequence.index == 0 and request.prompt_logprobs is not None
            all_logits = self.batch.prefill(sequence, keep_all_logits=want_prompt_logprobs)
            self.metrics.prompt_tokens.inc(len(sequence.ids) if not sequence.generated else 0)
            if want_prompt_logprobs:
                request.emit(EngineEvent("prompt_logprobs", payload=self._prompt_logprobs(sequence, all_logits,
                                                                                         request.prompt_logprobs)))
            self._order += 1
            self._timing.setdefault(id(sequence), _Timing()).order = self._order
            if sequence.finish_reason is not None:
                self._finish(sequence)

    def _first_admission(self, request: EngineRequest) -> bool:
        if request.admitted_at is not None:
            return False
        request.admitted_at = time.monotonic()
        self.metrics.queue_time.observe(request.admitted_at - request.arrival)
        self._unqueue(request)
        return True

    def _prompt_logprobs(self, sequence: DecodeSequence, logits: torch.Tensor, top: int) -> list:
        """Per prompt position: None for the first, then TokenLogprob of the prompt token under the previous
        position's logits (the dense-mask prefill's: exactly what the evicting decode would have seen)."""
        ids = sequence.prompt_ids
        if len(ids) < 2:
            return [None] * len(ids)
        chosen = torch.tensor(ids[1:], device=logits.device)
        return [None, *logprob_rows(logits[:-1], chosen, top)]

    def _emit_token(self, step: TokenStep) -> None:
        sequence = step.sequence
        now = time.monotonic()
        timing = self._timing.setdefault(id(sequence), _Timing())
        if timing.first is None:
            timing.first = now
            self.metrics.ttft.observe(now - sequence.tag.arrival)
        elif timing.last is not None:
            self.metrics.itl.observe(now - timing.last)
        timing.last = now
        self.metrics.generation_tokens.inc()
        sequence.tag.emit(EngineEvent("token", index=sequence.index, step=step))

    def _finish(self, sequence: DecodeSequence) -> None:
        request: EngineRequest = sequence.tag
        self._timing.pop(id(sequence), None)
        request.finished += 1
        self.metrics.success(sequence.finish_reason or "abort")
        if sequence.machine is not None:
            self.metrics.completed_blocks.inc(sequence.machine.completed_blocks)
        if request.finished == request.n:
            self.metrics.e2e.observe(time.monotonic() - request.arrival)
        request.emit(EngineEvent("finish", index=sequence.index, sequence=sequence))

    def _preempt_over_budget(self) -> None:
        """Keep the batch (plus the token each row adds next) within --max-cache-tokens by preempting the newest
        rows; a row alone over the budget stops with finish_reason "length"."""
        budget = self.max_cache_tokens
        if budget is None:
            return
        while self.batch.sequences and self.batch.physical_tokens() + len(self.batch.sequences) > budget:
            if len(self.batch.sequences) == 1:
                sequence = self.batch.sequences[0]
                sequence.finish("length")
                self.batch.remove(sequence)
                self._finish(sequence)
                return
            newest = max(self.batch.sequences, key=lambda s: self._timing.get(id(s), _Timing()).order)
            self.batch.remove(newest)
            newest.machine, newest.logits = None, None
            self.waiting.appendleft(newest)
            self.metrics.preemptions.inc()

    def _fail_all(self, message: str) -> None:
        for sequence in list(self.batch.sequences):
            sequence.finish("abort")
            sequence.tag.emit(EngineEvent("error", index=sequence.index, payload=message))
        # the cache may be half-updated: start from an empty batch
        self.batch = DecodeBatch(self.runner, eos_ids=self.eos_ids, prefill_chunk_size=self.batch.prefill_chunk_size,
                                 rows=self.max_batch_size)
        self._timing.clear()

    def _update_gauges(self) -> None:
        physical = self.batch.physical_tokens()
        self.peak_physical_tokens = max(self.peak_physical_tokens, physical)
        self.metrics.running.set(len({id(s.tag) for s in self.batch.sequences}))
        self.metrics.waiting.set(len({id(s.tag) for s in self.waiting}) + self._inbox.qsize())
        self.metrics.physical_tokens.set(physical)
        self.metrics.logical_tokens.set(self.batch.logical_tokens())
        if self.max_cache_tokens:
            self.metrics.kv_usage.set(physical / self.max_cache_tokens)
        else:
            slots = self.batch.kv.row_capacity * self.batch.kv.capacity
            self.metrics.kv_usage.set(physical / slots if slots else 0.0)


__all__ = ["Engine", "EngineEvent", "EngineRequest", "QueueFull", "TokenLogprob"]
