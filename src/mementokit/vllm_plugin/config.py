"""The block-masking config in vLLM: where it comes from, and the engine settings it cannot live with.

Server-wide: `additional_config={"block_masking": {...}}` (the overlay's JSON keys, read by
BlockMaskingConfig.from_dict, so unknown keys are an error). Per request: `extra_args={"block_masking": {...}}`
(offline) or `vllm_xargs={"block_masking": "<the object as JSON text>"}` (OpenAI API, whose vllm_xargs values
are flat): keys that override the server's config for that request only.

A compacted cache breaks three vLLM features, so they are refused at start, never silently corrupted:
prefix caching (a shared page would be compacted under another request), speculative decoding (draft tokens
are not known to the state machine) and asynchronous scheduling (the next step is planned before the token
that triggers an eviction is known). Left at their defaults, prefix caching and async scheduling are turned off
for the user, and the log says so.
"""

from __future__ import annotations

import functools
import json
from dataclasses import fields
from typing import Any

from mementokit.blocks import BlockMaskingConfig
from mementokit.blocks.config import _BOOL_FIELDS
from mementokit.errors import ConfigError
from mementokit.vllm_plugin import CONFIG_KEY, log

SCHEDULER_CLS = "mementokit.vllm_plugin.scheduler.MementoScheduler"
_FIELDS = frozenset(f.name for f in fields(BlockMaskingConfig))
_BOOLS = frozenset(_BOOL_FIELDS)


def _additional(additional_config: Any) -> dict:
    if additional_config is None:
        return {}
    if isinstance(additional_config, str):
        try:
            additional_config = json.loads(additional_config)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--additional-config: invalid JSON: {exc.msg}") from None
    return additional_config if isinstance(additional_config, dict) else {}


def server_config(additional_config: Any) -> BlockMaskingConfig | None:
    """The server-wide config from vLLM's additional_config, or None when block masking is not configured."""
    data = _additional(additional_config).get(CONFIG_KEY)
    if data is None:
        return None
    if isinstance(data, str):  # a path or JSON text, as anywhere else in mementokit
        return _checked(BlockMaskingConfig.load(data), "additional_config")
    if not isinstance(data, dict):
        raise ConfigError(f"additional_config['{CONFIG_KEY}'] must be a JSON object, got {type(data).__name__}")
    return _checked(BlockMaskingConfig.from_dict(data, source=f"additional_config['{CONFIG_KEY}']"),
                    "additional_config")


def request_config(server: BlockMaskingConfig, extra_args: dict | None) -> BlockMaskingConfig:
    """The config of one request: the server's, with some keys replaced.

    Overrides come as block-masking keys at the top of extra_args (`vllm_xargs={"keep_last_n_blocks": 1}`, the
    same dialect as the embedded `memento serve`), or as one object under 'block_masking' (a dict offline, JSON
    text through the OpenAI API, whose vllm_xargs values are flat). vllm_xargs carries no booleans (true arrives
    as 1), so 0/1 and "true"/"false" are read as booleans for the boolean keys.
    """
    extra_args = extra_args or {}
    override = {k: v for k, v in extra_args.items() if k in _FIELDS}
    nested = extra_args.get(CONFIG_KEY)
    if isinstance(nested, str):
        try:
            nested = json.loads(nested)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"vllm_xargs['{CONFIG_KEY}']: invalid JSON: {exc.msg}") from None
    if nested is not None and not isinstance(nested, dict):
        raise ConfigError(f"vllm_xargs['{CONFIG_KEY}'] must be a JSON object of block-masking keys")
    override.update(nested or {})
    if not override:
        return server
    for key, value in list(override.items()):
        if key in _BOOLS and not isinstance(value, bool):
            if value in (0, 1):
                override[key] = bool(value)
            elif isinstance(value, str) and value.lower() in ("true", "false"):
                override[key] = value.lower() == "true"
    merged = {**server.to_dict(), **override}
    return _checked(BlockMaskingConfig.from_dict(merged, source="the request's block-masking override"),
                    "vllm_xargs")


