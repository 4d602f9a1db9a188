"""The block state machine of block-semantics.md, on any hashable tokens (standard library only).

This is the ONE reading of the rules. It lives in the format core so that both views derive from it without an
upward dependency: `mementokit.blocks.BlockStateMachine` runs it over token ids (adding a numpy fast path), and
the text view (`parse_response` pairing, `compress_trace`) runs it over marker occurrences, each marker string
being one token.

The rules are the reference vLLM overlay's (microsoft/memento, vllm/v1/core/block_masking/tracker.py and
processor.py, block_length_cap.py), token for token:
- BS: with keep_last_block_for_answer (and keep_last_n_blocks == 0) first evict the OLDEST queued block, at
  most one per BS, whatever compact_on_summary_end says; then open a block (blocks nest: a stack).
- BE: close the innermost open block; ignored when none is open.
- SS: attach to the most recently OPENED block that is closed and has no summary yet (with nesting, the inner
  block); an open summary is abandoned (its block never completes). Ignored when there is no such block.
- SE: complete the block whose summary is open; it joins the queue; with compact_on_summary_end (and not
  deferring for the answer) evict the oldest queued block when more than keep_last_n_blocks are queued: at
  most one per SE.
- Assistant gating: only tokens after the first <|im_start|> followed within two positions by `assistant`
  are tracked (the assistant token itself is not).
- The block-length cap: one "in block" flag, not a stack (BS sets it and restarts the count, BE clears it and
  restarts the count), every token but the four markers counts while it is set, no gating, prompt included.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

log = logging.getLogger("mementokit.blocks")


@dataclass(frozen=True)
class Eviction:
    """Key positions range(key_start, key_stop) become invisible to every query at position >= trigger.

    `at` is the position whose step() reports this eviction: the physical cache drops the keys before that
    token's own key/value is stored. It equals `trigger` except in restart mode, where the eviction is reported
    at a summary end (or, with keep_last_block_for_answer, at the next block start) but the dense mask treats it
    as happening from `recompute_from` (= trigger): the caller recomputes the surviving keys/values of positions
    recompute_from .. at-1 with the block invisible, then processes `at`.

    A block whose span contains keys evicted earlier (nesting) yields one Eviction per still-visible piece, all
    with the same block_index; a block whose span was already entirely evicted yields none.
    """

    block_index: int  # 0-based index of the completed block, in completion order
    key_start: int  # first evicted absolute position (inclusive)
    key_stop: int  # one past the last evicted position (half-open)
    trigger: int  # T_b: first query position that no longer sees the keys
    summary_start: int  # position of the block's SS
    summary_end: int  # position of the block's SE
    restart: bool = False
    at: int | None = None  # position whose step() reports it; None -> trigger
    recompute_from: int | None = None  # restart mode only: first position whose key/value must be recomputed

    def __post_init__(self) -> None:
        if self.at is None:
            object.__setattr__(self, "at", self.trigger)

    @property
    def size(self) -> int:
        return self.key_stop - self.key_start

    @property
    def keys(self) -> range:
        return range(self.key_start, self.key_stop)


class Block:
    """One block as the machine tracks it (positions are -1 until seen)."""

    __slots__ = ("start", "end", "summary_start", "summary_end", "index")

    def __init__(self, start: int) -> None:
        self.index = -1  # completion order, set when its summary ends
        self.start = start
        self.end = -1
        self.summary_start = -1
        self.summary_end = -1

    def __lt__(self, other: Block) -> bool:  # closed blocks are kept sorted by creation (= start position)
        return self.start < other.start


def queues_completed_blocks(config) -> bool:
    """Whether completed blocks can ever be evicted under `config` (so they must be queued)."""
    defers = config.keep_last_block_for_answer and config.keep_last_n_blocks == 0
    return bool(config.enable) and config.keep_last_n_blocks >= 0 and (config.compact_on_summary_end or defers)


class BlockMachine:
    """Feed tokens in order; get the evictions each token triggers.

    config: any object with the overlay's option attributes (mementokit.blocks.BlockMaskingConfig).
    markers: any object with block_start, block_end, summary_start, summary_end, im_start and assistant
    attributes (token ids, or marker kinds for the text view); gating is off when im_start or assistant is None.
    position: absolute position of the NEXT token to be fed (starts at 0: feed the prompt too, or use
    `start_inside_assistant=True` when replaying a response alone).
    """

    __slots__ = (
        "config", "markers", "position", "evicted_tokens", "completed_blocks",
        "_watch", "_watch_all_set", "_marker_watch", "_gating", "_gate_open", "_last_im_start",
        "_open", "_closed", "_summarizing", "_queue", "_queues", "_defers", "_ev_starts", "_ev_stops",
        "_cap_in_block", "_cap_anchor", "_cap_markers", "_bs", "_be", "_ss", "_se", "_im", "_as", "blocks",
    )

    def __init__(self, config, markers, *, start_inside_assistant: bool = False, record: bool = False):
        self.config = config
        self.markers = markers
        self.position = 0
        self.evicted_tokens = 0
        self.completed_blocks = 0
        self._bs, self._be, self._ss, self._se = (markers.block_start, markers.block_end, markers.summary_start,
                                                  markers.summary_end)
        self._im = getattr(markers, "im_start", None)
        self._as = getattr(markers, "assistant", None)
        can_gate = self._im is not None and self._as is not None
        self._gating = bool(config.require_assistant_section) and can_gate and not start_inside_assistant
        self._gate_open = not self._gating
        self._last_im_start: int | None = None
        self._open: list[Block] = []
        self._closed: list[Block] = []  # closed, no summary yet; sorted by start: the newest created last
        self._summarizing: Block | None = None
        self._queue: deque[Block] = deque()  # completed, not yet evicted, oldest first
        self._queues = queues_completed_blocks(config)
        self._defers = config.keep_last_block_for_answer and config.keep_last_n_blocks == 0
        self._ev_starts: list[int] = []  # merged evicted spans, sorted, disjoint, never adjacent
        self._ev_stops: list[int] = []
        self._cap_in_block = False  # the cap's one flag (not the block stack)
        self._cap_anchor = -1  # position of the last BS/BE: the cap's count starts after it
        self._cap_markers = 0  # SS/SE seen since the anchor (they do not count)
        # record=True keeps every tracked block, in creation order (for pairing views); off for long generation.
        self.blocks: list[Block] | None = [] if record else None
        if not config.enable:
            self._marker_watch: frozenset[Hashable] = frozenset()
            gate_watch: frozenset[Hashable] = frozenset()
        else:
            self._marker_watch = frozenset((self._bs, self._be, self._ss, self._se))
            gate_watch = frozenset(t for t in (self._im, self._as) if t is not None) if self._gating else frozenset()
        # Tokens that can change the state: the markers always (the cap is not gated), the gate's two tokens
        # until it opens. `_watch_all_set` is the union, for whole-sequence feeding.
        self._watch = self._marker_watch if self._gate_open else self._marker_watch | gate_watch
        self._watch_all_set = self._marker_watch | gate_watch

    # ---- feeding ------------------------------------------------------------------------------------------
    def step(self, token) -> list[Eviction]:
        """Feed the token at `position`; return the evictions reported at this position (see Eviction.at).

        The keys they name must be removed before this token's query attends and before its key/value is stored.
        """
        p = self.position
        self.position = p + 1
        if token in self._watch:
            return self._process(token, p)
        return []

    def feed(self, tokens: Iterable) -> list[Eviction]:
        """Feed many tokens at once (same semantics as calling step for each); returns all their evictions."""
        out: list[Eviction] = []
        watch = self._watch_all_set
        base = self.position
        offset = -1
        for offset, token in enumerate(tokens):
            if token in watch:
                self.position = base + offset + 1
                out.extend(self._process(token, base + offset))
        self.position = base + offset + 1
        return out

    # ---- the rules ----------------------------------------------------------------------------------------
    def _process(self, token, p: int) -> list[Eviction]:
        """Any token of `_watch_all_set` at any time (whole-sequence feeding does not know when the gate opens)."""
        out: list[Eviction] = []
        # The block-length cap sees every marker, gated or not (block_length_cap.py).
        if token == self._bs:
            self._cap_in_block, self._cap_anchor, self._cap_markers = True, p, 0
        elif token == self._be:
            self._cap_in_block, self._cap_anchor, self._cap_markers = False, p, 0
        elif token == self._ss or token == self._se:
            self._cap_markers += 1
        if token == self._im:
            self._last_im_start = p
        if not self._gate_open:
            # Tracking starts after the first <|im_start|> followed within two positions by `assistant`; the
            # assistant token itself is not tracked and the gate never closes again.
            if token == self._as and self._last_im_start is not None and p - self._last_im_start <= 2:
                self._gate_open = True
                self._watch = self._marker_watch
                if self.config.debug:
                    log.debug("assistant section opens after position %d", p)
            return out
        if token == self._bs:
            if self._defers and self._queue:
                # keep_last_block_for_answer: a new block starts, so the oldest deferred block was not the last.
                block = self._queue.popleft()
                self._evict(block, at=p, recompute_from=block.summary_start, out=out)
            block = Block(p)
            self._open.append(block)
            if self.blocks is not None:
                self.blocks.append(block)
        elif token == self._be:
            if self._open:
                block = self._open.pop()
                block.end = p
                insort(self._closed, block)
        elif token == self._ss:
            if self._closed:
                # The newest CREATED closed block without a summary; an open summary is abandoned.
                block = self._closed.pop()
                block.summary_start = p
                self._summarizing = block
        elif token == self._se:
            block = self._summarizing
            if block is not None:
                self._summarizing = None
                block.summary_end = p
                self._complete(block, p, out)
        if out and self.config.debug:
            log.debug("position %d evicts %s", p, [(e.key_start, e.key_stop) for e in out])
        return out

    def _complete(self, block: Block, p: int, out: list[Eviction]) -> None:
        block.index = self.completed_blocks
        self.completed_blocks += 1
        if not self._queues:
            return  # never evicted (keep -1, or no compaction at all): nothing to queue
        self._queue.append(block)
        config = self.config
        if self._defers or not config.compact_on_summary_end:
            return  # evicted by a later block start (keep_last_block_for_answer), or never
        if len(self._queue) > config.keep_last_n_blocks:
            # At most one per SE. Restart mode recomputes the summary that just ended.
            self._evict(self._queue.popleft(), at=p, recompute_from=block.summary_start, out=out)

    def _evict(self, block: Block, *, at: int, recompute_from: int, out: list[Eviction]) -> None:
        """Report the not-yet-evicted parts of the block's key span K_b, and mark them evicted."""
        config = self.config
        if config.mask_delimiters or config.restart_mode:
            a, b = block.start, block.end + 1  # delimiters go with the block (Phi-4 style, and restart)
        else:
            a, b = block.start + 1, block.end  # content only (Qwen3 / OLMo-3 style)
        if a >= b:
            return
        restart = bool(config.restart_mode)
        recompute = recompute_from if restart else None
        trigger = recompute_from if restart else at
        starts, stops = self._ev_starts, self._ev_stops
        # Spans are laminar (blocks nest), but merge generally: find the stored spans touching [a, b).
        first = bisect_left(stops, a)
        last = first
        cursor = a
        while last < len(starts) and starts[last] <= b:
            if starts[last] > cursor:
                self._report(block, cursor, starts[last], trigger, at, recompute, out)
            cursor = max(cursor, stops[last])
            last += 1
        if cursor < b:
            self._report(block, cursor, b, trigger, at, recompute, out)
        if last > first:
            merged_start, merged_stop = min(a, starts[first]), max(b, stops[last - 1])
        else:
            merged_start, merged_stop = a, b
        starts[first:last] = [merged_start]
        stops[first:last] = [merged_stop]

    def _report(self, block: Block, start: int, stop: int, trigger: int, at: int, recompute: int | None,
                out: list[Eviction]) -> None:
        self.evicted_tokens += stop - start
        out.append(Eviction(block.index, start, stop, trigger, block.summary_start, block.summary_end,
                            recompute is not None, at, recompute))

    # ---- inspection ---------------------------------------------------------------------------------------
    @property
    def in_assistant_section(self) -> bool:
        """Whether tokens are being tracked (the assistant gate is open, or gating is off)."""
        return self._gate_open

    @property
    def open_blocks(self) -> int:
        return len(self._open)

    @property
    def queued_blocks(self) -> int:
        """Completed blocks still visible (kept by keep_last_n_blocks or deferred for the answer)."""
        return len(self._queue)

    @property
    def summary_open(self) -> bool:
        return self._summarizing is not None

    @property
    def evicted_spans(self) -> list[tuple[int, int]]:
        """Evicted key positions so far, as merged half-open (start, stop) spans."""
        return list(zip(self._ev_starts, self._ev_stops))

    @property
    def cache_tokens(self) -> int:
        """Physical cache length after the tokens fed so far: positions minus evicted keys (invariant 2)."""
        return self.position - self.evicted_tokens

    def block_tokens_since_open(self) -> int:
        """The cap's count: tokens other than the four markers since the last BS, while its in-block flag is set
        (0 when it is not: a BE clears it, even inside a nested block)."""
        if not self._cap_in_block:
            return 0
        return self.position - self._cap_anchor - 1 - self._cap_markers

    def must_close_block(self) -> bool:
        """max_block_tokens reached: the next token must be BE (the generator masks every other logit)."""
        cap = self.config.max_block_tokens
        return cap > 0 and bool(self.config.enable) and self._cap_in_block and self.block_tokens_since_open() >= cap
