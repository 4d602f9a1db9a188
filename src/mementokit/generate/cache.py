"""The physical KV cache on preallocated per-row buffers: in-place append, in-place eviction, rows join and leave.

Layout, per layer: keys and values live in buffers [R, H, C, D] (R row slots, C columns) allocated once and grown
by doubling. The batch's rows are slots 0..B-1; they share a column window [lo, hi). Row r is right-aligned in
it: its surviving tokens occupy columns [lo + pad[r], hi) in logical order, the `pad[r]` columns before them are
left padding. Beside the tensors, `pos` [R, C] holds the ORIGINAL absolute position of every slot (what rotary
embeddings and explicit masks need; nothing is renumbered).

What each operation costs, so that a step never copies the whole cache:
  - append (a forward pass): every layer writes its q new columns at hi, then hi += q        O(B * q)
  - evict a span of row r: the row's slots before the span move right by its length           O(row prefix)
  - a row leaves: the last row's window is copied into its slot                               O(one row)
  - a row joins: its tokens are written into slot B, right-aligned at hi; when it is longer
    than the window, lo moves left (existing rows get more padding, no data moves)            O(its tokens)
  - re-centring: when lo has drifted past the window's width, the window moves back to
    column 0 (amortised over the steps that moved lo)                                         O(B * width) rarely
The transformers model sees `cache` (a `transformers.Cache` whose layers return views of the window), so any
model that uses the standard cache interface runs on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass
class RowKV:
    """One row taken out of a batch: per-layer keys/values [1, H, n, D] and the n logical positions."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    positions: list[int]


