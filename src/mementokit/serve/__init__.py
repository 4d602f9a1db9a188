"""`memento serve`: an OpenAI-compatible server (vLLM's dialect) with continuous batching and KV eviction.

    from mementokit.serve import Engine, Server, load_server

    server = load_server("./memento-qwen3-8b", block_masking='{"enable": true, "keep_last_n_blocks": 0, '
                                                               '"mask_delimiters": false}')
    uvicorn.run(server.app, host="127.0.0.1", port=8000)

engine.py: one loop owns the model and the evicting cache (continuous batching, admission by PHYSICAL cache
tokens); app.py: the HTTP endpoints; protocol.py: request checking and response shapes; metrics.py: Prometheus.
"""

from mementokit.serve.app import Server
from mementokit.serve.engine import Engine, EngineEvent, EngineRequest, QueueFull
from mementokit.serve.loader import ServeOptions, load_server, register_engine, serve

__all__ = ["Engine", "EngineEvent", "EngineRequest", "QueueFull", "Server", "ServeOptions", "load_server",
           "register_engine", "serve"]
