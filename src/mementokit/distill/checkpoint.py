"""A HistoryAgent checkpoint: one episode folder with its agent config and memory snapshots.

    ep_000200/
        agent.json          {"agent_config": {"system_prompt": ..., "history_k": ...}, ...}
        runtime.json
        memory_1.jsonl ... memory_12.jsonl   one line per history entry: {"type": ..., "content": ...}

The latest snapshot (highest NUMBER in its name, not the last name in text order: memory_12 beats memory_9)
holds the whole history. The samples are its Observation -> Action -> Feedback triples, in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mementokit.errors import InputError
from mementokit.jsonl import read_jsonl

ENTRY_TYPES = ("Observation", "Action", "Feedback")
_SNAPSHOT = re.compile(r"^memory_(\d+)\.jsonl$")


@dataclass(frozen=True)
class Entry:
    type: str  # one of ENTRY_TYPES
    content: Any  # a string, or any JSON value (rendered as JSON in prompts)
    line: int = 0  # line in the snapshot, for messages

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else json.dumps(self.content, ensure_ascii=False)


@dataclass(frozen=True)
class Sample:
    """One Observation -> Action -> Feedback triple; it spans history entries [start, end] (inclusive)."""

    index: int
    start: int
    end: int
    observation: Entry
    action: Entry
    feedback: Entry


@dataclass
class Checkpoint:
    folder: Path
    snapshot: Path
    entries: list[Entry]
    system_prompt: str
    agent_config: dict[str, Any] = field(default_factory=dict)
    skipped_lines: int = 0  # bad snapshot lines skipped under skip_bad

    @property
    def samples(self) -> list[Sample]:
        return iter_samples(self.entries)


def snapshot_number(path: Path) -> int | None:
    match = _SNAPSHOT.match(path.name)
    return int(match.group(1)) if match else None


def latest_snapshot(folder: str | Path) -> Path:
    """The memory_{N}.jsonl with the highest N (numeric order); an InputError naming the folder when none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such checkpoint folder" if not folder.exists() else "not a folder", path=str(folder))
    found = [(n, p) for p in folder.iterdir() if (n := snapshot_number(p)) is not None and p.is_file()]
    if not found:
        raise InputError("No memory snapshots found (expected memory_<N>.jsonl files; point at one episode folder, "
                         "e.g. ep_000200)", path=str(folder))
    return max(found)[1]


def read_entries(snapshot: str | Path, *, skip_bad: bool = False,
                 on_bad: Callable[[InputError], None] | None = None) -> list[Entry]:
    """The history entries of one snapshot; a line that is not JSON or has a bad type/content is an InputError."""
    entries: list[Entry] = []
    for line_no, record in read_jsonl(snapshot, skip_bad=skip_bad, on_bad=on_bad):
        kind = record.get("type")
        error = None
        if kind not in ENTRY_TYPES:
            error = InputError(f"unknown entry type {kind!r} (expected one of {', '.join(ENTRY_TYPES)})",
                               path=str(snapshot), line=line_no, field="type")
        elif "content" not in record or record["content"] is None:
            error = InputError("entry has no content", path=str(snapshot), line=line_no, field="content")
        if error is not None:
            if not skip_bad:
                raise error
            if on_bad is not None:
                on_bad(error)
            continue
        entries.append(Entry(type=kind, content=record["content"], line=line_no))
    return entries


def iter_samples(entries: list[Entry]) -> list[Sample]:
    """The Observation -> Action -> Feedback triples, in history order (other entries stay memory only)."""
    samples: list[Sample] = []
    i = 0
    while i + 2 < len(entries):
        kinds = tuple(e.type for e in entries[i:i + 3])
        if kinds == ENTRY_TYPES:
            samples.append(Sample(len(samples), i, i + 2, *entries[i:i + 3]))
            i += 3
        else:
            i += 1
    return samples


def _agent_config(folder: Path) -> dict[str, Any]:
    path = folder / "agent.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path=str(path)) from None
    config = data.get("agent_config", data) if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise InputError("expected an object with an 'agent_config' object", path=str(path), field="agent_config")
    return config


def resolve_system_prompt(override: str | None, agent_config: dict[str, Any], folder: Path) -> str:
    """The base system prompt: the override (text, or the path of a file holding it), else agent.json's."""
    if override is not None:
        candidate = Path(override)
        if len(override) < 4096 and "\n" not in override and candidate.is_file():
            return candidate.read_text(encoding="utf-8")
        return override
    prompt = agent_config.get("system_prompt")
    if prompt is None:
        return ""
    if not isinstance(prompt, str):
        raise InputError("system_prompt must be a string", path=str(folder / "agent.json"), field="system_prompt")
    return prompt


def load_checkpoint(folder: str | Path, *, system_prompt: str | None = None, skip_bad: bool = False,
                    on_bad: Callable[[InputError], None] | None = None) -> Checkpoint:
    """Read an episode folder: its latest snapshot's entries and the agent's system prompt."""
    folder = Path(folder)
    snapshot = latest_snapshot(folder)
    skipped = 0

    def count(error: InputError) -> None:
        nonlocal skipped
        skipped += 1
        if on_bad is not None:
            on_bad(error)

    entries = read_entries(snapshot, skip_bad=skip_bad, on_bad=count)
    config = _agent_config(folder)
    return Checkpoint(folder=folder, snapshot=snapshot, entries=entries,
                      system_prompt=resolve_system_prompt(system_prompt, config, folder), agent_config=config,
                      skipped_lines=skipped)
