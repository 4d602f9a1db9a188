"""Write tokenized SFT examples in the forms trainers read, streaming, with a dataset card.

    result = export_sft_dataset(sft.tokenize(examples), "out/", metadata=sft.metadata(), stats=sft.stats,
                                tokenizer=tokenizer)

Layout of the output folder (written under a temporary sibling, then renamed into place, so a crash never
leaves a half-written dataset that looks whole):

    README.md                          dataset card: counts, token statistics, options used, how to load
    memento_sft.json                   the same as JSON (what `memento train` checks the stage and mask against)
    data/train-00000-of-00001.parquet  Parquet in the hub layout (datasets.load_dataset("parquet", ...))
    arrow/                             datasets' save_to_disk layout (datasets.load_from_disk)
    messages.jsonl                     {"messages": [...]} per kept example, for other trainers
    tokenizer/                         the tokenizer the ids belong to (block markers added)

Rows: input_ids, labels (-100 on the prompt), mask_spans (stage 2: [key_start, key_stop, trigger(, at)],
keys key_start..key_stop-1 hidden from queries >= trigger), num_tokens, prompt_tokens, truncated_tokens,
ends_inside_block, blocks_completed, domain, source, index.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mementokit.errors import ConfigError, InputError
from mementokit.sft.tokenize import SFTExample, TokenizeStats

METADATA_FILE = "memento_sft.json"
PARQUET_FILE = "data/train-00000-of-00001.parquet"
ARROW_DIR = "arrow"
MESSAGES_FILE = "messages.jsonl"
TOKENIZER_DIR = "tokenizer"
FORMATS = ("arrow", "parquet", "jsonl")
FORMAT_VERSION = 1


def row_schema(with_mask: bool) -> pa.Schema:
    columns = [
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("labels", pa.list_(pa.int32())),
    ]
    if with_mask:
        columns.append(pa.field("mask_spans", pa.list_(pa.list_(pa.int32()))))
    columns += [
        pa.field("num_tokens", pa.int32()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("truncated_tokens", pa.int32()),
        pa.field("ends_inside_block", pa.bool_()),
        pa.field("blocks_completed", pa.int32()),
        pa.field("domain", pa.string()),
        pa.field("source", pa.string()),
        pa.field("index", pa.int64()),
    ]
    return pa.schema(columns)


@dataclass
class ExportResult:
    out_dir: Path
    examples: int
    files: dict[str, str]
    metadata: dict[str, Any]


class _Writers:
    """The streaming writers of one export: Parquet, an Arrow stream (becomes save_to_disk), JSONL."""

    def __init__(self, folder: Path, schema: pa.Schema, formats: set[str]):
        self.schema = schema
        self.parquet = self.arrow = self.jsonl = None
        if "parquet" in formats:
            (folder / PARQUET_FILE).parent.mkdir(parents=True)
            self.parquet = pq.ParquetWriter(folder / PARQUET_FILE, schema)
        if "arrow" in formats:
            self.arrow_path = folder / "rows.arrow"
            self._arrow_sink = pa.OSFile(str(self.arrow_path), "wb")
            self.arrow = pa.ipc.new_stream(self._arrow_sink, schema)
        if "jsonl" in formats:
            self.jsonl = open(folder / MESSAGES_FILE, "w", encoding="utf-8")

    def write(self, examples: list[SFTExample]) -> None:
        if not examples:
            return
        table = pa.Table.from_pylist([e.to_row() for e in examples], schema=self.schema)
        if self.parquet is not None:
            self.parquet.write_table(table)
        if self.arrow is not None:
            self.arrow.write_table(table)
        if self.jsonl is not None:
            for e in examples:
                self.jsonl.write(json.dumps({"messages": e.messages, "domain": e.domain, "source": e.source},
                                            ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.arrow is not None:
            self.arrow.close()
            self._arrow_sink.close()
        if self.jsonl is not None:
            self.jsonl.close()


def export_sft_dataset(examples: Iterable[SFTExample], out_dir: str | os.PathLike, *, metadata: dict[str, Any],
                       stats: TokenizeStats | None = None, tokenizer=None, formats: Iterable[str] = FORMATS,
                       overwrite: bool = False, rows_per_write: int = 256,
                       progress: Callable[[int], None] | None = None) -> ExportResult:
    """Stream `examples` into `out_dir` (see the module docstring); returns what was written.

    `stats` (the SFTTokenizer's, filled while the examples stream) goes into the card; `metadata` records the
    options (stage, mask_delimiters, keep_last_n_blocks, ...) so training and serving can check them.
    """
    formats = set(formats)
    unknown = formats - set(FORMATS)
    if unknown or not formats:
        raise ConfigError(f"export formats must be some of {FORMATS}, got {sorted(formats) or 'none'}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError("output folder exists and is not empty (use overwrite)", path=str(out))
        if not (out / METADATA_FILE).is_file():
            # overwrite replaces an earlier export, never a folder that merely happens to be named.
            raise InputError(f"will not overwrite a folder that is not an SFT export (no {METADATA_FILE})",
                             path=str(out))
    work = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        writers = _Writers(work, row_schema(with_mask=metadata.get("stage") == 2), formats)
        count = 0
        pending: list[SFTExample] = []
        try:
            for example in examples:
                pending.append(example)
                count += 1
                if progress is not None:
                    progress(1)
                if len(pending) >= rows_per_write:
                    writers.write(pending)
                    pending = []
            writers.write(pending)
        finally:
            writers.close()
        files: dict[str, str] = {}
        if "parquet" in formats:
            files["parquet"] = PARQUET_FILE
        if "jsonl" in formats:
            files["jsonl"] = MESSAGES_FILE
        if "arrow" in formats:
            if count:
                _save_to_disk(writers.arrow_path, work / ARROW_DIR)
                files["arrow"] = ARROW_DIR
            else:
                # datasets (5.2) saves an empty dataset that load_from_disk cannot read back (IndexError in
                # concat_tables); the Parquet file and the card still say what happened.
                writers.arrow_path.unlink()
        if tokenizer is not None:
            tokenizer.save_pretrained(work / TOKENIZER_DIR)
            files["tokenizer"] = TOKENIZER_DIR
        full_metadata = {"format_version": FORMAT_VERSION, **metadata,
                         "statistics": stats.as_dict() if stats is not None else {"examples": count},
                         "files": files}
        (work / METADATA_FILE).write_text(json.dumps(full_metadata, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        (work / "README.md").write_text(dataset_card(full_metadata), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportResult(out_dir=out, examples=count, files=files, metadata=full_metadata)


def _save_to_disk(arrow_stream: Path, target: Path) -> None:
    """The Arrow stream file as a datasets save_to_disk folder (memory-mapped read, then one copy)."""
    import datasets

    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    if bars_were_on:  # its own bar would interleave with the caller's
        datasets.disable_progress_bars()
    try:
        _copy_into_saved_dataset(datasets, arrow_stream, target)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    arrow_stream.unlink()


def _copy_into_saved_dataset(datasets, arrow_stream: Path, target: Path) -> None:
    datasets.Dataset.from_file(str(arrow_stream)).save_to_disk(str(target))


def load_sft_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """memento_sft.json of an export folder (or of the folder holding a file), None when there is none."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        candidate = folder / METADATA_FILE
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON: {exc.msg}", path=str(candidate), line=exc.lineno) from None
    return None


def load_sft_dataset(path: str | os.PathLike):
    """(datasets.Dataset, metadata or None) from an export folder, a save_to_disk folder or Parquet file(s)."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path=str(path))
    metadata = load_sft_metadata(path)
    if path.is_dir() and (path / ARROW_DIR / "state.json").is_file():
        dataset = datasets.load_from_disk(str(path / ARROW_DIR))
    elif path.is_dir() and (path / "state.json").is_file():
        dataset = datasets.load_from_disk(str(path))
    else:
        files = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
        if not files or any(f.suffix != ".parquet" for f in files):
            raise InputError("not an SFT dataset: expected a `memento sft` output folder, a save_to_disk folder "
                             "or Parquet files", path=str(path))
        dataset = datasets.Dataset(pa.concat_tables([pq.read_table(f) for f in files]))
    missing = {"input_ids", "labels"} - set(dataset.column_names)
    if missing:
        raise InputError(f"SFT dataset lacks the column(s) {sorted(missing)}", path=str(path))
    return dataset, metadata


def dataset_card(metadata: dict[str, Any]) -> str:
    """A Hugging Face dataset card (YAML header + Markdown) for an export."""
    stats = metadata.get("statistics", {})
    per = stats.get("tokens_per_example", {})
    stage = metadata.get("stage")
    masking = metadata.get("block_masking")

    def fmt(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = [
        "---",
        "tags:",
        "- memento",
        "- sft",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {PARQUET_FILE.replace('00000-of-00001', '*')}",
        "---",
        "",
        f"# Memento SFT data (stage {stage}: {'memento attention' if stage == 2 else 'full causal attention'})",
        "",
        ("Made by `memento sft` (mementokit). Each row is one conversation (user problem, assistant Memento "
        "response) tokenized for causal-LM training: `labels` is -100 on the prompt and the token id on every "
        "completion token, special tokens included."),
        "",
        "## Counts",
        "",
        "| | |",
        "| --- | --- |",
        f"| examples | {fmt(stats.get('examples'))} |",
        f"| traces read | {fmt(stats.get('examples_in'))} |",
        f"| dropped: over max length (overflow=drop) | {fmt(stats.get('dropped_overflow'))} |",
        f"| dropped: prompt alone fills max length | {fmt(stats.get('dropped_prompt_too_long'))} |",
        f"| truncated examples | {fmt(stats.get('truncated_examples'))} |",
        f"| truncated tokens | {fmt(stats.get('truncated_tokens'))} |",
        f"| truncated inside a block or memento | {fmt(stats.get('truncated_inside_block'))} |",
        f"| domains | {', '.join(f'{k} {v:,}' for k, v in (stats.get('domains') or {}).items()) or '-'} |",
        "",
        "## Tokens",
        "",
        "| | |",
        "| --- | --- |",
        f"| total | {fmt(stats.get('tokens'))} |",
        f"| prompt (label -100) | {fmt(stats.get('prompt_tokens'))} |",
        f"| completion (trained on) | {fmt(stats.get('label_tokens'))} |",
        (f"| per example: mean / median / p90 / max | {fmt(per.get('mean'))} / {fmt(per.get('median'))} / "
        f"{fmt(per.get('p90'))} / {fmt(per.get('max'))} |"),
        f"| completed blocks | {fmt(stats.get('blocks_completed'))} |",
    ]
    if stage == 2:
        lines.append(f"| causal attention pairs hidden by the memento mask | "
                     f"{100 * stats.get('hidden_attention_fraction', 0.0):.1f}% |")
    lines += [
        "",
        "## Options",
        "",
        f"- stage: {stage}",
        f"- max length: {fmt(metadata.get('max_length'))} (overflow: {metadata.get('overflow')})",
        f"- chat format: {metadata.get('chat_template')} (assistant turn rendered {metadata.get('render_mode')})",
        (f"- block markers added to the tokenizer: {metadata.get('markers_added')}; ids "
        f"{json.dumps(metadata.get('marker_ids'))}"),
        f"- assistant gating: {metadata.get('assistant_gating')}",
    ]
    if stage == 2 and masking:
        lines += [
            f"- mask_delimiters: {masking.get('mask_delimiters')} (serve the model with the same value)",
            f"- keep_last_n_blocks: {masking.get('keep_last_n_blocks')}",
            "",
            "Block-masking config (the vLLM overlay's keys; serve the trained model with this file):",
            "",
            "```json",
            json.dumps(masking, indent=2),
            "```",
            "",
            ("`mask_spans` holds the stage-2 mask compactly: each `[key_start, key_stop, trigger]` hides keys "
            "key_start..key_stop-1 from every query at position >= trigger (restart mode adds a fourth value, the "
            "summary end that makes the eviction happen). `mementokit.sft.MementoCollator` "
            "expands it into the 4-D masks transformers models take."),
        ]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import datasets",
        f"ds = datasets.load_from_disk('{ARROW_DIR}')                 # or:",
        f"ds = datasets.load_dataset('parquet', data_files='{PARQUET_FILE}', split='train')",
        "```",
        "",
        (f"`{MESSAGES_FILE}` holds the same conversations as chat messages for other trainers, and `{TOKENIZER_DIR}/` "
        "the tokenizer the ids belong to."),
        "",
    ]
    return "\n".join(lines)
