"""`memento kv`: simulate KV-cache memory of traces, vanilla vs memento (a thin layer over mementokit.kv)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mementokit.cli.console import progress_bar, stdout, table, write_json
from mementokit.cli.options import (
    DEFAULT_BLOCK_MASKING,
    BlockMaskingOpt,
    ConfigOpt,
    FieldOpt,
    JsonOpt,
    LimitOpt,
    RequiredInputArg,
    SkipBadOpt,
    SplitOpt,
    TokenizerOpt,
    load_block_masking_config,
    open_traces,
)
from mementokit.errors import ConfigError

GIB = 2**30


def load_memory_model(model_config: str | None, preset_name: str | None, kv_dtype: str | None):
    from mementokit.kv import kv_memory_from_config, preset

    if (model_config is None) == (preset_name is None):
        raise ConfigError("give exactly one of --model-config (a config.json) or --preset (qwen3-8b, qwen3-32b, phi-4)")
    if preset_name is not None:
        return preset(preset_name)
    return kv_memory_from_config(model_config, kv_dtype=kv_dtype)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}"


def aggregates_table(aggregates: dict):
    """Seven columns with two-line headers: whole at 80 columns."""
    out = table("memento / vanilla KV cache", ["group", "traces", "median\ntokens", "peak ratio\nmedian",
                                                "peak ratio\np90", "AUC ratio\nmedian", "AUC ratio\np90"])
    groups = [("all", aggregates["all"])] + list(aggregates["by_domain"].items())
    for name, group in groups:
        out.add_row(name, _fmt(group["traces"]), _fmt(group["tokens"]["median"]),
                    _fmt(group["peak_ratio"]["median"]), _fmt(group["peak_ratio"]["p90"]),
                    _fmt(group["auc_ratio"]["median"]), _fmt(group["auc_ratio"]["p90"]))
    return out


def traces_table(results):
    """Per trace, eight columns: whole at 80 columns (bytes in GiB when a model is known)."""
    in_bytes = bool(results) and results[0].vanilla.peak_bytes is not None
    peak = ["vanilla\npeak GiB", "memento\npeak GiB"] if in_bytes else ["vanilla\npeak", "memento\npeak"]
    out = table("per trace", ["#", "domain", "tokens", "blocks", *peak, "peak\nratio", "AUC\nratio"],
                first_left=False)
    for r in results:
        peaks = ([f"{r.vanilla.peak_bytes / GIB:.3f}", f"{r.memento.peak_bytes / GIB:.3f}"] if in_bytes
                 else [_fmt(r.vanilla.peak_tokens), _fmt(r.memento.peak_tokens)])
        out.add_row(str(r.index), r.domain or "-", _fmt(r.tokens), _fmt(r.blocks_completed), *peaks,
                    _fmt(r.peak_ratio), _fmt(r.auc_ratio))
    return out


ModelConfigOpt = Annotated[str | None, typer.Option(
    "--model-config", metavar="PATH", show_default=False,
    help="Hugging Face config.json (or its folder) for bytes per token.")]
PresetNameOpt = Annotated[str | None, typer.Option(
    "--preset", metavar="NAME", show_default=False,
    help="Bytes per token of a known model: qwen3-8b, qwen3-32b, phi-4.")]
WithPromptOpt = Annotated[bool, typer.Option(
    "--with-prompt",
    help="Replay the prompt too (chat template, ChatML fallback); the assistant gate then applies.")]
PlotOpt = Annotated[Path | None, typer.Option(
    "--plot", metavar="PNG", show_default=False,
    help="The KV curve of one trace (vanilla vs memento), or ratio distributions for several.")]
PlotTraceOpt = Annotated[int | None, typer.Option(
    "--plot-trace", metavar="INDEX", min=0,
    help="Plot the curve of the trace with this index even when there are several.")]
KvDtypeOpt = Annotated[str | None, typer.Option(
    "--kv-dtype", metavar="DTYPE", show_default=False,
    help="KV cache dtype when it differs from the model's (e.g. fp8).")]


def kv(
    source: RequiredInputArg,
    tokenizer: TokenizerOpt,
    model_config: ModelConfigOpt = None,
    preset_name: PresetNameOpt = None,
    block_masking: BlockMaskingOpt = DEFAULT_BLOCK_MASKING,
    with_prompt: WithPromptOpt = False,
    limit: LimitOpt = None,
    plot: PlotOpt = None,
    plot_trace: PlotTraceOpt = None,
    as_json: JsonOpt = False,
    kv_dtype: KvDtypeOpt = None,
    dataset_config: ConfigOpt = "default",
    split: SplitOpt = "train",
    fields: FieldOpt = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Simulate the KV cache of Memento traces: occupancy after every token, vanilla vs block-masked.

    Only the response is replayed unless --with-prompt. Per trace: peak, mean and area under the curve, in
    tokens and bytes; over the data set: median and p90 of the memento/vanilla ratios, by domain.

    Examples:

        memento kv tests/data/memento_trace_aime2025_p5.json --tokenizer demo-model --preset qwen3-8b --plot kv.png

        memento kv traces.jsonl --tokenizer ./qwen3-tokenizer --model-config ./qwen3-8b/config.json --json
    """
    from mementokit.hf import load_hf_tokenizer
    from mementokit.kv import KVSimulator, aggregate

    config = load_block_masking_config(block_masking)
    memory = load_memory_model(model_config, preset_name, kv_dtype)
    simulator = KVSimulator(load_hf_tokenizer(tokenizer), config=config, memory=memory, with_prompt=with_prompt)
    keep_curves_for = {plot_trace if plot_trace is not None else 0} if plot else set()
    traces = open_traces(source, limit=limit, config=dataset_config, split=split, fields=fields,
                         skip_bad=skip_bad)
    results = []
    with progress_bar(limit, "replaying") as advance:
        for result in simulator.simulate_traces(traces, keep_curves_for=keep_curves_for):
            results.append(result)
            advance(1)
    summary = aggregate(results)
    plot_path = _plot(results, plot, plot_trace) if plot else None
    if as_json:
        write_json({
            "bytes_per_token": memory.bytes_per_token, "gb_bytes": GIB, "model": memory.to_dict(),
            "block_masking": config.to_dict(), "tokenizer": tokenizer, "markers_added": simulator.markers_added,
            "with_prompt": with_prompt, "assistant_gating": simulator.assistant_gating,
            "traces": [r.to_dict() for r in results], "aggregates": summary,
            "plot": None if plot_path is None else str(plot_path),
        })
        return
    _print_kv(results, summary, memory, simulator.markers_added, plot_path)


def _print_kv(results, summary: dict, memory, markers_added: int, plot_path: Path | None) -> None:
    stdout.print(f"{len(results)} traces, {memory.name}: {memory.bytes_per_token:,} bytes per token"
                 + (f" (+{markers_added} marker tokens added to the tokenizer)" if markers_added else ""),
                 highlight=False)
    if len(results) <= 20:
        stdout.print(traces_table(results))
    stdout.print(aggregates_table(summary))
    if plot_path is not None:
        stdout.print(f"plot written to {plot_path}", highlight=False)



def _plot(results, path: Path, plot_trace: int | None) -> Path:
    from mementokit.kv.plots import plot_kv_curve, plot_kv_distributions

    if plot_trace is not None or len(results) == 1:
        wanted = plot_trace if plot_trace is not None else results[0].index if results else 0
        chosen = next((r for r in results if r.index == wanted), None)
        if chosen is None:
            raise ConfigError(f"--plot-trace {wanted}: only {len(results)} traces were read")
        return plot_kv_curve(chosen, path)
    return plot_kv_distributions(results, path)


def register(app: typer.Typer) -> None:
    app.command("kv")(kv)
