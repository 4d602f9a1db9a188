"""`memento serve --engine vllm`: vLLM's own OpenAI server, with the plugin, from `memento serve`'s flags.

    command = vllm_server_command(model="./memento-qwen3-8b", block_masking=config, port=8000)
    serve_with_vllm(...)   # runs it in the foreground; returns its exit status

Flag mapping (memento serve -> vLLM): --model, --tokenizer, --host, --port, --served-model-name, --chat-template,
--dtype, --max-model-len (LOGICAL length), --api-key as is; --max-batch-size -> --max-num-seqs;
--max-cache-tokens -> a KV space of that many tokens (--block-size 32 --num-gpu-blocks-override); the block-masking
config -> --additional-config '{"block_masking": ...}'; --log-level -> --uvicorn-log-level. Prefix caching and
async scheduling are turned off explicitly. --device and --max-waiting have no vLLM equivalent (vLLM picks its
platform; its queue is unbounded).

Unlike the embedded server, vLLM's default skip_special_tokens is true: clients must send
`skip_special_tokens: false` to see the block markers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mementokit.blocks import BlockMaskingConfig
from mementokit.vllm_plugin import CONFIG_KEY

PAGE_TOKENS = 32  # KV page size when --max-cache-tokens sets the KV space (CPU kernels need a multiple of 32)


def vllm_server_command(*, model: str, block_masking: BlockMaskingConfig, tokenizer: str | None = None,
                        host: str = "127.0.0.1", port: int = 8000, served_model_name: str | None = None,
                        chat_template: str | None = None, dtype: str = "auto", max_batch_size: int | None = None,
                        max_cache_tokens: int | None = None, max_model_len: int | None = None,
                        api_key: str | None = None, log_level: str = "info", python: str | None = None,
                        extra_args: list[str] | None = None) -> list[str]:
    """The argv that starts vLLM's OpenAI server with block masking (the plugin must be installed there)."""
    command = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--host", host, "--port", str(port), "--dtype", dtype,
               "--additional-config", json.dumps({CONFIG_KEY: block_masking.to_dict()}),
               "--no-enable-prefix-caching", "--no-async-scheduling", "--uvicorn-log-level", log_level]
    optional = {"--tokenizer": tokenizer, "--served-model-name": served_model_name,
                "--chat-template": chat_template, "--max-model-len": max_model_len, "--api-key": api_key,
                "--max-num-seqs": max_batch_size}
    for flag, value in optional.items():
        if value is not None:
            command += [flag, str(value)]
    if max_cache_tokens is not None:
        pages = -(-max_cache_tokens // PAGE_TOKENS) + 1  # vLLM keeps one page back
        command += ["--block-size", str(PAGE_TOKENS), "--num-gpu-blocks-override", str(pages)]
    return command + list(extra_args or [])


def serve_with_vllm(**options) -> int:
    """Check the vLLM install, then run its server in the foreground; the exit status of the server."""
    from mementokit.vllm_plugin import check_vllm_version

    check_vllm_version()
    command = vllm_server_command(**options)
    return subprocess.call(command, env=dict(os.environ))
