"""The CoT-to-Memento data pipeline: select, split, score, segment, summarize, assemble.

Stages work on plain Python values and can be used alone; `run_pipeline` chains them with a resumable,
streaming runner. The LLM stages talk to any OpenAI-compatible endpoint through `LLMClient` (the `openai`
package, extra "pipeline").
"""

from mementokit.pipeline.assemble import assemble_response, block_texts, check_round_trip, openmementos_row
from mementokit.pipeline.cache import ResponseCache, request_key
from mementokit.pipeline.client import LLMClient, LLMConfig, LLMError
from mementokit.pipeline.runner import PipelineConfig, build_report, estimate_run, process_trace, run_pipeline, run_pipeline_async
from mementokit.pipeline.score import ScoreConfig, ScoreResult, StageFailure, score_boundaries
from mementokit.pipeline.segment import Segmentation, optimal_segmentation, segment_brute_force, segmentation_objective
from mementokit.pipeline.select import SelectConfig, normalize_row, read_traces, select_rows
from mementokit.pipeline.split import SplitResult, estimate_tokens, naive_boundary_count, split_trace
from mementokit.pipeline.summarize import BlockSummary, SummarizeConfig, Summarizer
from mementokit.pipeline.tokens import load_token_counter
from mementokit.pipeline.usage import Usage

__all__ = [
    "BlockSummary", "LLMClient", "LLMConfig", "LLMError", "PipelineConfig", "ResponseCache", "ScoreConfig", "ScoreResult",
    "Segmentation", "SelectConfig", "SplitResult", "StageFailure", "SummarizeConfig", "Summarizer", "Usage",
    "assemble_response", "block_texts", "build_report", "check_round_trip", "estimate_run", "estimate_tokens",
    "load_token_counter", "naive_boundary_count", "normalize_row", "openmementos_row", "process_trace", "read_traces",
    "request_key", "run_pipeline", "run_pipeline_async", "score_boundaries", "optimal_segmentation", "segment_brute_force",
    "segmentation_objective", "select_rows", "split_trace",
]
