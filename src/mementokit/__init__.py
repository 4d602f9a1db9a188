"""mementokit: a toolkit for Memento-style reasoning (blocks of thought compressed into mementos).

    import mementokit as mk

    trace = mk.parse_response(response)                      # lossless trace model (format core)
    for record in mk.iter_traces("microsoft/OpenMementos", limit=100, shuffle_seed=0): ...
    config = mk.BlockMaskingConfig.load('{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}')

The format core and the readers load at once; everything else (analysis, block semantics, KV simulator,
generation, pipeline, SFT) loads on first use, so `import mementokit` never pulls in PyTorch.
"""

from importlib import import_module

from mementokit.errors import ConfigError, InputError, MementoError, TraceFormatError
from mementokit.format import (
    DEFAULT_MARKERS,
    Kind,
    Markers,
    Problem,
    Trace,
    build_response,
    compress_trace,
    parse_response,
    response_from_row,
)
from mementokit.io import FieldMap, ReadStats, iter_rows, iter_traces

__version__ = "0.1.0"

# Public names that live in heavier subpackages, loaded on first access.
_LAZY = {
    "analyze_traces": "mementokit.analysis.analyze",
    "AnalysisReport": "mementokit.analysis.analyze",
    "TraceRecord": "mementokit.records",
    "synthetic_rows": "mementokit.analysis.synth",
    "BlockMaskingConfig": "mementokit.blocks",
    "BlockStateMachine": "mementokit.blocks",
    "Eviction": "mementokit.blocks",
    "resolve_marker_ids": "mementokit.blocks",
    "add_block_markers": "mementokit.blocks",
    "dense_allowed": "mementokit.blocks",
    "additive_mask": "mementokit.blocks",
    "KVSimulator": "mementokit.kv",
    "preset": "mementokit.kv",
    "BlockMaskedGenerator": "mementokit.generate",
    "SamplingParams": "mementokit.generate",
    "replay": "mementokit.generate",
    "SFTTokenizer": "mementokit.sft",
    "MementoCollator": "mementokit.sft",
    "iter_chat_examples": "mementokit.sft",
    "export_sft_dataset": "mementokit.sft",
    "add_memento_tokens": "mementokit.sft",
    "TrainConfig": "mementokit.sft",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mementokit' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MARKERS",
    "ConfigError",
    "FieldMap",
    "InputError",
    "Kind",
    "Markers",
    "MementoError",
    "Problem",
    "ReadStats",
    "Trace",
    "TraceFormatError",
    "build_response",
    "compress_trace",
    "iter_rows",
    "iter_traces",
    "parse_response",
    "response_from_row",
    *_LAZY,
]
