"""Stage 1: teacher generation. Every sample's prompt goes to an OpenAI-compatible teacher with logprobs; the
answers become the intermediate JSONL (the seed's format, plus the exact ids the server returned).

    report = generate(GenerateConfig(checkpoint_dir="ep_000200", model="teacher", base_url="http://...:8000/v1",
                                     strategy="exclude_current", top_logprobs=20, out="distill-out"))

    out/results.jsonl    one intermediate row per finished sample (the pipeline runner's ledger)
    out/failures.jsonl   failed attempts (stage and reason), retried by the next run
    out/cache/           the response cache: a call whose answer was received is never paid for twice
    out/report.json

Resumable and concurrent through the pipeline's runner (`run_resumable`) and client (`LLMClient`): kill it, run it
again, and nothing is lost or repeated. A config file (YAML or JSON, the seed's example_gen.yaml keys) may replace
the arguments.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mementokit.distill.checkpoint import load_checkpoint
from mementokit.distill.logprobs import ID_SOURCES, assistant_message, ids_source, request_options
from mementokit.distill.prompts import PromptOptions, iter_prompts
from mementokit.errors import ConfigError, InputError
from mementokit.jsonl import write_json_atomic

INTERMEDIATE = "results.jsonl"
SETTINGS = "settings.json"  # what the rows of an output folder were made with: a rerun must match it
# The settings that change what a row holds (not how fast it is made, nor how many samples are taken).
ROW_SETTINGS = ("model", "strategy", "window", "types", "max_entries", "top_logprobs", "temperature", "max_tokens",
                "id_source", "metadata")
ROW_TYPE = "memory_distillation"
# The seed's example_gen.yaml names some settings differently.
CONFIG_ALIASES = {"lm_model": "model", "output_dir": "out", "concurrency": "max_concurrency", "num_threads":
                  "max_concurrency", "lm_base_url": "base_url", "lm_temperature": "temperature",
                  "lm_max_output_tokens": "max_tokens", "system_prompt_override": "system_prompt"}
# Settings of the seed's file that have no meaning here: accepted, listed in the report, not acted on.
CONFIG_IGNORED = ("hf_repo_id", "hf_private")
_FILE_REFERENCE = re.compile(r"^\{file:(.+)\}$")  # the seed's "{file:path}" form of system_prompt_override


@dataclass
class GenerateConfig:
    checkpoint_dir: str
    model: str
    out: str
    base_url: str | None = None
    api_key: str | None = None
    strategy: str = "exclude_current"
    window: int | None = None
    types: list[str] | None = None
    max_entries: int | None = None
    max_samples: int | None = None
    system_prompt: str | None = None  # overrides agent.json's (text, or a file holding it)
    top_logprobs: int = 20
    temperature: float = 0.0
    max_tokens: int = 1024
    max_concurrency: int = 8
    timeout_s: float = 300.0
    max_retries: int = 6
    id_source: str = "vllm"  # how the server gives exact ids: vllm | tokasaurus | strings
    cache: bool = True
    skip_bad: bool = False
    output_format: str = "jsonl"
    metadata: dict[str, Any] = field(default_factory=dict)
    ignored_settings: list[str] = field(default_factory=list)  # the seed's settings with no meaning here

    def check(self) -> None:
        if self.top_logprobs < 1:
            raise ConfigError(f"top_logprobs must be at least 1, got {self.top_logprobs}")
        if self.max_tokens < 1 or self.max_concurrency < 1:
            raise ConfigError("max_tokens and concurrency must be at least 1")
        if self.id_source not in ID_SOURCES:
            raise ConfigError(f"id_source must be one of {', '.join(ID_SOURCES)}, got {self.id_source!r}")
        if self.output_format != "jsonl":
            raise ConfigError(f"output_format {self.output_format!r}: generation writes JSONL; "
                              "`memento distill convert` writes the parquet")
        if not isinstance(self.metadata, dict):
            raise ConfigError("metadata must be a mapping")
        self.prompt_options().check()

    def prompt_options(self) -> PromptOptions:
        return PromptOptions(strategy=self.strategy, window=self.window,
                             types=tuple(self.types) if self.types else None, max_entries=self.max_entries,
                             max_samples=self.max_samples, metadata=dict(self.metadata))


def load_config(path: str | Path, **overrides: Any) -> GenerateConfig:
    """A GenerateConfig from a YAML or JSON file; `overrides` (not None) win over the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("no such config file", path=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}  # JSON is YAML too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML/JSON: {getattr(exc, 'problem', exc)}", path=str(path),
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping of settings", path=str(path))
    values = _config_values(data, path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    missing = [name for name in ("checkpoint_dir", "model", "out") if values.get(name) is None]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)} (in the file or as options)")
    if isinstance(values.get("types"), str):
        values["types"] = [t.strip() for t in values["types"].split(",") if t.strip()]
    return GenerateConfig(**values)


