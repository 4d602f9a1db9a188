"""`memento kv`: simulate KV-cache memory of traces, vanilla vs memento (a thin layer over mementokit.kv)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.table import Table

from mementokit.blocks.tokens import load_hf_tokenizer as load_tokenizer
from mementokit.cli.console import progress_bar, stderr, stdout
from mementokit.errors import ConfigError

DEFAULT_BLOCK_MASKING = '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}'


def load_memory_model(model_config: str | None, preset_name: str | None, kv_dtype: str | None):
    from mementokit.kv import kv_memory_from_config, preset

    if (model_config is None) == (preset_name is None):
        raise ConfigError("give exactly one of --model-config (a config.json) or --preset (qwen3-8b, qwen3-32b, phi-4)")
    if preset_name is not None:
        return preset(preset_name)
    return kv_memory_from_config(model_config, kv_dtype=kv_dtype)


def read_traces(source: str, *, limit: int | None, dataset_config: str, split: str, fields: list[str] | None,
                skip_bad: bool) -> Iterator[Any]:
    """Traces through mementokit.io (files, folders, hub layouts), each with problem / response / domain / origin."""
    from mementokit.io import FieldMap, iter_traces

    field_map = FieldMap().with_overrides(fields) if fields else None
    return iter_traces(source, config=dataset_config, split=split, limit=limit, field_map=field_map,
                       skip_bad=skip_bad)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}"


def aggregates_table(aggregates: dict) -> Table:
    table = Table(title="memento / vanilla KV cache", title_justify="left")
    for column in ("group", "traces", "median tokens", "peak ratio median", "peak ratio p90",
                   "AUC ratio median", "AUC ratio p90"):
        table.add_column(column, justify="left" if column == "group" else "right")
    groups = [("all", aggregates["all"])] + list(aggregates["by_domain"].items())
    for name, group in groups:
        table.add_row(name, _fmt(group["traces"]), _fmt(group["tokens"]["median"]),
                      _fmt(group["peak_ratio"]["median"]), _fmt(group["peak_ratio"]["p90"]),
                      _fmt(group["auc_ratio"]["median"]), _fmt(group["auc_ratio"]["p90"]))
    return table


def traces_table(results) -> Table:
    table = Table(title="per trace", title_justify="left")
    for column in ("#", "domain", "tokens", "blocks", "vanilla peak", "memento peak", "peak GB v/m",
                   "peak ratio", "AUC ratio"):
        table.add_column(column, justify="right")
    for r in results:
        gb = "-" if r.vanilla.peak_gb is None else f"{r.vanilla.peak_gb:.3f} / {r.memento.peak_gb:.3f}"
        table.add_row(str(r.index), r.domain or "-", _fmt(r.tokens), _fmt(r.blocks_completed),
                      _fmt(r.vanilla.peak_tokens), _fmt(r.memento.peak_tokens), gb,
                      _fmt(r.peak_ratio), _fmt(r.auc_ratio))
    return table


def register(app: typer.Typer) -> None:
    @app.command("kv")
    def kv(
        source: Annotated[str, typer.Argument(metavar="INPUT", help="JSONL / JSON / Parquet file, dataset folder or hub name with Memento responses.", show_default=False)],
        tokenizer: Annotated[str, typer.Option("--tokenizer", "-t", help="Tokenizer folder (or hub name). The four block markers are added if missing.", show_default=False)],
        model_config: Annotated[Optional[str], typer.Option("--model-config", help="Hugging Face config.json (or its folder) for bytes per token.", show_default=False)] = None,
        preset_name: Annotated[Optional[str], typer.Option("--preset", help="Bytes per token of a known model: qwen3-8b, qwen3-32b, phi-4.", show_default=False)] = None,
        block_masking: Annotated[str, typer.Option("--block-masking", help="Block-masking config: JSON text or file (the vLLM overlay's keys).")] = DEFAULT_BLOCK_MASKING,
        with_prompt: Annotated[bool, typer.Option("--with-prompt", help="Replay the prompt too (chat template, ChatML fallback); the assistant gate then applies.")] = False,
        limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most this many traces.", min=0)] = None,
        plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG: the KV curve of one trace (vanilla vs memento), or ratio distributions for several.", show_default=False)] = None,
        plot_trace: Annotated[Optional[int], typer.Option("--plot-trace", help="Plot the curve of the trace with this index even when there are several.", min=0)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
        kv_dtype: Annotated[Optional[str], typer.Option("--kv-dtype", help="KV cache dtype when it differs from the model's (e.g. fp8).", show_default=False)] = None,
        dataset_config: Annotated[str, typer.Option("--config", help="Dataset config: default or full.")] = "default",
        split: Annotated[str, typer.Option("--split", help="Dataset split.")] = "train",
        fields: Annotated[Optional[list[str]], typer.Option("--field", help="Map a field: OURS=THEIRS, e.g. response=cot (repeatable).")] = None,
        skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip bad rows instead of stopping.")] = False,
    ) -> None:
        """Simulate the KV cache of Memento traces: occupancy after every token, vanilla vs block-masked.

        Only the response is replayed unless --with-prompt. Per trace: peak, mean and area under the curve, in tokens and bytes; over the data set: median and p90 of the memento/vanilla ratios, by domain.

        Example: memento kv traces.jsonl --tokenizer ./qwen3-tokenizer --preset qwen3-8b --plot kv.png --json
        """
        from mementokit.blocks import BlockMaskingConfig
        from mementokit.kv import KVSimulator, aggregate

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = BlockMaskingConfig.load(block_masking)
        for warning in caught:
            stderr.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
        memory = load_memory_model(model_config, preset_name, kv_dtype)
        simulator = KVSimulator(load_tokenizer(tokenizer), config=config, memory=memory, with_prompt=with_prompt)
        keep_curves_for = {plot_trace if plot_trace is not None else 0} if plot else set()
        traces = read_traces(source, limit=limit, dataset_config=dataset_config, split=split, fields=fields,
                             skip_bad=skip_bad)
        results = []
        with progress_bar(limit, "replaying") as advance:
            for result in simulator.simulate_traces(traces, keep_curves_for=keep_curves_for):
                results.append(result)
                advance(1)
        summary = aggregate(results)
        plot_path = _plot(results, plot, plot_trace) if plot else None
        if as_json:
            report = {
                "bytes_per_token": memory.bytes_per_token,
                "gb_bytes": 1024**3,
                "model": memory.to_dict(),
                "block_masking": config.to_dict(),
                "tokenizer": tokenizer,
                "markers_added": simulator.markers_added,
                "with_prompt": with_prompt,
                "assistant_gating": simulator.assistant_gating,
                "traces": [r.to_dict() for r in results],
                "aggregates": summary,
                "plot": None if plot_path is None else str(plot_path),
            }
            print(json.dumps(report, ensure_ascii=False))
            return
        stdout.print(f"{len(results)} traces, {memory.name}: {memory.bytes_per_token:,} bytes per token"
                     + (f" (+{simulator.markers_added} marker tokens added to the tokenizer)" if simulator.markers_added else ""))
        if len(results) <= 20:
            stdout.print(traces_table(results))
        stdout.print(aggregates_table(summary))
        if plot_path is not None:
            stdout.print(f"plot written to {plot_path}")


def _plot(results, path: Path, plot_trace: int | None) -> Path:
    from mementokit.kv.plots import plot_kv_curve, plot_kv_distributions

    if plot_trace is not None or len(results) == 1:
        wanted = plot_trace if plot_trace is not None else results[0].index if results else 0
        chosen = next((r for r in results if r.index == wanted), None)
        if chosen is None:
            raise ConfigError(f"--plot-trace {wanted}: only {len(results)} traces were read")
        return plot_kv_curve(chosen, path)
    return plot_kv_distributions(results, path)
