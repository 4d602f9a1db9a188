"""Per-step cache statistics of one sequence: what the physical cache held after every step, and each eviction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class EvictionRecord:
    """One physical eviction: key positions [key_start, key_stop) of block `block_index` left the cache at
    `position`."""

    position: int  # the position whose step removed the keys (Eviction.at)
    block_index: int
    key_start: int
    key_stop: int
    trigger: int  # first query position that no longer sees the keys (dense-mask T_b)
    removed: int  # slots actually removed from the tensors
    restart: bool = False
    recomputed: int = 0  # restart mode: how many summary tokens had their keys/values recomputed


@dataclass
class CacheStats:
    """Cache occupancy after every step of one sequence.

    A step is one forward pass of the sequence: the prefill of its prompt (if any) counts as one step, every
    token fed afterwards as one more. `positions[i]` is how many logical tokens had been processed after step i,
    `cache_tokens[i]` how many the physical cache held, `cache_bytes[i]` what those tokens cost in the key and
    value tensors (measured from the tensors: dtype x heads x head dim x layers).
    """

    bytes_per_token: int = 0
    positions: list[int] = field(default_factory=list)
    cache_tokens: list[int] = field(default_factory=list)
    cache_bytes: list[int] = field(default_factory=list)
    evictions: list[EvictionRecord] = field(default_factory=list)

    def record(self, position: int, tokens: int, nbytes: int | None = None) -> None:
        self.positions.append(position)
        self.cache_tokens.append(tokens)
        self.cache_bytes.append(tokens * self.bytes_per_token if nbytes is None else nbytes)

    @property
    def peak_tokens(self) -> int:
        return max(self.cache_tokens, default=0)

    @property
    def peak_bytes(self) -> int:
        return max(self.cache_bytes, default=0)

    @property
    def final_tokens(self) -> int:
        return self.cache_tokens[-1] if self.cache_tokens else 0

    @property
    def logical_tokens(self) -> int:
        """Tokens processed (what a vanilla cache would hold at the end)."""
        return self.positions[-1] if self.positions else 0

    @property
    def auc_tokens(self) -> int:
        """Area under the cache curve, token-steps: the sum of the cache length after every step."""
        return int(sum(self.cache_tokens))

    @property
    def auc_bytes(self) -> int:
        return int(sum(self.cache_bytes))

    @property
    def evicted_tokens(self) -> int:
        return sum(e.removed for e in self.evictions)

    def summary(self) -> dict:
        return {
            "logical_tokens": self.logical_tokens,
            "final_tokens": self.final_tokens,
            "peak_tokens": self.peak_tokens,
            "peak_bytes": self.peak_bytes,
            "auc_tokens": self.auc_tokens,
            "auc_bytes": self.auc_bytes,
            "bytes_per_token": self.bytes_per_token,
            "evictions": len(self.evictions),
            "evicted_tokens": self.evicted_tokens,
        }

    def to_dict(self) -> dict:
        return {
            **self.summary(),
            "positions": list(self.positions),
            "cache_tokens": list(self.cache_tokens),
            "cache_bytes": list(self.cache_bytes),
            "eviction_list": [asdict(e) for e in self.evictions],
        }