class _BufferLayer(CacheLayerMixin):
    """One layer's key/value buffers; the window and the row count belong to the owning PhysicalKVCache."""

    is_sliding = False
    is_compileable = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, owner: PhysicalKVCache) -> None:  # no super().__init__: keys/values are views below
        self.owner = owner
        self.key_buf: torch.Tensor | None = None  # [R, H, C, D]
        self.value_buf: torch.Tensor | None = None
        self.is_initialized = False

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        o = self.owner
        self.device = key_states.device
        _, heads, _, dim = key_states.shape
        _, vheads, _, vdim = value_states.shape
        self.key_buf = key_states.new_zeros(o.row_capacity, heads, o.capacity, dim)
        self.value_buf = value_states.new_zeros(o.row_capacity, vheads, o.capacity, vdim)
        self.is_initialized = True

    # views of the live window (what transformers and the statistics read)
    @property
    def keys(self) -> torch.Tensor:
        o = self.owner
        return self.key_buf[: o.batch_size, :, o.lo : o.hi]

    @property
    def values(self) -> torch.Tensor:
        o = self.owner
        return self.value_buf[: o.batch_size, :, o.lo : o.hi]

    def update(self, key_states, value_states, *args, **kwargs):
        """Write the new columns in place at hi; return the window including them (views, no copy)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        o = self.owner
        rows, q = key_states.shape[0], key_states.shape[-2]
        self.fit(max(rows, o.row_capacity), o.hi + q)
        self.key_buf[:rows, :, o.hi : o.hi + q] = key_states
        self.value_buf[:rows, :, o.hi : o.hi + q] = value_states
        return self.key_buf[:rows, :, o.lo : o.hi + q], self.value_buf[:rows, :, o.lo : o.hi + q]

    def fit(self, rows: int, columns: int) -> None:
        """Grow the buffers (doubling) so that `rows` slots and `columns` columns exist; contents are kept."""
        have_rows, have_cols = self.key_buf.shape[0], self.key_buf.shape[2]
        if rows <= have_rows and columns <= have_cols:
            return
        new_rows = max(rows, have_rows)
        new_cols = max(columns, 2 * have_cols) if columns > have_cols else have_cols
        for name in ("key_buf", "value_buf"):
            old = getattr(self, name)
            grown = old.new_zeros(new_rows, old.shape[1], new_cols, old.shape[3])
            grown[:have_rows, :, :have_cols] = old
            setattr(self, name, grown)

    def get_seq_length(self) -> int:
        return self.owner.hi - self.owner.lo if self.is_initialized else 0

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        raise NotImplementedError("a PhysicalKVCache is reset by building a new one")


class PhysicalKVCache:
    """B rows of key/value slots with per-row left padding and per-slot logical positions (see the module doc)."""

    def __init__(self, *, rows: int = 1, columns: int = 256) -> None:
        self.row_capacity = max(1, rows)
        self.capacity = max(1, columns)
        self.cache = Cache(layer_class_to_replicate=lambda: _BufferLayer(self))
        self.lo = 0
        self.hi = 0
        self.pad: list[int] = []  # per row: padding columns at the left of the window
        self.pos = torch.zeros(self.row_capacity, self.capacity, dtype=torch.long)  # [R, C] logical positions

    # ----- shape -----
    @property
    def batch_size(self) -> int:
        return len(self.pad)

    @property
    def physical_length(self) -> int:
        """L: width of the window (the longest row's slots); what one row of the attention tensors holds."""
        return self.hi - self.lo

    def row_length(self, row: int) -> int:
        """Valid (non-padding) slots of one row: the row's cache occupancy in tokens."""
        return self.hi - self.lo - self.pad[row]

    def total_tokens(self) -> int:
        """Valid slots of every row together: the physical tokens the batch holds."""
        return sum(self.hi - self.lo - p for p in self.pad)

    def has_padding(self) -> bool:
        return any(self.pad)

    def _layers(self) -> list[_BufferLayer]:
        return [layer for layer in self.cache.layers if layer.is_initialized]

    @property
    def positions(self) -> list[list[int]]:
        """Per row, the logical positions of its slots (increasing). Copies: for inspection, not per token."""
        return [self.row_positions(r) for r in range(self.batch_size)]

    def row_positions(self, row: int) -> list[int]:
        return self.pos[row, self.lo + self.pad[row] : self.hi].tolist()

    def bytes_per_token(self) -> int:
        """Bytes one cached token costs across all layers (K and V), from the buffers' head counts and dtypes."""
        total = 0
        for layer in self._layers():
            for buf in (layer.key_buf, layer.value_buf):
                total += buf.shape[1] * buf.shape[3] * buf.element_size()
        return total

    def nbytes(self) -> int:
        """Bytes of the live window of every row (padding included): what the attention reads each step."""
        return self.batch_size * self.physical_length * self.bytes_per_token()

    def allocated_bytes(self) -> int:
        """Bytes the preallocated buffers hold (capacity, not use)."""
        total = 0
        for layer in self._layers():
            total += layer.key_buf.numel() * layer.key_buf.element_size()
            total += layer.value_buf.numel() * layer.value_buf.element_size()
        return total

    # ----- capacity -----
    def _fit(self, rows: int, columns: int) -> None:
        for layer in self._layers():
            layer.fit(rows, columns)
        if rows > self.row_capacity or columns > self.capacity:
            new_rows = max(rows, self.row_capacity)
            new_cols = max(columns, 2 * self.capacity) if columns > self.capacity else self.capacity
            grown = self.pos.new_zeros(new_rows, new_cols)
            grown[: self.pos.shape[0], : self.pos.shape[1]] = self.pos
            self.pos = grown
            self.row_capacity, self.capacity = new_rows, new_cols

    def _move_window(self, new_lo: int) -> None:
        """Copy the window [lo, hi) of every row to start at column new_lo (capacity grown as needed)."""
        width, rows = self.hi - self.lo, self.batch_size
        self._fit(self.row_capacity, new_lo + width)
        if width and rows and new_lo != self.lo:
            src, dst = slice(self.lo, self.hi), slice(new_lo, new_lo + width)
            for layer in self._layers():
                layer.key_buf[:rows, :, dst] = layer.key_buf[:rows, :, src].clone()
                layer.value_buf[:rows, :, dst] = layer.value_buf[:rows, :, src].clone()
            self.pos[:rows, dst] = self.pos[:rows, src].clone()
        self.lo, self.hi = new_lo, new_lo + width

    def _trim(self) -> None:
        """Drop the padding columns every row shares; re-centre the window when it has drifted far right."""
        if not self.pad:
            self.lo = self.hi = 0
            return
        common = min(self.pad)
        if common:
            self.lo += common
            self.pad = [p - common for p in self.pad]
        if self.lo > max(64, self.hi - self.lo):
            self._move_window(0)

    # ----- bookkeeping around a forward pass -----
    def note_appended(self, query_positions: list[list[int]]) -> None:
        """Record the logical positions of the tokens the last forward pass appended (one list per row); the
        layers already wrote their keys/values at columns [hi, hi + q)."""
        if not self.pad:
            self.pad = [0] * len(query_positions)
            self._fit(len(query_positions), self.hi + 1)
        q = len(query_positions[0])
        self._fit(self.row_capacity, self.hi + q)
        self.pos[: len(query_positions), self.hi : self.hi + q] = torch.tensor(query_positions, dtype=torch.long)
        self.hi += q

    def padding_mask(self, query_length: int, device) -> torch.Tensor | None:
        """[B, L + q] bool: True for real slots (past and new), False for left padding; None without padding."""
        if not self.has_padding():
            return None
        columns = torch.arange(self.physical_length + query_length, device=device)  # [L + q]
        pads = torch.tensor(self.pad, device=device)[:, None]  # [B, 1]
        return columns[None, :] >= pads  # [B, L + q]

    def key_positions(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Logical position of every slot of the window [B, L] (long) and whether the slot is real [B, L] (bool)."""
        positions = self.pos[: self.batch_size, self.lo : self.hi].to(device)
        columns = torch.arange(self.physical_length, device=device)
        valid = columns[None, :] >= torch.tensor(self.pad, device=device)[:, None]
        return positions, valid

    # ----- eviction -----
    def _span(self, row: int, start: int, stop: int) -> tuple[int, int]:
        """Physical columns [a, b) of the row's slots whose logical position is in [start, stop)."""
        first = self.lo + self.pad[row]
        live = self.pos[row, first : self.hi]
        bounds = torch.searchsorted(live, torch.tensor([start, stop], dtype=torch.long)).tolist()
        return first + bounds[0], first + bounds[1]

    def count_in(self, row: int, start: int, stop: int) -> int:
        """Slots of `row` whose logical position is in [start, stop)."""
        a, b = self._span(row, start, stop)
        return b - a

    def evict(self, row: int, start: int, stop: int) -> int:
        """Remove the slots of `row` whose logical position is in [start, stop), in place; returns how many."""
        a, b = self._span(row, start, stop)
        removed = b - a
        if removed == 0:
            return 0
        first = self.lo + self.pad[row]
        if a > first:  # slots [first, a) move right onto [first + removed, b); the tail [b, hi) stays put
            for layer in self._layers():
                layer.key_buf[row, :, first + removed : b] = layer.key_buf[row, :, first:a].clone()
                layer.value_buf[row, :, first + removed : b] = layer.value_buf[row, :, first:a].clone()
            self.pos[row, first + removed : b] = self.pos[row, first:a].clone()
        self.pad[row] += removed
        self._trim()
        return removed

    def compact(self) -> None:
        """Drop the padding columns every row shares (done after every eviction and departure already)."""
        self._trim()

    # ----- rows joining and leaving -----
    def take_row(self, row: int) -> RowKV:
        """Copy one row out (without its padding)."""
        first = self.lo + self.pad[row]
        return RowKV(keys=[layer.key_buf[row : row + 1, :, first : self.hi].clone() for layer in self._layers()],
                     values=[layer.value_buf[row : row + 1, :, first : self.hi].clone() for layer in self._layers()],
                     positions=self.row_positions(row))

    def add_row(self, new: RowKV) -> int:
        """Append a row (slot B), right-aligned at hi; returns its index. The window widens to the left if needed."""
        n = len(new.positions)
        rows = self.batch_size
        if not self._layers() and new.keys:  # first row of an empty cache: create the layers from its tensors
            for layer_idx, (k, v) in enumerate(zip(new.keys, new.values)):
                while len(self.cache.layers) <= layer_idx:
                    self.cache.layers.append(_BufferLayer(self))
                self.cache.layers[layer_idx].lazy_initialization(k, v)
        width = self.hi - self.lo
        if n > width:
            extra = n - width
            if self.lo < extra:
                self._move_window(extra)
            self.lo -= extra
            self.pad = [p + extra for p in self.pad]
        self._fit(rows + 1, self.hi)
        for layer, k, v in zip(self._layers(), new.keys, new.values):
            layer.key_buf[rows, :, self.hi - n : self.hi] = k[0]
            layer.value_buf[rows, :, self.hi - n : self.hi] = v[0]
        if n:
            self.pos[rows, self.hi - n : self.hi] = torch.tensor(new.positions, dtype=torch.long)
        self.pad.append(self.hi - self.lo - n)
        self._trim()
        return rows

    def remove_row(self, row: int) -> None:
        """Remove one row: the LAST row moves into its slot (like `rows[row] = rows.pop()`), so callers keeping
        a per-row list apply the same move. Costs one row's copy, never the whole cache."""
        last = self.batch_size - 1
        if row != last:
            window = slice(self.lo, self.hi)
            for layer in self._layers():
                layer.key_buf[row, :, window] = layer.key_buf[last, :, window]
                layer.value_buf[row, :, window] = layer.value_buf[last, :, window]
            self.pos[row, window] = self.pos[last, window]
            self.pad[row] = self.pad[last]
        self.pad.pop()
        self._trim()

    def replace_row(self, row: int, new: RowKV) -> None:
        """Put a row back after it was processed on its own (a restart recompute); the other rows keep their
        slots, and the new contents go to slot `row`."""
        n = len(new.positions)
        width = self.hi - self.lo
        if n > width:
            extra = n - width
            if self.lo < extra:
                self._move_window(extra)
            self.lo -= extra
            self.pad = [p + extra for p in self.pad]
        for layer, k, v in zip(self._layers(), new.keys, new.values):
            layer.key_buf[row, :, self.hi - n : self.hi] = k[0]
            layer.value_buf[row, :, self.hi - n : self.hi] = v[0]
        if n:
            self.pos[row, self.hi - n : self.hi] = torch.tensor(new.positions, dtype=torch.long)
        self.pad[row] = self.hi - self.lo - n
        self._trim()

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only `rows`, in that order (a general reorder: copies the kept rows once)."""
        if rows == list(range(self.batch_size)):
            return
        taken = [self.take_row(r) for r in rows]
        self.pad = []
        self.lo = self.hi = 0
        for row in taken:
            self.add_row(row)

    @classmethod
    def from_rows(cls, rows: list[RowKV]) -> PhysicalKVCache:
        """Merge single rows into one left-padded batch."""
        longest = max((len(r.positions) for r in rows), default=0)
        merged = cls(rows=len(rows) or 1, columns=max(longest, 1) * 2)
        for row in rows:
            merged.add_row(row)
        return merged

    @classmethod
    def single(cls, row: RowKV) -> PhysicalKVCache:
        return cls.from_rows([row])
