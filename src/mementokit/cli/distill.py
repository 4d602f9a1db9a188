"""`memento distill`: memory distillation datasets (a thin layer over mementokit.distill)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mementokit.cli.console import progress_bar, stderr, stdout
from mementokit.errors import MementoError

distill_app = typer.Typer(
    name="distill",
    help="Memory distillation: agent memory snapshots -> teacher logprobs -> cartridges parquet -> a student.\n\n"
    "Examples:\n\n"
    "memento distill prompts ep_000200 --strategy rolling_window --window 6 --out prompts.jsonl\n\n"
    "memento distill generate ep_000200 --model teacher --base-url http://127.0.0.1:8000/v1 --out gen/",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

Strategy = Annotated[str, typer.Option("--strategy", help="exclude_current | full_memory | rolling_window | "
                                                          "failure_focus.")]
Window = Annotated[int | None, typer.Option("--window", min=1, help="rolling_window: entries before the sample.",
                                               show_default=False)]
Types = Annotated[str | None, typer.Option("--types", help="Entry types shown, e.g. Observation,Feedback.",
                                              show_default=False)]
MaxEntries = Annotated[int | None, typer.Option("--max-entries", min=0, help="Cap every memory view to its last N "
                                                "entries (default: the whole view).", show_default=False)]
MaxSamples = Annotated[int | None, typer.Option("--max-samples", min=1, help="Only the first N samples.",
                                                   show_default=False)]
SystemPrompt = Annotated[str | None, typer.Option("--system-prompt", help="Base system prompt (text or file); "
                                                     "default: agent.json's.", show_default=False)]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Skip bad input lines (counted and reported).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _split_types(types: str | None) -> list[str] | None:
    return [t.strip() for t in types.split(",") if t.strip()] if types else None


def _warn_bad(error: MementoError) -> None:
    stderr.print(f"[yellow]skipped:[/] {error}", highlight=False, soft_wrap=True)


@distill_app.command("prompts")
def prompts_command(
    checkpoint_dir: Annotated[Path, typer.Argument(metavar="CHECKPOINT_DIR", help="One episode folder "
                                                   "(memory_<N>.jsonl, agent.json).", show_default=False)],
    strategy: Strategy = "exclude_current",
    window: Window = None,
    types: Types = None,
    max_entries: MaxEntries = None,
    max_samples: MaxSamples = None,
    system_prompt: SystemPrompt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write JSONL here (default: stdout).",
                                                show_default=False)] = None,
    skip_bad: SkipBad = False,
) -> None:
    """The exact prompts the teacher will see, one JSON line per sample.

    Example: memento distill prompts ep_000200 --strategy full_memory -o p.jsonl
    """
    from mementokit.distill import PromptOptions, iter_prompts, load_checkpoint
    from mementokit.jsonl import dumps_line, write_jsonl_atomic

    checkpoint = load_checkpoint(checkpoint_dir, system_prompt=system_prompt, skip_bad=skip_bad, on_bad=_warn_bad)
    options = PromptOptions(strategy=strategy, window=window, types=tuple(_split_types(types) or ()) or None,
                            max_entries=max_entries, max_samples=max_samples)
    records = iter_prompts(checkpoint, options)
    if out is None:
        for record in records:
            stdout.out(dumps_line(record), end="", highlight=False)
        return
    count = write_jsonl_atomic(out, records)
    skipped = f", {checkpoint.skipped_lines} bad lines skipped" if checkpoint.skipped_lines else ""
    stderr.print(f"{count} prompts ({checkpoint.snapshot.name}, {len(checkpoint.entries)} entries{skipped}) -> {out}")


@distill_app.command("generate")
def generate_command(
    checkpoint_dir: Annotated[Path | None, typer.Argument(
        metavar="[CHECKPOINT_DIR]", help="Episode folder (or checkpoint_dir in --config).", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON settings (the seed's example_gen.yaml "
                                                   "keys); options given here win.", show_default=False)] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="As in `prompts` (default exclude_current).",
                                                    show_default=False)] = None,
    window: Window = None,
    types: Types = None,
    max_entries: MaxEntries = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name the teacher serves.",
                                                 show_default=False)] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (…/v1).",
                                                    show_default=False)] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Default: OPENAI_API_KEY.",
                                                   show_default=False)] = None,
    top_logprobs: Annotated[int | None, typer.Option("--top-logprobs", min=1, help="Top entries per token "
                                                        "(default 20).", show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Per answer (default 1024).",
                                                      show_default=False)] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", min=0.0, help="Default 0.",
                                                         show_default=False)] = None,
    max_samples: MaxSamples = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Calls in flight (default 8).",
                                                       show_default=False)] = None,
    id_source: Annotated[str | None, typer.Option(
        "--ids", help="How the server gives exact ids: vllm (also memento serve), tokasaurus, strings.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (results.jsonl, failures.jsonl, "
                                                "report.json, cache/).", show_default=False)] = None,
    skip_bad: SkipBad = False,
    json_out: JsonOut = False,
) -> None:
    """Teacher answers with logprobs and exact ids: the intermediate JSONL (OUT/results.jsonl). Resumable.

    Example: memento distill generate ep_000200 --model m --base-url $URL -o gen/
    """
    from mementokit.distill import generate

    given = dict(checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None, model=model, base_url=base_url,
                 api_key=api_key, strategy=strategy, window=window, types=_split_types(types), max_entries=max_entries,
                 top_logprobs=top_logprobs, max_tokens=max_tokens, temperature=temperature, max_samples=max_samples,
                 max_concurrency=concurrency, id_source=id_source, out=str(out) if out else None,
                 skip_bad=skip_bad or None)
    settings = _generate_settings(config, given)
    with progress_bar(None, "teacher") as advance:
        seen = [0]

        def on_progress(done: int, total: int) -> None:
            advance(done - seen[0])
            seen[0] = done

        report = generate(settings, on_progress=on_progress, on_bad=_warn_bad)
    _print_generate(report, json_out)
    if report["failed"]:
        raise typer.Exit(1)


def _generate_settings(config: Path | None, given: dict):
    """A GenerateConfig from --config (options given win) or from the options alone."""
    from mementokit.distill import GenerateConfig, load_config

    if config is not None:
        return load_config(config, **given)
    missing = [flag for flag, name in (("CHECKPOINT_DIR", "checkpoint_dir"), ("--model", "model"), ("--out", "out"))
               if given[name] is None]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)} (or give --config)")
    return GenerateConfig(**{k: v for k, v in given.items() if v is not None})


def _print_generate(report: dict, json_out: bool) -> None:
    if json_out:
        stdout.print_json(json.dumps(report))
    for name in report["config"]["ignored_settings"]:
        stderr.print(f"[yellow]note:[/] setting '{name}' is not supported here and was ignored", highlight=False)
    run = report["this_run"]
    llm = run["llm"]
    stderr.print(f"{report['finished']}/{report['samples']} samples in {report['out']} (this run: {run['done']} "
                 f"done, {run['skipped_finished']} already finished, {run['failed']} failed; {llm['calls']} calls, "
                 f"{llm['cached']} from cache, {run['seconds']} s)", highlight=False)
    if report["skipped_bad_lines"]:
        stderr.print(f"{report['skipped_bad_lines']} bad snapshot lines skipped", highlight=False)
    for reason in report["failure_reasons"]:
        stderr.print(f"[red]failed:[/] {reason}", highlight=False, soft_wrap=True)
    if report["failed"]:
        stderr.print(f"{report['failed']} samples failed (see failures.jsonl); run again to retry them")


@distill_app.command("convert")
def convert_command(
    intermediate: Annotated[Path, typer.Argument(metavar="INTERMEDIATE.jsonl", help="generate's results.jsonl.",
                                                 show_default=False)],
    tokenizer: Annotated[str, typer.Option("--tokenizer", "-t", help="The teacher's tokenizer (folder or hub "
                                           "name).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The parquet to write.", show_default=False)],
    min_prob_mass: Annotated[float, typer.Option("--min-prob-mass", min=0.0, max=1.0, help="Keep each token's top "
                                                 "entries until this mass (all when never reached).")] = 0.99,
    skip_bad: SkipBad = False,
    json_out: JsonOut = False,
) -> None:
    """The cartridges parquet, written, read back and validated.

    Example: memento distill convert gen/results.jsonl -t ./teacher -o d.parquet
    """
    from mementokit.distill import convert

    with progress_bar(None, "converting") as advance:
        report = convert(intermediate, tokenizer, out, min_prob_mass=min_prob_mass, skip_bad=skip_bad,
                         on_rows=advance, on_bad=_warn_bad if skip_bad else None)
    if json_out:
        stdout.print_json(json.dumps(report))
        return
    stdout.print(f"{report['conversations']} conversations, {report['assistant_tokens']:,} assistant tokens, "
                 f"{report['mean_entries_per_token']} entries/token, mass kept mean {report['mean_mass_kept']} "
                 f"(min {report['min_mass_kept']}; {report['rows_below_threshold']} rows below "
                 f"{report['min_prob_mass']}), {report['file_bytes']:,} bytes -> {report['out']}", highlight=False)
    if report["conversations_with_ids_from_strings"]:
        stdout.print(f"[yellow]{report['conversations_with_ids_from_strings']} conversations had no server ids: "
                     "ids mapped from token strings[/]", highlight=False)
    if report["skipped"]:
        stdout.print(f"{report['skipped']} rows skipped (--skip-bad)", highlight=False)


@distill_app.command("inspect")
def inspect_command(
    dataset: Annotated[Path, typer.Argument(metavar="DATASET.parquet", show_default=False,
                                         help="The cartridges parquet (`memento distill convert`).")],
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", "-t", help="Decode ids (default: show ids).",
                                                     show_default=False)] = None,
    example: Annotated[int, typer.Option("--example", min=0, help="Which conversation to render.")] = 0,
    tokens: Annotated[int, typer.Option("--tokens", min=0, help="Assistant tokens to render.")] = 12,
    json_out: JsonOut = False,
) -> None:
    """Counts, tokens, entries kept per token, mass kept, file size, one conversation.

    Example: memento distill inspect d.parquet --tokenizer ./teacher --example 3
    """
    from mementokit.distill import inspect_dataset
    from mementokit.hf import load_hf_tokenizer

    loaded = load_hf_tokenizer(tokenizer) if tokenizer else None
    report = inspect_dataset(dataset, example=example, tokens=tokens, tokenizer=loaded)
    if json_out:
        stdout.print_json(json.dumps(report))
        return
    for key in ("conversations", "messages_by_role", "prompt_tokens", "assistant_tokens", "top_k", "entries_kept",
                "mean_entries_per_token", "mean_mass_kept", "min_mass_kept", "file_bytes", "bytes_per_token"):
        stdout.print(f"{key:>24}  {report[key]}", highlight=False)
    shown = report.get("example")
    if shown:
        stdout.print(f"\nconversation {shown['index']}:", highlight=False)
        for message in shown["messages"]:
            stdout.print(f"[bold]{message['role']}[/] ({message['tokens']} tokens): {message['content']}",
                         highlight=False, markup=True)
        for token in shown["tokens"]:
            alts = ", ".join(f"{label} {p:.3f}" for label, p in token["alternatives"])
            stdout.print(f"  {token['position']:>4} {token['token']:<16} {alts}", highlight=False, markup=False)


@distill_app.command("train")
def train_command(
    dataset: Annotated[Path, typer.Argument(metavar="DATASET.parquet", show_default=False,
                                         help="The cartridges parquet (`memento distill convert`).")],
    model: Annotated[str, typer.Option("--model", help="The student (folder or hub name).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (final/, log.jsonl).", show_default=False)],
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="Default: the student's.",
                                                     show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, show_default=False,
                                                  help="Optimizer steps (default: --epochs over the data).")] = None,
    epochs: Annotated[float, typer.Option("--epochs", min=0.0,
                                             help="Passes over the data (ignored with --max-steps).")] = 1.0,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Conversations per step.")] = 1,
    learning_rate: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 1e-5,
    device: Annotated[str | None, typer.Option("--device", help="cpu / cuda (default: cuda when there).",
                                                  show_default=False)] = None,
    json_out: JsonOut = False,
) -> None:
    """Train a student on the teacher's top-k (the loss aligned on position(token) - 1).

    Example: memento distill train d.parquet --model ./student -o run/
    """
    from mementokit.distill.train import DistillTrainConfig, train_student

    config = DistillTrainConfig(data=str(dataset), model=model, out=str(out), tokenizer=tokenizer,
                                max_steps=max_steps, epochs=epochs, grad_accum=grad_accum,
                                learning_rate=learning_rate, device=device)
    with progress_bar(None, "training") as advance:
        result = train_student(config, on_step=lambda step, total: advance(1))
    if json_out:
        stdout.print_json(json.dumps(result.as_dict()))
        return
    stdout.print(f"{result.steps} steps: loss {result.initial_loss:.4f} -> {result.final_loss:.4f} (teacher "
                 f"entropy over kept entries {result.teacher_entropy:.4f}) -> {result.final_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(distill_app, name="distill")
