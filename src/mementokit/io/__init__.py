"""Reading data: rows from files, folders and hub data sets, streamed; traces mapped from those rows."""

from mementokit.io.fields import FieldMap, lookup_field
from mementokit.io.readers import READERS, Row, file_format, iter_rows, looks_like_hub_id, open_hub_stream
from mementokit.io.sampling import buffered_shuffle, round_robin, stratify
from mementokit.io.stats import ReadStats, RowError
from mementokit.io.traces import TraceRecord, iter_traces, record_from_row

__all__ = [
    "READERS",
    "FieldMap",
    "ReadStats",
    "Row",
    "RowError",
    "TraceRecord",
    "buffered_shuffle",
    "file_format",
    "iter_rows",
    "iter_traces",
    "looks_like_hub_id",
    "lookup_field",
    "open_hub_stream",
    "record_from_row",
    "round_robin",
    "stratify",
]
