"""From command-line style options to a ready Server: check everything, load the model, build the engine.

Every check that can fail (the model folder, the block-masking config, the chat template file, the markers)
fails here with a ConfigError, before any port is bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mementokit.errors import ConfigError

# Engine name -> runner(options, host, port, log_level) that serves until stopped. The seam for other engines:
# the vLLM plugin registers "vllm" (register_engine) with a runner that starts vLLM's server with the overlay.
ENGINES: dict[str, Callable] = {}


def register_engine(name: str, runner: Callable) -> None:
    """Make `memento serve --engine NAME` call runner(options, host=..., port=..., log_level=...)."""
    ENGINES[name] = runner


@dataclass
class ServeOptions:
    """`memento serve`'s options (see its --help): max_cache_tokens is PHYSICAL (what the KV memory holds after
    eviction), max_model_len is LOGICAL (prompt + generated tokens of one request)."""

    model: str
    tokenizer: str | None = None
    served_model_name: str | None = None
    block_masking: object = None  # JSON text, a file path, a dict or a BlockMaskingConfig; None: masking off
    chat_template: str | None = None  # a Jinja file
    dtype: str = "auto"
    device: str = "auto"
    attn: str = "sdpa"
    max_batch_size: int = 32
    max_cache_tokens: int | None = None
    max_model_len: int | None = None
    max_waiting: int = 256
    max_logprobs: int = 20
    api_key: str | None = None
    engine: str = "embedded"

    def served_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        path = Path(self.model).expanduser()
        return path.resolve().name if path.is_dir() else self.model  # a hub name is served under its own name


def check_options(options: ServeOptions):
    """Everything that can be checked without loading the model; returns the block-masking config."""
    from mementokit.generate.engine import load_block_masking
    from mementokit.hf import check_local_folder

    if options.engine not in ENGINES:
        raise ConfigError(f"--engine {options.engine!r}: choose one of {', '.join(sorted(ENGINES))}")
    check_local_folder(options.model, "model")
    if options.tokenizer is not None:
        check_local_folder(options.tokenizer, "tokenizer")
    if options.chat_template is not None and not Path(options.chat_template).is_file():
        raise ConfigError(f"chat template file '{options.chat_template}' does not exist")
    for name in ("max_batch_size", "max_waiting"):
        if getattr(options, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(options, name)}")
    for name in ("max_cache_tokens", "max_model_len"):
        value = getattr(options, name)
        if value is not None and value < 2:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 2, got {value}")
    return load_block_masking(options.block_masking)


def load_server(options: ServeOptions | str, **overrides):
    """Check the options, load tokenizer and model, and return a Server (its `.app` is the ASGI app)."""
    from mementokit.hf import load_hf_model, load_hf_tokenizer
    from mementokit.serve.app import Server
    from mementokit.serve.engine import Engine

    if isinstance(options, str):
        options = ServeOptions(model=options, **overrides)
    config = check_options(options)
    tokenizer = load_hf_tokenizer(options.tokenizer or options.model)
    template = Path(options.chat_template).read_text(encoding="utf-8") if options.chat_template else None
    model = load_hf_model(options.model, dtype=options.dtype, device=options.device, attn=options.attn)
    name = options.served_name()
    engine = Engine(model, tokenizer, config, max_batch_size=options.max_batch_size,
                    max_cache_tokens=options.max_cache_tokens, max_model_len=options.max_model_len,
                    max_waiting=options.max_waiting, max_logprobs=options.max_logprobs, model_name=name)
    return Server(engine, tokenizer, model_name=name, chat_template=template, api_key=options.api_key,
                  model_root=options.model)


def run_embedded(options: ServeOptions, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                 on_ready: Callable | None = None) -> None:
    """The embedded engine: load, then serve with uvicorn until interrupted (on_ready(server) before binding)."""
    import uvicorn

    server = load_server(options)
    if on_ready is not None:
        on_ready(server)
    uvicorn.run(server.app, host=host, port=port, log_level=log_level)


register_engine("embedded", run_embedded)


def serve(options: ServeOptions, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          on_ready: Callable | None = None) -> None:
    """Check the options (nothing is loaded or bound when they are wrong), then run the chosen engine."""
    check_options(options)
    ENGINES[options.engine](options, host=host, port=port, log_level=log_level, on_ready=on_ready)
