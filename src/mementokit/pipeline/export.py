"""`memento pipeline export OUT --to DIR`: a run's results as an OpenMementos-layout dataset.

    DIR/data/train-00000-of-0000N.parquet   problem, response, domain, source, difficulty   (config `default`)
    DIR/full/train-00000-of-0000N.parquet   the same + sentences, blocks (INCLUSIVE [start, end]), block_summaries
    DIR/README.md                           a dataset card whose YAML `configs:` section names both

`datasets.load_dataset(DIR)` (and `name="full"`) and `memento analyze DIR` read it back. Rows are ordered by
task_id, so an export of the same results is the same files; every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mementokit.errors import InputError
from mementokit.jsonl import write_text_atomic
from mementokit.pipeline.assemble import openmementos_row
from mementokit.pipeline.ledger import OutputFolder
from mementokit.pipeline.report import build_report

__all__ = ["export_dataset"]

CONFIG_DIRS = {"default": "data", "full": "full"}


def _schema(config: str):
    import pyarrow as pa

    columns = [
        ("problem", pa.string()),
        ("response", pa.string()),
        ("domain", pa.string()),
        ("source", pa.string()),
        ("difficulty", pa.int64()),
    ]
    if config == "full":
        columns += [
            ("sentences", pa.list_(pa.string())),
            ("blocks", pa.list_(pa.list_(pa.int64()))),
            ("block_summaries", pa.list_(pa.string())),
        ]
    return pa.schema(columns)


def _difficulty(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _row(result: dict[str, Any], config: str) -> dict[str, Any]:
    row = openmementos_row(result, config)
    row["difficulty"] = _difficulty(row.get("difficulty"))
    row["domain"] = str(row.get("domain") or "")
    row["source"] = str(row.get("source") or "")
    return row


def _write_parquet(path: Path, rows: list[dict[str, Any]], config: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=_schema(config))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, max(1, len(items)), size):
        yield items[start : start + size]


CARD = """---
configs:
- config_name: default
  default: true
  data_files:
  - split: train
    path: data/train-*.parquet
- config_name: full
  data_files:
  - split: train
    path: full/train-*.parquet
license: {license}
---
# {title}

Memento-format reasoning traces made by `memento pipeline` (mementokit) from chains of thought, in the layout of
microsoft/OpenMementos: each `response` is the original reasoning cut into blocks, each followed by its memento.

- `default` (data/): problem, response, domain, source, difficulty
- `full` (full/): the same plus sentences, blocks (inclusive [start, end] sentence indices), block_summaries

| | |
|---|---|
| traces | {traces} |
| blocks | {blocks} |
| median blocks per trace | {median_blocks} |
| judge pass rate (first round / final) | {pass_first} / {pass_final} |
| median memento / block tokens | {compression} |
| teacher model(s) | {models} |
| LLM requests / prompt tokens (all runs) | {requests} / {prompt_tokens} |

Load: `datasets.load_dataset("{dir_name}")` or `datasets.load_dataset("{dir_name}", "full")`.
"""


def export_dataset(
    out_dir: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    *,
    rows_per_file: int = 50_000,
    title: str = "Memento traces",
    license: str = "other",
) -> dict[str, Any]:
    """Write the results of an output folder as an OpenMementos-layout dataset; returns counts and paths."""
    folder = OutputFolder(out_dir)
    if not folder.root.is_dir():
        raise InputError("no such folder", path=str(folder.root))
    results = sorted(folder.results(), key=lambda r: str(r.get("task_id", "")))
    if not results:
        raise InputError("no finished traces to export (results*.jsonl is empty or missing)", path=str(folder.root))
    for r in results:
        missing = [k for k in ("response", "sentences", "blocks", "block_summaries") if k not in r]
        if missing:
            raise InputError(
                f"a result lacks {missing}: is this a `memento pipeline run` folder?",
                path=str(folder.root),
                field=missing[0],
            )
    target = Path(dataset_dir)
    files: dict[str, list[str]] = {}
    for config, sub in CONFIG_DIRS.items():
        (target / sub).mkdir(parents=True, exist_ok=True)
        chunks = list(_chunks(results, max(1, rows_per_file)))
        names = [f"train-{i:05d}-of-{len(chunks):05d}.parquet" for i in range(len(chunks))]
        for name, chunk in zip(names, chunks):
            _write_parquet(target / sub / name, [_row(r, config) for r in chunk], config)
        for stale in (target / sub).glob("train-*.parquet"):  # from an earlier export with another file count
            if stale.name not in names:
                stale.unlink()
        files[config] = [str(target / sub / n) for n in names]
    unreadable = sum(
        1 for r in results if r.get("difficulty") not in (None, "") and _difficulty(r["difficulty"]) is None
    )
    report = build_report(folder.root)
    models = sorted({str(run.get("model")) for run in folder.runs() if run.get("model")})
    write_text_atomic(
        target / "README.md",
        CARD.format(
            license=license,
            title=title,
            traces=report["traces"],
            blocks=report["blocks"],
            median_blocks=report["median_blocks_per_trace"],
            pass_first=report["judge_pass_rate_first_round"],
            pass_final=report["judge_pass_rate_final"],
            compression=report["median_compression_tokens"],
            models=", ".join(models) or "unknown",
            requests=report["usage"]["requests"],
            prompt_tokens=report["usage"]["prompt_tokens"],
            dir_name=str(target),
        ),
    )
    return {
        "rows": len(results),
        "difficulty_not_an_integer": unreadable,  # written as null (OpenMementos' difficulty is int64)
        "files": files,
        "card": str(target / "README.md"),
        "out": str(target),
    }
