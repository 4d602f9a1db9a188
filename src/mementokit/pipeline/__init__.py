"""The CoT-to-Memento data pipeline: select, split, score, segment, summarize, assemble; then export.

Stages work on plain Python values and can be used alone; `stages.STAGES` is the one list of them, which
`run_pipeline` chains per trace with a resumable, streaming runner (one shard of the input, its own ledgers in a
shared output folder; `scale.run_with_executor` runs N such tasks on datatrove's local / Slurm / Ray executors).
The LLM stages talk to any OpenAI-compatible endpoint through `LLMClient` (the `openai` package, extra
"pipeline"). Generic parts other packages reuse: `LLMClient` / `LLMConfig`, `ResponseCache`, `OutputFolder`,
`Run` / `run_resumable`, `Usage`.
"""

from mementokit.errors import LLMAbort, LLMError, StageFailure
from mementokit.pipeline.assemble import assemble_response, block_texts, check_round_trip, openmementos_row
from mementokit.pipeline.cache import ResponseCache, request_key
from mementokit.pipeline.client import LLMClient, LLMConfig
from mementokit.pipeline.config import PipelineConfig, parse_shard, shard_from_env
from mementokit.pipeline.estimate import estimate_run, estimate_trace
from mementokit.pipeline.ledger import OutputFolder
from mementokit.pipeline.report import RunState, build_report, cost_of
from mementokit.pipeline.runner import LogLines, Run, run_pipeline, run_pipeline_async, run_resumable, shard_of
from mementokit.pipeline.score import ScoreConfig, ScoreResult, score_boundaries
from mementokit.pipeline.segment import Segmentation, optimal_segmentation, segment_brute_force, segmentation_objective
from mementokit.pipeline.select import PIPELINE_FIELDS, SelectConfig, normalize_row, read_traces, select_rows
from mementokit.pipeline.split import SplitResult, estimate_tokens, naive_boundary_count, split_trace
from mementokit.pipeline.stages import STAGES, Stage, StageContext, process_trace, run_stage_file
from mementokit.pipeline.summarize import BlockSummary, SummarizeConfig, Summarizer
from mementokit.pipeline.tokens import load_token_counter
from mementokit.pipeline.usage import Usage

__all__ = [
    "PIPELINE_FIELDS",
    "STAGES",
    "BlockSummary",
    "LLMAbort",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LogLines",
    "OutputFolder",
    "PipelineConfig",
    "ResponseCache",
    "Run",
    "RunState",
    "ScoreConfig",
    "ScoreResult",
    "Segmentation",
    "SelectConfig",
    "SplitResult",
    "Stage",
    "StageContext",
    "StageFailure",
    "SummarizeConfig",
    "Summarizer",
    "Usage",
    "assemble_response",
    "block_texts",
    "build_report",
    "check_round_trip",
    "cost_of",
    "estimate_run",
    "estimate_tokens",
    "estimate_trace",
    "load_token_counter",
    "naive_boundary_count",
    "normalize_row",
    "openmementos_row",
    "optimal_segmentation",
    "parse_shard",
    "process_trace",
    "read_traces",
    "request_key",
    "run_resumable",
    "run_pipeline",
    "run_pipeline_async",
    "run_stage_file",
    "score_boundaries",
    "segment_brute_force",
    "segmentation_objective",
    "select_rows",
    "shard_from_env",
    "shard_of",
    "split_trace",
]
