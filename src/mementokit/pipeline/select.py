"""Stage 1: read raw traces, map their fields, filter, and (optionally) sample by stratum.

Field mapping (an `io.FieldMap`, `PIPELINE_FIELDS`; override with `--field response=my_column`):
problem <- problem | prompt | question | input (or the first human turn of OpenThoughts `conversations`);
the trace (`response` in the map, `cot` in the row) <- cot | full_cot | response | reasoning | output (or the
first assistant / gpt turn). A row without a `task_id` gets one from a hash of its problem and trace, so reruns
recognise it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mementokit.errors import ConfigError, InputError
from mementokit.format.markers import DEFAULT_MARKERS
from mementokit.io.fields import MISSING, FieldMap

PROBLEM_FIELDS = ("problem", "prompt", "question", "input")
COT_FIELDS = ("cot", "full_cot", "response", "reasoning", "output")
PIPELINE_FIELDS = FieldMap(problem=PROBLEM_FIELDS, response=COT_FIELDS)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@dataclass(frozen=True)
class SelectConfig:
    require_complete_think: bool = True  # "<think>" ... "</think>" both present, in order
    drop_cjk: bool = False
    min_chars: int = 0
    max_chars: int | None = None
    stratify_by: tuple[str, ...] = ()  # e.g. ("domain",) or ("domain", "difficulty")
    per_stratum: int | None = None  # with stratify_by: sample this many rows per stratum (reservoir, seeded)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_chars < 0 or (self.max_chars is not None and self.max_chars < max(1, self.min_chars)):
            raise ConfigError(f"SelectConfig: need 0 <= min_chars <= max_chars, got {self.min_chars}, {self.max_chars}")
        if self.per_stratum is not None and self.per_stratum < 1:
            raise ConfigError(f"SelectConfig.per_stratum must be >= 1, got {self.per_stratum}")
        if self.per_stratum and not self.stratify_by:
            raise ConfigError("SelectConfig: per_stratum (--per-stratum) needs stratify_by (--stratify-by)")


def _turns(row: dict[str, Any]) -> tuple[str | None, str | None]:
    convo = row.get("conversations") or row.get("messages")
    if not isinstance(convo, list):
        return None, None
    problem = cot = None
    for turn in convo:
        if not isinstance(turn, dict):
            continue
        who = str(turn.get("from") or turn.get("role") or "").lower()
        text = turn.get("value") if "value" in turn else turn.get("content")
        if not isinstance(text, str):
            continue
        if problem is None and who in ("human", "user"):
            problem = text
        elif cot is None and who in ("gpt", "assistant", "model"):
            cot = text
    return problem, cot


def _text(fields: FieldMap, row: dict[str, Any], name: str, where: str | None, line: int | None) -> str | None:
    column, value = fields.find(row, name)
    if value is MISSING:
        return None
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__}", path=where, line=line, field=column)
    return value


def normalize_row(
    row: dict[str, Any], where: str | None = None, line: int | None = None, fields: FieldMap = PIPELINE_FIELDS
) -> dict[str, Any]:
    """A row with `task_id`, `problem`, `cot`, `domain`, `source` (and the other fields kept)."""
    problem = _text(fields, row, "problem", where, line)
    cot = _text(fields, row, "response", where, line)
    if problem is None or cot is None:
        p2, c2 = _turns(row)
        problem = problem if problem is not None else p2
        cot = cot if cot is not None else c2
    if cot is None:
        tried = ", ".join(fields.response)
        raise InputError(f"no trace field (tried {tried}, conversations)", path=where, line=line, field="cot")
    problem = problem or ""
    out = dict(row)
    out["problem"], out["cot"] = problem, cot
    task_id = row.get("task_id", row.get("id"))
    if task_id is None:
        task_id = "sha-" + hashlib.sha256((problem + "\x00" + cot).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    out["task_id"] = str(task_id)
    for name in ("domain", "source", "difficulty"):
        column, value = fields.find(row, name)
        if value is not MISSING:
            out[name] = value
    out.setdefault("domain", "")
    out.setdefault("source", "")
    return out


def rejection_reason(row: dict[str, Any], config: SelectConfig) -> str | None:
    """Why a normalised row is filtered out, or None when it is kept."""
    cot = row["cot"]
    if config.require_complete_think:
        start = cot.find(DEFAULT_MARKERS.think_start)
        if start < 0 or cot.find(DEFAULT_MARKERS.think_end, start) < 0:
            return "incomplete_think"
    if config.drop_cjk and (_CJK.search(cot) or _CJK.search(row.get("problem", ""))):
        return "cjk"
    if len(cot) < config.min_chars:
        return "too_short"
    if config.max_chars is not None and len(cot) > config.max_chars:
        return "too_long"
    return None


def select_rows(
    rows: Iterable[dict[str, Any]], config: SelectConfig = SelectConfig(), rejected: dict[str, int] | None = None
) -> Iterator[dict[str, Any]]:
    """Normalised rows that pass the filters; with per_stratum, a seeded sample of each stratum.

    Without sampling this streams; with it, it holds `per_stratum` rows per stratum (reservoir sampling).
    """
    rejected = rejected if rejected is not None else {}

    def kept() -> Iterator[dict[str, Any]]:
        for row in rows:
            reason = rejection_reason(row, config)
            if reason:
                rejected[reason] = rejected.get(reason, 0) + 1
                continue
            yield row

    if not config.per_stratum:
        yield from kept()
        return
    rng = random.Random(config.seed)
    reservoirs: dict[tuple, list[dict[str, Any]]] = {}
    seen: dict[tuple, int] = {}
    for row in kept():
        key = tuple(str(row.get(f, "")) for f in config.stratify_by)
        seen[key] = seen.get(key, 0) + 1
        box = reservoirs.setdefault(key, [])
        if len(box) < config.per_stratum:
            box.append(row)
        else:
            j = rng.randrange(seen[key])
            if j < config.per_stratum:
                box[j] = row
    for key in sorted(reservoirs):
        yield from reservoirs[key]


def read_traces(
    source: str,
    *,
    config: str = "default",
    split: str = "train",
    fields: FieldMap | Sequence[str] | None = None,
    skip_bad: bool = False,
    on_bad: Callable[[InputError], None] | None = None,
    stats: Any = None,
) -> Iterator[dict[str, Any]]:
    """Normalised rows from a JSONL / Parquet file, folder or hub id (mementokit.io.readers.iter_rows).

    `fields`: a FieldMap, or overrides of PIPELINE_FIELDS such as ["response=full_cot"]. With `skip_bad`, rows
    that cannot be read or mapped are skipped: unreadable ones counted in `stats` (an io.ReadStats), unmappable
    ones handed to `on_bad` (never silently).
    """
    from mementokit.io.readers import ReadStats, iter_rows

    field_map = fields if isinstance(fields, FieldMap) else PIPELINE_FIELDS.with_overrides(list(fields or ()))
    stats = stats if stats is not None else ReadStats()
    for row in iter_rows(source, config=config, split=split, skip_bad=skip_bad, stats=stats):
        try:
            yield normalize_row(row.data, where=row.path, line=row.line, fields=field_map)
        except InputError as exc:
            if not skip_bad:
                raise
            stats.rows_skipped += 1
            stats.skipped_by_kind["unmappable"] += 1
            if len(stats.examples) < stats.max_examples:
                stats.examples.append(str(exc))
            if on_bad is not None:
                on_bad(exc)


def select_file(
    source: str,
    out_path: str,
    config: SelectConfig = SelectConfig(),
    *,
    fields: FieldMap | Sequence[str] | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Stage 1 over a file: read, map, filter, sample, and write the kept rows as JSONL (atomically).

    Returns {"rows", "rejected" (by reason), "bad_rows", "out"}.
    """
    from mementokit.io.readers import ReadStats
    from mementokit.jsonl import write_jsonl_atomic

    rejected: dict[str, int] = {}
    stats = ReadStats()
    rows = read_traces(source, fields=fields, skip_bad=skip_bad, stats=stats)
    count = write_jsonl_atomic(out_path, select_rows(rows, config, rejected))
    return {"rows": count, "rejected": rejected, "bad_rows": stats.rows_skipped, "out": str(out_path)}
