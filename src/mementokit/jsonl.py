"""JSON Lines files, read and written one way everywhere in mementokit.

- `read_jsonl(path)`: strict. Every non-blank line must be one JSON object; anything else is an `InputError`
  naming the file and line (with `skip_bad`, bad lines are passed to `on_bad` and skipped, never silently).
- `read_ledger(path)`: for files this project appends to itself (results, failures): a torn LAST line, left by a
  kill in the middle of an append, is ignored; a bad line anywhere else is still an error.
- `write_jsonl_atomic(path, rows)`, `write_json_atomic`, `write_text_atomic`: a temporary file beside the target,
  then one rename, so readers never see a partial file; the temporary file is removed on any failure and the
  result has the mode a plain `open()` would give it (0644 under the usual umask), not mkstemp's 0600.
- `AppendLog`: one whole line per append (O_APPEND), optionally fsynced; `repair_tail` cuts a torn last line.

Dependency-free on purpose: the format core, the pipeline, the server and the CLI all use it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from mementokit.errors import InputError

__all__ = [
    "AppendLog",
    "dumps_line",
    "read_jsonl",
    "read_ledger",
    "repair_tail",
    "write_json_atomic",
    "write_jsonl_atomic",
    "write_text_atomic",
]


def dumps_line(record: Any) -> str:
    """One JSON line (UTF-8 text kept as is; a lone surrogate is escaped rather than failing the write)."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: its \\u escape round-trips
        text = json.dumps(record, ensure_ascii=True)
    return text + "\n"


def _describe_json_error(exc: json.JSONDecodeError) -> str:
    # json's own message ends with "line 1 column 7 (char 6)": give the column once, 1-based.
    return f"not valid JSON ({exc.msg} at column {exc.colno})"


def read_jsonl(
    path: str | os.PathLike,
    *,
    skip_bad: bool = False,
    on_bad: Callable[[InputError], None] | None = None,
    require_object: bool = True,
) -> Iterator[tuple[int, Any]]:
    """Yield (line number, value) for every non-blank line; `-` reads standard input.

    A line that is not JSON (or not an object, when `require_object`) raises `InputError` with the file and line;
    with `skip_bad=True` it is handed to `on_bad` (to be counted and reported) and skipped.
    """
    name = str(path)
    if name != "-" and not Path(name).is_file():
        raise InputError("no such file" if not Path(name).exists() else "not a file", path=name)
    handle = sys.stdin.buffer if name == "-" else open(name, "rb")
    try:
        for line_no, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
                if require_object and not isinstance(value, dict):
                    raise InputError(f"expected a JSON object, got {type(value).__name__}", path=name, line=line_no)
            except UnicodeDecodeError as exc:
                error = InputError(f"not UTF-8 (byte {exc.start + 1} of the line)", path=name, line=line_no)
            except json.JSONDecodeError as exc:
                error = InputError(_describe_json_error(exc), path=name, line=line_no)
            except InputError as exc:
                error = exc
            else:
                yield line_no, value
                continue
            if not skip_bad:
                raise error
            if on_bad is not None:
                on_bad(error)
    finally:
        if name != "-":
            handle.close()


def read_ledger(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Records of a file this project appends to; a missing file is empty and a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        torn = line_no == len(lines) and not line.endswith("\n")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if torn:
                return
            raise InputError(_describe_json_error(exc), path=str(path), line=line_no) from None
        if torn:
            return  # a line without its newline was never finished, even when it happens to parse
        if not isinstance(record, dict):
            raise InputError(f"expected a JSON object, got {type(record).__name__}", path=str(path), line=line_no)
        yield record


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(
    path: str | os.PathLike, rows: Iterable[Any], progress: Callable[[int], None] | None = None
) -> int:
    """Write `rows` as JSON lines to `path` atomically; returns the number of rows. `progress(n)` every 64 rows."""
    count = 0

    def write(handle) -> None:
        nonlocal count
        pending = 0
        for row in rows:
            handle.write(dumps_line(row))
            count += 1
            pending += 1
            if progress is not None and pending >= 64:
                progress(pending)
                pending = 0
        if progress is not None and pending:
            progress(pending)

    _write_atomic(Path(path), write)
    return count


def write_json_atomic(path: str | os.PathLike, value: Any, *, indent: int | None = 2) -> None:
    """Write one JSON document atomically."""
    _write_atomic(Path(path), lambda handle: handle.write(json.dumps(value, ensure_ascii=False, indent=indent) + "\n"))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    _write_atomic(Path(path), lambda handle: handle.write(text))


def repair_tail(path: str | os.PathLike) -> None:
    """Cut a torn last line (a kill in the middle of an append) so that the file ends with a newline."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        step = min(size, 1 << 16)
        pos = size
        while pos > 0:
            start = max(0, pos - step)
            fh.seek(start)
            chunk = fh.read(pos - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                fh.truncate(start + newline + 1)
                return
            pos = start
        fh.truncate(0)


class AppendLog:
    """A JSONL file that grows by one whole line per `append()` (files are created 0644)."""

    def __init__(self, path: str | os.PathLike, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        data = dumps_line(record).encode("utf-8")
        written = os.write(self.fd, data)
        while written < len(data):  # regular files do not short-write in practice; be safe anyway
            written += os.write(self.fd, data[written:])
        if self.fsync:
            os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
