"""What a read saw: rows read, rows handed out, and every row skipped with the reason why.

Readers never drop a row silently. A bad row either raises (the default) or, with `skip_bad=True`, is
counted here by kind, and the first few are kept word for word so that a user can go and look at them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mementokit.errors import InputError

# Kinds of bad input, as counted in ReadStats.skipped_by_kind.
MALFORMED_JSON = "malformed_json"  # a line / element that is not valid JSON
NOT_AN_OBJECT = "not_an_object"  # valid JSON, but a row must be an object
BAD_ENCODING = "bad_encoding"  # bytes that are not UTF-8
MISSING_FIELD = "missing_field"  # no candidate column for a required field (e.g. response)
WRONG_TYPE = "wrong_type"  # the field is there but holds the wrong type (response not a string)
BAD_STRUCTURE = "bad_structure"  # segments / sentences + blocks that cannot be turned into a response
UNREADABLE_FILE = "unreadable_file"  # corrupt parquet / gzip, a shard that vanished: the rest of it is lost

# Kinds that stand for a whole file (or the rest of one), not for one row.
FILE_LEVEL_KINDS = frozenset({UNREADABLE_FILE})


class RowError(InputError):
    """An InputError that also says which kind of bad input it is, so that skipping can count it."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.kind = kind
        super().__init__(message, path=path, line=line, field=field)


@dataclass
class ReadStats:
    """Counts of one read. Pass the same object to `iter_rows` / `iter_traces` and look at it afterwards.

    `rows_read` counts rows taken from the source, good and bad (rows still sitting in a shuffle buffer when
    a `limit` stops the read count as read). `rows_yielded` counts what the caller received. A skipped
    unreadable file counts once in `rows_skipped` (how many rows it held is not knowable).
    """

    rows_read: int = 0
    rows_yielded: int = 0
    rows_skipped: int = 0
    skipped_by_kind: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # "file:line, field 'x': reason" of the first few skips
    max_examples: int = 5

    def record_skip(self, error: RowError) -> None:
        self.rows_skipped += 1
        self.skipped_by_kind[error.kind] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    def summary(self) -> str:
        """One line, e.g. `read 120 rows, yielded 117, skipped 3 (2 malformed_json, 1 missing_field)`."""
        text = f"read {self.rows_read} rows, yielded {self.rows_yielded}, skipped {self.rows_skipped}"
        if self.skipped_by_kind:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.skipped_by_kind.most_common())
            text += f" ({kinds})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_yielded": self.rows_yielded,
            "rows_skipped": self.rows_skipped,
            "skipped_by_kind": dict(self.skipped_by_kind),
            "examples": list(self.examples),
        }