def _checked(config: BlockMaskingConfig, where: str) -> BlockMaskingConfig:
    if config.enable and config.restart_mode:
        raise ConfigError(f"{where}: restart_mode is not supported by the vLLM plugin (it recomputes summary "
                          "keys after each eviction); use mementokit's own generator (memento serve) for it")
    return config


def check_engine(vllm_config) -> None:
    """Refuse the engine settings that corrupt a compacted cache (called in the engine core, at start)."""
    problems = []
    if vllm_config.cache_config.enable_prefix_caching:
        problems.append("prefix caching is on (a compacted page may be shared): pass --no-enable-prefix-caching "
                        "(enable_prefix_caching=False)")
    if vllm_config.speculative_config is not None:
        problems.append("speculative decoding is on (draft tokens bypass the block state machine): remove "
                        "--speculative-config")
    if vllm_config.scheduler_config.async_scheduling:
        problems.append("asynchronous scheduling is on (the next step is planned before the token that evicts "
                        "is known): pass --no-async-scheduling")
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        problems.append("pipeline parallelism is not supported: use tensor parallelism")
    if problems:
        raise ConfigError("Memento block masking cannot run with this vLLM engine: " + "; ".join(problems))


def _prepare_engine_args(args) -> None:
    """Before vLLM builds its config: pick our scheduler and turn off, or refuse, what a compacted cache breaks."""
    if server_config(args.additional_config) is None:
        return
    if args.scheduler_cls in (None, SCHEDULER_CLS):
        args.scheduler_cls = SCHEDULER_CLS
    else:
        from mementokit.vllm_plugin.scheduler import MementoScheduler

        cls = args.scheduler_cls
        if isinstance(cls, str):
            from vllm.utils.import_utils import resolve_obj_by_qualname

            cls = resolve_obj_by_qualname(cls)
        if not (isinstance(cls, type) and issubclass(cls, MementoScheduler)):
            raise ConfigError(f"block masking needs the scheduler {SCHEDULER_CLS} (or a subclass), "
                              f"got scheduler_cls={args.scheduler_cls!r}")
    if args.enable_prefix_caching is None:
        args.enable_prefix_caching = False
        log.info("block masking: prefix caching turned off (a compacted cache cannot share pages)")
    if args.async_scheduling is None:
        args.async_scheduling = False
        log.info("block masking: asynchronous scheduling turned off (eviction needs each sampled token first)")
    problems = []
    if args.enable_prefix_caching:
        problems.append("prefix caching (--enable-prefix-caching): pass --no-enable-prefix-caching")
    if args.async_scheduling:
        problems.append("asynchronous scheduling (--async-scheduling): pass --no-async-scheduling")
    if args.speculative_config:
        problems.append("speculative decoding (--speculative-config): remove it")
    if problems:
        raise ConfigError("Memento block masking refuses " + "; ".join(problems)
                          + ". A compacted KV cache would be silently corrupted.")


def install() -> None:
    """Patch EngineArgs.create_engine_config (settings) and VllmConfig.use_v2_model_runner (runner choice)."""
    from vllm.config import VllmConfig
    from vllm.engine.arg_utils import EngineArgs

    if getattr(EngineArgs.create_engine_config, "_memento", False):
        return
    original = EngineArgs.create_engine_config

    @functools.wraps(original)
    def create_engine_config(self, *args, **kwargs):
        _prepare_engine_args(self)
        return original(self, *args, **kwargs)

    create_engine_config._memento = True
    EngineArgs.create_engine_config = create_engine_config

    # Model Runner V2 (the GPU default in 0.32) is not patched: with block masking the V1 runner is forced.
    v2 = VllmConfig.use_v2_model_runner
    _warned: list[bool] = []

    def use_v2_model_runner(self) -> bool:
        if server_config(self.additional_config) is not None:
            if v2.fget(self) and not _warned:
                _warned.append(True)
                log.warning("block masking: using the V1 model runner (Model Runner V2 is not patched); "
                            "same as VLLM_USE_V2_MODEL_RUNNER=0")
            return False
        return v2.fget(self)

    VllmConfig.use_v2_model_runner = property(use_v2_model_runner)