def _config_values(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's settings under GenerateConfig's names (the seed's names and shapes accepted)."""
    known = {f.name for f in fields(GenerateConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in CONFIG_IGNORED:
            values.setdefault("ignored_settings", []).append(key)
            continue
        if key == "agent_type":
            if value not in ("history_agent", "HistoryAgent"):
                raise InputError(f"only history_agent checkpoints are supported, got {value!r}", path=str(path),
                                 field=key)
            continue
        name = CONFIG_ALIASES.get(key, key)
        if name not in known:
            raise InputError(f"unknown setting (known: {', '.join(sorted(known | set(CONFIG_ALIASES)))})",
                             path=str(path), field=key)
        if name == "strategy" and isinstance(value, dict):  # the seed's {name: ..., window_k: ...}
            if "window_k" in value:
                values["window"] = value["window_k"]
            value = value.get("name")
        if name == "system_prompt" and isinstance(value, str) and (match := _FILE_REFERENCE.match(value)):
            value = str(Path(match.group(1)).expanduser())  # a file: resolve_system_prompt reads it
            if not Path(value).is_file():
                raise InputError(f"no such system prompt file {value!r}", path=str(path), field=key)
        values[name] = value
    return values


def _llm_config(config: GenerateConfig):
    from mementokit.pipeline.client import LLMConfig

    return LLMConfig(model=config.model, base_url=config.base_url, api_key=config.api_key,
                     max_concurrency=config.max_concurrency, timeout_s=config.timeout_s,
                     max_retries=config.max_retries, temperature=config.temperature, max_tokens=config.max_tokens,
                     cache_dir=str(Path(config.out) / "cache") if config.cache else None)


async def teacher_row(prompt: dict[str, Any], client, config: GenerateConfig) -> dict[str, Any]:
    """Ask the teacher for one sample; the intermediate row (raises TeacherError / LLMError)."""
    started = time.perf_counter()
    # a reply of just the stop token has no text: it is still an answer
    response = await client.chat(prompt["messages"], stage="teacher", require_text=False,
                                 **request_options(config.top_logprobs, config.id_source))
    assistant = assistant_message(response, config.top_logprobs)
    usage = response.get("usage") or {}
    metadata = dict(prompt["metadata"])
    rows = len(assistant["logprobs"]["content"])
    metadata["metrics"] = {"duration": round(time.perf_counter() - started, 4),
                           "input_tokens": int(usage.get("prompt_tokens") or 0),
                           "output_tokens": int(usage.get("completion_tokens") or rows)}
    metadata["token_ids_from"] = ids_source(assistant)
    metadata["finish_reason"] = response["choices"][0].get("finish_reason") or ""
    messages = [{**m, "token_ids": None, "logprobs": None} for m in prompt["messages"]]
    row = {"task_id": prompt["task_id"], "messages": [*messages, assistant], "system_prompt": prompt["system_prompt"],
           "metadata": metadata, "type": ROW_TYPE}
    if response.get("prompt_token_ids") is not None:  # what the teacher saw, to check a student's prompt against
        row["prompt_token_ids"] = [int(i) for i in response["prompt_token_ids"]]
    return row


async def generate_async(config: GenerateConfig, *, on_progress: Callable[[int, int], None] | None = None,
                         on_bad: Callable[[InputError], None] | None = None) -> dict[str, Any]:
    from mementokit.pipeline.client import LLMClient
    from mementokit.pipeline.runner import run_resumable

    config.check()
    checkpoint = load_checkpoint(config.checkpoint_dir, system_prompt=config.system_prompt,
                                 skip_bad=config.skip_bad, on_bad=on_bad)
    prompts = list(iter_prompts(checkpoint, config.prompt_options()))
    _check_settings(Path(config.out), config, checkpoint)
    client = LLMClient(_llm_config(config))
    total = len(prompts)

    def progress(state) -> None:
        if on_progress is not None:
            on_progress(state.done + state.failed + state.skipped_finished, total)

    try:
        state = await run_resumable(prompts, config.out, lambda p: teacher_row(p, client, config),
                                    workers=config.max_concurrency, on_progress=progress)
    finally:
        await client.aclose()
    failures = _latest_failures(Path(config.out))
    report = {
        "checkpoint": str(checkpoint.folder), "snapshot": checkpoint.snapshot.name, "entries": len(checkpoint.entries),
        "samples": total, "skipped_bad_lines": checkpoint.skipped_lines, "strategy": config.strategy,
        "out": str(Path(config.out) / INTERMEDIATE),
        "finished": _count_lines(Path(config.out) / INTERMEDIATE), "failed": len(failures),
        "failure_reasons": sorted({f.get("error", "") for f in failures})[:5],
        "this_run": {"done": state.done, "failed": state.failed, "skipped_finished": state.skipped_finished,
                     "seconds": round(time.monotonic() - state.started, 3), "llm": client.usage.to_dict()},
        "config": {k: v for k, v in asdict(config).items() if k != "api_key"},
    }
    write_json_atomic(Path(config.out) / "report.json", report)
    return report


def _check_settings(out: Path, config: GenerateConfig, checkpoint) -> None:
    """Refuse to resume an output folder made with other settings: finished samples would be kept as they are
    and the file would mix two datasets."""
    settings = {name: getattr(config, name) for name in ROW_SETTINGS}
    settings.update(checkpoint=str(checkpoint.folder.resolve()), snapshot=checkpoint.snapshot.name,
                    system_prompt=checkpoint.system_prompt)
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
    path = out / SETTINGS
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise ConfigError(f"{out} holds samples generated with other settings ({', '.join(changed)} differ): "
                              "choose another --out, or rerun with the same settings to resume")
    else:
        write_json_atomic(path, settings)


def generate(config: GenerateConfig, **kwargs: Any) -> dict[str, Any]:
    """Synchronous wrapper of generate_async (see the module docstring)."""
    return asyncio.run(generate_async(config, **kwargs))


def _count_lines(path: Path) -> int:
    from mementokit.jsonl import read_ledger

    return sum(1 for _ in read_ledger(path))


def _latest_failures(out: Path) -> list[dict[str, Any]]:
    from mementokit.jsonl import read_ledger

    latest: dict[str, dict[str, Any]] = {}
    for record in read_ledger(out / "failures.jsonl"):
        latest[record.get("task_id", "?")] = record
    return list(latest.values())

