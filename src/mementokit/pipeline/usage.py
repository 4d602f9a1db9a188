"""Counting what the LLM costs: every request sent, every token billed, per stage, per trace and per run.

`requests` counts every HTTP request that went out (first tries, transport retries and re-asks alike), so it
equals what the provider received; tokens are added for every reply that carried a usage block, whether the
answer was then used or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STAGES = ("score", "compress", "judge", "refine")


@dataclass
class StageUsage:
    calls: int = 0  # answers received (cache hits included), usable or not
    cached: int = 0  # answers served from the cache (no tokens spent)
    requests: int = 0  # HTTP requests sent: every attempt, failed ones included
    prompt_tokens: int = 0  # billed on the wire, by every reply with a usage block (cache hits add nothing)
    completion_tokens: int = 0
    retries: int = 0  # transport retries (429, 5xx, timeouts, dropped connections, malformed replies)
    reasks: int = 0  # new questions after an unusable answer (each is also a call)
    errors: int = 0  # calls that failed for good

    def add(self, other: StageUsage) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Usage:
    stages: dict[str, StageUsage] = field(default_factory=dict)

    def stage(self, name: str) -> StageUsage:
        return self.stages.setdefault(name, StageUsage())

    def add(self, other: Usage) -> None:
        for name, stage in other.stages.items():
            self.stage(name).add(stage)

    @property
    def total(self) -> StageUsage:
        out = StageUsage()
        for stage in self.stages.values():
            out.add(stage)
        return out

    def to_dict(self) -> dict[str, Any]:
        total = self.total
        return {
            "calls": total.calls,
            "cached": total.cached,
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "requests": total.requests,
            "retries": total.retries,
            "reasks": total.reasks,
            "errors": total.errors,
            "stages": {name: dict(vars(s)) for name, s in sorted(self.stages.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        usage = cls()
        for name, values in (data.get("stages") or {}).items():
            usage.stages[name] = StageUsage(
                **{k: int(v) for k, v in values.items() if k in StageUsage.__dataclass_fields__}
            )
        return usage
