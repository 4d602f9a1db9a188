"""The physical KV cache: a transformers DynamicCache whose rows lose evicted key positions for real.

Each row keeps its surviving tokens in logical order, right-aligned (left padding) so that rows of different
physical lengths share one [B, H, L, D] tensor per layer. Next to the tensors we keep the ORIGINAL absolute
position of every surviving slot, which is what rotary embeddings and explicit masks need; nothing is renumbered.

Eviction removes a logical span [start, stop) from one row. Because surviving slots are sorted by position,
the slots of a span are one contiguous physical range, so eviction is a range removal:
  - one row: keys = cat(keys[..., :lo, :], keys[..., hi:, :])  (the memory is released at once);
  - several rows: the row's slots before the range move right by its length and the row's padding grows;
    when every row has padding, the common padding columns are sliced off (re-compaction).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class RowKV:
    """One row taken out of a batch: per-layer keys/values [1, H, n, D] and the n logical positions."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    positions: list[int]


class PhysicalKVCache:
    """B rows of key/value tensors with per-row left padding and per-slot logical positions."""

    def __init__(self) -> None:
        # No config on purpose: plain DynamicLayers for every layer. Sliding-window layers of the model are
        # handled with explicit masks over logical positions (a physical window would count evicted slots wrong).
        self.cache = DynamicCache()
        self.positions: list[list[int]] = []  # per row: logical position of each valid slot, increasing
        self.pad: list[int] = []  # per row: number of padding slots at the left

    # ----- shape -----
    @property
    def batch_size(self) -> int:
        return len(self.positions)

    @property
    def physical_length(self) -> int:
        """L: the sequence dimension of the tensors (valid slots + padding of the longest row)."""
        if not self.cache.layers or not getattr(self.cache.layers[0], "is_initialized", False):
            return 0
        return self.cache.layers[0].keys.shape[-2]

    def row_length(self, row: int) -> int:
        """Valid (non-padding) slots of one row: the row's cache occupancy in tokens."""
        return len(self.positions[row])

    def has_padding(self) -> bool:
        return any(self.pad)

    def _layers(self):
        return [layer for layer in self.cache.layers if getattr(layer, "is_initialized", False)]

    def nbytes(self) -> int:
        """Bytes held by the key and value tensors, read from the tensors themselves (padding included)."""
        total = 0
        for layer in self._layers():
            total += layer.keys.numel() * layer.keys.element_size()
            total += layer.values.numel() * layer.values.element_size()
        return total

    def bytes_per_token(self) -> int:
        """Bytes one cached token costs across all layers (K and V), from the tensors' head counts and dtypes."""
        total = 0
        for layer in self._layers():
            _, heads, _, dim = layer.keys.shape
            total += heads * dim * layer.keys.element_size()
            _, heads, _, dim = layer.values.shape
            total += heads * dim * layer.values.element_size()
        return total

    # ----- bookkeeping around a forward pass -----
    def note_appended(self, query_positions: list[list[int]]) -> None:
        """Record the logical positions of the tokens the last forward pass appended, one list per row."""
        if not self.positions:
            self.positions = [[] for _ in query_positions]
            self.pad = [0] * len(query_positions)
        for row, new in enumerate(query_positions):
            self.positions[row].extend(new)

    def padding_mask(self, query_length: int, device) -> torch.Tensor | None:
        """[B, L + q] bool: True for real slots (past and new), False for left padding; None without padding."""
        if not self.has_padding():
            return None
        length = self.physical_length + query_length
        columns = torch.arange(length, device=device)  # [L + q]
        pads = torch.tensor(self.pad, device=device)[:, None]  # [B, 1]
        return columns[None, :] >= pads  # [B, L + q]

    def key_positions(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Logical position of every physical slot [B, L] (long) and whether the slot is real [B, L] (bool)."""
        length = self.physical_length
        positions = torch.zeros(self.batch_size, length, dtype=torch.long)
        valid = torch.zeros(self.batch_size, length, dtype=torch.bool)
        for row, (pad, pos) in enumerate(zip(self.pad, self.positions)):
            if pos:
                positions[row, pad:] = torch.tensor(pos, dtype=torch.long)
                valid[row, pad:] = True
        return positions.to(device), valid.to(device)

    # ----- eviction -----
    def count_in(self, row: int, start: int, stop: int) -> int:
        """Slots of `row` whose logical position is in [start, stop)."""
        pos = self.positions[row]
        return bisect_left(pos, stop) - bisect_left(pos, start)

    def evict(self, row: int, start: int, stop: int) -> int:
        """Remove the slots of `row` whose logical position is in [start, stop); returns how many were removed."""
        pos = self.positions[row]
        first, last = bisect_left(pos, start), bisect_left(pos, stop)
        removed = last - first
        if removed == 0:
            return 0
        pad = self.pad[row]
        lo, hi = pad + first, pad + last  # physical range [lo, hi) of the span
        if self.batch_size == 1:
            for layer in self._layers():
                layer.keys = torch.cat([layer.keys[:, :, :lo], layer.keys[:, :, hi:]], dim=2)
                layer.values = torch.cat([layer.values[:, :, :lo], layer.values[:, :, hi:]], dim=2)
        else:
            for layer in self._layers():
                # Slots [pad, lo) move right onto [pad + removed, hi); the tail [hi, L) is already right-aligned.
                layer.keys[row, :, pad + removed : hi] = layer.keys[row, :, pad:lo].clone()
                layer.values[row, :, pad + removed : hi] = layer.values[row, :, pad:lo].clone()
            self.pad[row] = pad + removed
        del pos[first:last]
        self.compact()
        return removed

    def compact(self) -> None:
        """Drop the padding columns every row shares, so a batch never holds more slots than its longest row."""
        if not self.pad:
            return
        common = min(self.pad)
        if common == 0:
            return
        for layer in self._layers():
            # A view; the next update's torch.cat allocates a tensor of the smaller size, releasing the old one.
            layer.keys = layer.keys[:, :, common:]
            layer.values = layer.values[:, :, common:]
        self.pad = [p - common for p in self.pad]

    # ----- rows joining and leaving -----
    def take_row(self, row: int) -> RowKV:
        """Copy one row out (without its padding)."""
        pad = self.pad[row]
        layers = self._layers()
        return RowKV(
            keys=[layer.keys[row : row + 1, :, pad:].clone() for layer in layers],
            values=[layer.values[row : row + 1, :, pad:].clone() for layer in layers],
            positions=list(self.positions[row]),
        )

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order): finished rows leave the batch and their memory is released."""
        if rows == list(range(self.batch_size)):
            return
        index = torch.tensor(rows, dtype=torch.long)
        for layer in self._layers():
            index = index.to(layer.keys.device)
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self.positions = [self.positions[r] for r in rows]
        self.pad = [self.pad[r] for r in rows]
        self.compact()

    @classmethod
    def from_rows(cls, rows: list[RowKV]) -> "PhysicalKVCache":
        """Merge single rows into one left-padded batch."""
        merged = cls()
        if not rows:
            return merged
        lengths = [len(r.positions) for r in rows]
        longest = max(lengths)
        num_layers = len(rows[0].keys)
        for layer_idx in range(num_layers):
            keys = [r.keys[layer_idx] for r in rows]
            values = [r.values[layer_idx] for r in rows]
            _, heads, _, dim = keys[0].shape
            _, vheads, _, vdim = values[0].shape
            batch_keys = keys[0].new_zeros(len(rows), heads, longest, dim)  # [B, H, L, D]
            batch_values = values[0].new_zeros(len(rows), vheads, longest, vdim)
            for i, (k, v, n) in enumerate(zip(keys, values, lengths)):
                if n:
                    batch_keys[i, :, longest - n :] = k[0]
                    batch_values[i, :, longest - n :] = v[0]
            merged.cache.update(batch_keys, batch_values, layer_idx)
        merged.positions = [list(r.positions) for r in rows]
        merged.pad = [longest - n for n in lengths]
        return merged

    def replace_row(self, row: int, new: RowKV) -> None:
        """Put a row back after it was processed on its own (e.g. a restart recompute)."""
        rows = [self.take_row(r) if r != row else new for r in range(self.batch_size)]
        rebuilt = PhysicalKVCache.from_rows(rows)
        self.cache, self.positions, self.pad = rebuilt.cache, rebuilt.positions, rebuilt.pad

    @classmethod
    def single(cls, row: RowKV) -> "PhysicalKVCache":
        single = cls()
        for layer_idx, (k, v) in enumerate(zip(row.keys, row.values)):
            single.cache.update(k, v, layer_idx)
        single.positions = [list(row.positions)]
        single.pad = [0]
        return single
