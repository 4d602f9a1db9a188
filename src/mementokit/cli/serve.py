"""`memento serve`: the OpenAI-compatible server (a thin layer over mementokit.serve)."""

from __future__ import annotations

from typing import Annotated

import typer

from mementokit.cli.console import stderr
from mementokit.cli.options import DEFAULT_BLOCK_MASKING, DeviceOpt, DtypeOpt, load_block_masking_config

EXAMPLE = """Example:

  memento serve --model ./memento-qwen3-8b --max-cache-tokens 65536 --port 8000

  then: curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json'
        -d '{"prompt": "2 + 2 =", "max_tokens": 8}'
"""


def _opt(*names: str, help: str, **kwargs):
    return typer.Option(*names, help=help, **kwargs)


ModelOpt = Annotated[str, _opt("--model", "-m", help="Model folder (or hub name) of a transformers causal LM.",
                               show_default=False)]
TokenizerOpt = Annotated[str | None, _opt("--tokenizer", "-t", help="Tokenizer folder (default: the model's).",
                                             show_default=False)]
HostOpt = Annotated[str, _opt("--host", help="Address to bind (loopback by default).")]
PortOpt = Annotated[int, _opt("--port", help="Port to bind.", min=0, max=65535)]
NameOpt = Annotated[str | None, _opt("--served-model-name", help="Name clients ask for (default: the folder's "
                                        "name).", show_default=False)]
MaskingOpt = Annotated[str, _opt("--block-masking", "--block-masking-config",
                                 help="Block-masking config: JSON text or file (the vLLM overlay's keys). A request "
                                      "may override keys through vllm_xargs.")]
TemplateOpt = Annotated[str | None, _opt("--chat-template", help="Jinja chat template file (default: the "
                                            "tokenizer's, else Memento ChatML without a system prompt).",
                                            show_default=False)]
BatchOpt = Annotated[int, _opt("--max-batch-size", help="Rows decoded together.", min=1)]
CacheOpt = Annotated[int | None, _opt("--max-cache-tokens", min=2, show_default=False,
                                         help="PHYSICAL limit: KV-cache slots all running requests may hold "
                                              "together, counted after eviction (admission and preemption use it). "
                                              "Default: no limit.")]
LengthOpt = Annotated[int | None, _opt("--max-model-len", min=2, show_default=False,
                                          help="LOGICAL limit: prompt + generated tokens of one request, evicted "
                                               "ones included (default: the model's max_position_embeddings).")]
WaitingOpt = Annotated[int, _opt("--max-waiting", help="Requests that may wait for a row; beyond it, 429.", min=1)]
KeyOpt = Annotated[str | None, _opt("--api-key", help="Require 'Authorization: Bearer KEY' on /v1 routes.",
                                       show_default=False)]
EngineOpt = Annotated[str, _opt("--engine", help="Serving engine: embedded (PyTorch, CPU or one GPU) or vllm "
                                 "(vLLM 0.32's OpenAI server with mementokit's plugin; needs the vllm extra).")]
LogOpt = Annotated[str, _opt("--log-level", help="uvicorn log level.")]


def register(app: typer.Typer) -> None:
    @app.command("serve", epilog=EXAMPLE)
    def serve(
        model: ModelOpt,
        tokenizer: TokenizerOpt = None,
        host: HostOpt = "127.0.0.1",
        port: PortOpt = 8000,
        served_model_name: NameOpt = None,
        block_masking: MaskingOpt = DEFAULT_BLOCK_MASKING,
        chat_template: TemplateOpt = None,
        dtype: DtypeOpt = "auto",
        device: DeviceOpt = "auto",
        max_batch_size: BatchOpt = 32,
        max_cache_tokens: CacheOpt = None,
        max_model_len: LengthOpt = None,
        max_waiting: WaitingOpt = 256,
        api_key: KeyOpt = None,
        engine: EngineOpt = "embedded",
        log_level: LogOpt = "info",
    ) -> None:
        """Serve a Memento model over vLLM's OpenAI API, with continuous batching and KV eviction.

        --max-cache-tokens caps the PHYSICAL cache (what memory holds after finished blocks are evicted).

        --max-model-len caps the LOGICAL length of one request (evicted tokens count).

        Block markers stay in the text (skip_special_tokens defaults to false).

        Usage adds evicted_tokens, completed_blocks and peak_cache_tokens.
        """
        if engine == "vllm":
            _serve_vllm(model=model, block_masking=load_block_masking_config(block_masking), tokenizer=tokenizer,
                        host=host, port=port, served_model_name=served_model_name, chat_template=chat_template,
                        dtype=dtype, max_batch_size=max_batch_size, max_cache_tokens=max_cache_tokens,
                        max_model_len=max_model_len, api_key=api_key, log_level=log_level)
            return
        from mementokit.serve.loader import ServeOptions, serve

        options = ServeOptions(model=model, tokenizer=tokenizer, served_model_name=served_model_name,
                               block_masking=load_block_masking_config(block_masking), chat_template=chat_template,
                               dtype=dtype, device=device, max_batch_size=max_batch_size,
                               max_cache_tokens=max_cache_tokens, max_model_len=max_model_len,
                               max_waiting=max_waiting, api_key=api_key, engine=engine)

        def ready(server) -> None:
            limit = f"{max_cache_tokens:,} physical cache tokens" if max_cache_tokens else "no physical cache limit"
            stderr.print(f"serving [bold]{server.model_name}[/] at http://{host}:{port}/v1 ({limit}; max model "
                         f"len {server.engine.max_model_len:,} logical tokens; block masking "
                         f"{'on' if server.engine.config.enable else 'off'})", highlight=False)

        serve(options, host=host, port=port, log_level=log_level, on_ready=ready)


def _serve_vllm(**options) -> None:
    """--engine vllm: run vLLM's server with the plugin in the foreground (flags mapped in vllm_plugin.launch)."""
    from mementokit.vllm_plugin import check_vllm_version
    from mementokit.vllm_plugin.launch import serve_with_vllm

    stderr.print(f"serving with vLLM {check_vllm_version()} (its skip_special_tokens defaults to TRUE: send false "
                 "to see the block markers)")
    status = serve_with_vllm(**options)
    if status:
        raise typer.Exit(status)
