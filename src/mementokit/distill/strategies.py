"""Memory formation strategies: which history entries the teacher sees for one sample.

For the sample whose triple spans entries [a, b] of the history:
- exclude_current: every entry but [a, b], past and future (the final memory without this very answer);
- full_memory: every entry, the sample's own triple included;
- rolling_window (K): the K entries right before a (the memory as it was when the sample came, capped);
- failure_focus: the triples whose feedback is negative, the sample's own excluded, in history order.
`types` keeps only some entry types (applied before the window, so K counts kept entries); `max_entries` caps
any view to its last N entries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mementokit.distill.checkpoint import ENTRY_TYPES, Entry, Sample, iter_samples
from mementokit.errors import ConfigError

STRATEGIES = ("exclude_current", "full_memory", "rolling_window", "failure_focus")
_NEGATIVE = re.compile(r"\b(incorrect|wrong|fail(?:ed|s|ure)?|not correct|unsuccessful)\b", re.IGNORECASE)


def is_failure(feedback: object) -> bool:
    """Negative feedback: text such as "Incorrect" / "wrong" / "failed", or an object with correct/success false
    or a score of 0 (a "message" string inside an object is read as text)."""
    if isinstance(feedback, dict):
        for key in ("correct", "success", "is_correct"):
            if key in feedback and isinstance(feedback[key], bool):
                return not feedback[key]
        if isinstance(feedback.get("score"), (int, float)) and not isinstance(feedback.get("score"), bool):
            return feedback["score"] == 0
        return is_failure(feedback.get("message", ""))
    return isinstance(feedback, str) and bool(_NEGATIVE.search(feedback))


def check_strategy(strategy: str, window: int | None, types: Sequence[str] | None) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy == "rolling_window" and (window is None or window < 1):
        raise ConfigError("rolling_window needs a window of at least 1 entry (--window K)")
    if strategy != "rolling_window" and window is not None:
        raise ConfigError(f"--window applies to rolling_window only, not {strategy}")
    for name in types or ():
        if name not in ENTRY_TYPES:
            raise ConfigError(f"unknown entry type {name!r} in --types; choose from {', '.join(ENTRY_TYPES)}")


def memory_view(entries: Sequence[Entry], sample: Sample, strategy: str, *, window: int | None = None,
                types: Sequence[str] | None = None, max_entries: int | None = None,
                samples: Sequence[Sample] | None = None) -> list[Entry]:
    """The entries the teacher sees for `sample` (history order)."""
    check_strategy(strategy, window, types)
    keep = set(types) if types else set(ENTRY_TYPES)
    indices: list[int]
    if strategy == "full_memory":
        indices = list(range(len(entries)))
    elif strategy == "exclude_current":
        indices = [i for i in range(len(entries)) if not sample.start <= i <= sample.end]
    elif strategy == "rolling_window":
        before = [i for i in range(sample.start) if entries[i].type in keep]
        indices = before[-window:] if window else []
    else:  # failure_focus
        failed = [s for s in (samples if samples is not None else iter_samples(list(entries)))
                  if s.index != sample.index and is_failure(s.feedback.content)]
        indices = [i for s in failed for i in range(s.start, s.end + 1)]
    view = [entries[i] for i in indices if entries[i].type in keep]
    if max_entries is not None:
        view = view[-max_entries:] if max_entries > 0 else []
    return view
