"""The teacher's prompt for one sample: the HistoryAgent's own system and user prompts over a memory view.

    system = base system prompt + "\\n\\n" + EXPERIENCE_INSTRUCTION
    user   = "\\n\\n".join(["Here is a list of your previous experiences:",
                           "OBSERVATION: ...", "ACTION: ...", "FEEDBACK: ...", ...   (or NO_EXPERIENCES)
                           "Here is the current observation:", observation])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mementokit.distill.checkpoint import Checkpoint, Entry, Sample
from mementokit.distill.strategies import check_strategy, is_failure, memory_view

EXPERIENCE_INSTRUCTION = (
    "You will be given the previous experiences you've had and their feedback. You should use this feedback to "
    "improve your performance in the subsequent actions."
)
EXPERIENCES_HEADER = "Here is a list of your previous experiences:"
NO_EXPERIENCES = "No previous experiences."
OBSERVATION_HEADER = "Here is the current observation:"


def build_system_prompt(base: str) -> str:
    return f"{base}\n\n{EXPERIENCE_INSTRUCTION}"


def build_user_prompt(view: Sequence[Entry], observation: str) -> str:
    parts = [EXPERIENCES_HEADER]
    parts += [f"{entry.type.upper()}: {entry.text}" for entry in view] or [NO_EXPERIENCES]
    parts += [OBSERVATION_HEADER, observation]
    return "\n\n".join(parts)


@dataclass(frozen=True)
class PromptOptions:
    strategy: str = "exclude_current"
    window: int | None = None  # rolling_window's K
    types: tuple[str, ...] | None = None  # entry types kept in the view (None: all)
    max_entries: int | None = None  # cap every view to its last N entries
    max_samples: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # merged into every sample's metadata

    def check(self) -> None:
        check_strategy(self.strategy, self.window, self.types)


def sample_id(sample: Sample) -> str:
    return f"sample-{sample.index:06d}"


def iter_prompts(checkpoint: Checkpoint, options: PromptOptions) -> Iterator[dict[str, Any]]:
    """One record per sample: {task_id, messages: [system, user], system_prompt, metadata}."""
    options.check()
    samples = checkpoint.samples
    if options.max_samples is not None:
        samples = samples[:options.max_samples]
    system = build_system_prompt(checkpoint.system_prompt)
    for sample in samples:
        view = memory_view(checkpoint.entries, sample, options.strategy, window=options.window,
                           types=options.types, max_entries=options.max_entries, samples=checkpoint.samples)
        metadata = {
            **options.metadata,
            "sample_idx": sample.index,
            "span": [sample.start, sample.end],
            "strategy": options.strategy,
            "memory_entries": len(view),
            "feedback_failed": is_failure(sample.feedback.content),
            "episode": checkpoint.folder.name,
            "snapshot": checkpoint.snapshot.name,
        }
        yield {
            "task_id": sample_id(sample),
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": build_user_prompt(view, sample.observation.text)}],
            "system_prompt": system,
            "metadata": metadata,
        }
