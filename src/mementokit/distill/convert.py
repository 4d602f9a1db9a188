"""Stage 2: the intermediate JSONL -> the cartridges parquet (HazyResearch/cartridges, `Conversation` rows).

    report = convert("out/results.jsonl", tokenizer="./teacher", out="dataset.parquet", min_prob_mass=0.99)

The schema is what cartridges writes with `pa.Table.from_pylist(asdict(conversation))`, given explicitly so every
file has the same one:

    messages: list<struct<content: string, role: string, token_ids: list<int64>,
                          top_logprobs: struct<token_idx: list<int64>, token_id: list<int32>,
                                               logprobs: list<float>, shape: list<int64>>>>
    system_prompt: string, metadata: struct<...> (never empty), type: string

`token_ids` are the message CONTENT ids. For the assistant they are the ids the teacher generated (from the server,
stop token included), so row i of top_logprobs is the distribution that produced token_ids[i]. FlatTopLogprobs keeps
each row's top entries until their probability mass reaches `min_prob_mass`, and ALL of them when it never does.
The file is written atomically, then read back and validated.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mementokit.errors import ConfigError, InputError
from mementokit.jsonl import read_jsonl


def cartridges_types():
    """(message struct type, top_logprobs struct type) of the cartridges parquet."""
    import pyarrow as pa

    top = pa.struct([("token_idx", pa.list_(pa.int64())), ("token_id", pa.list_(pa.int32())),
                     ("logprobs", pa.list_(pa.float32())), ("shape", pa.list_(pa.int64()))])
    message = pa.struct([("content", pa.string()), ("role", pa.string()), ("token_ids", pa.list_(pa.int64())),
                         ("top_logprobs", top)])
    return message, top


def cartridges_schema(metadata_type):
    import pyarrow as pa

    message, _ = cartridges_types()
    return pa.schema([("messages", pa.list_(message)), ("system_prompt", pa.string()),
                      ("metadata", metadata_type), ("type", pa.string())])


@dataclass
class FlatTopLogprobs:
    """cartridges' sparse top-k: entry j is (row token_idx[j], id token_id[j], logprob logprobs[j]); shape (T, K)."""

    token_idx: np.ndarray  # [N] int64
    token_id: np.ndarray  # [N] int32
    logprobs: np.ndarray  # [N] float32
    shape: tuple[int, int]  # (num_tokens, K)

    def reconstruct(self) -> tuple[np.ndarray, np.ndarray]:
        """Dense (logprobs [T, K], ids [T, K]); missing cells are -1000.0 and -1, as in cartridges."""
        t, k = self.shape
        dense_lp = np.full((t, k), -1000.0, dtype=np.float32)
        dense_id = np.full((t, k), -1, dtype=np.int64)
        counts = np.bincount(self.token_idx, minlength=t)
        col = np.arange(len(self.token_idx)) - np.repeat(np.cumsum(counts) - counts, counts)
        dense_lp[self.token_idx, col] = self.logprobs
        dense_id[self.token_idx, col] = self.token_id
        return dense_lp, dense_id


def flatten_top_logprobs(logprobs: np.ndarray, ids: np.ndarray, min_prob_mass: float = 0.99) -> FlatTopLogprobs:
    """Keep, per row, the most likely entries until their mass reaches min_prob_mass (all K when it never does).

    logprobs, ids: [T, K]; padding cells (rows with fewer entries) hold logprob -inf and are never kept.
    """
    if not 0.0 < min_prob_mass <= 1.0:
        raise ConfigError(f"min_prob_mass must be in (0, 1], got {min_prob_mass}")
    t, k = logprobs.shape
    order = np.argsort(-logprobs, axis=1, kind="stable")  # [T, K] most likely first
    lp = np.take_along_axis(logprobs, order, axis=1)
    tid = np.take_along_axis(ids, order, axis=1)
    mass_before = np.cumsum(np.exp(lp), axis=1) - np.exp(lp)  # [T, K] mass of the entries ahead of each
    keep = (mass_before < min_prob_mass) & np.isfinite(lp)  # an entry is kept while the mass is not yet reached
    rows = np.repeat(np.arange(t), k).reshape(t, k)
    return FlatTopLogprobs(token_idx=rows[keep].astype(np.int64), token_id=tid[keep].astype(np.int32),
                           logprobs=lp[keep].astype(np.float32), shape=(t, k))


class TokenMapper:
    """Token strings -> ids, for servers that give strings only: a raw vocabulary string ("Ġthe"), or a decoded
    string that encodes to exactly one id. Anything else is an error: a string is never guessed."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab = tokenizer.get_vocab()
        self.cache: dict[str, int | None] = {}

    def __call__(self, token: str) -> int | None:
        if token in self.cache:
            return self.cache[token]
        found = self.vocab.get(token)
        if found is None:
            ids = self.tokenizer.encode(token, add_special_tokens=False)
            found = ids[0] if len(ids) == 1 else None
        self.cache[token] = found
        return found


@dataclass
class ConvertStats:
    conversations: int = 0
    assistant_tokens: int = 0
    kept_entries: int = 0
    mass_kept_sum: float = 0.0
    mass_kept_min: float = 1.0
    rows_below_threshold: int = 0  # rows whose top-k mass never reached min_prob_mass (all k kept)
    ids_from_strings: int = 0  # conversations whose ids were mapped from strings (the server gave none)
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def _assistant_arrays(message: dict[str, Any], mapper: TokenMapper | None, where: Callable[[str], InputError],
                      stats: ConvertStats) -> tuple[list[int], np.ndarray, np.ndarray, bool]:
    """(token ids, logprobs [T, K], ids [T, K], mapped_from_strings) of an intermediate assistant message."""
    logprobs = message.get("logprobs")
    rows = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(rows, list) or not rows:
        raise where("logprobs").with_reason("assistant message has no logprobs (logprobs.content)")
    k = max(len(r.get("top_logprobs") or []) for r in rows)
    if k == 0:
        raise where("logprobs.content[0].top_logprobs").with_reason("no top_logprobs: generate with --top-logprobs")
    fast = _exact_arrays(message, rows, k)
    if fast is not None:
        return (*fast, False)
    dense_lp = np.full((len(rows), k), -np.inf, dtype=np.float64)
    dense_id = np.full((len(rows), k), -1, dtype=np.int64)
    mapped = False

    def id_of(entry: dict[str, Any], name: str) -> int:
        nonlocal mapped
        if "token_id" in entry:
            return int(entry["token_id"])
        if mapper is None:
            raise where(name).with_reason("no token id and no tokenizer to map the string")
        found = mapper(str(entry.get("token")))
        if found is None:
            raise where(f"{name}.token").with_reason(f"token string {entry.get('token')!r} does not map to one id")
        mapped = True
        return found

    chosen = message.get("token_ids")
    ids = [int(i) for i in chosen] if chosen is not None else []
    if chosen is not None and len(ids) != len(rows):
        raise where("token_ids").with_reason(f"{len(ids)} token ids but {len(rows)} logprob rows")
    for i, row in enumerate(rows):
        if chosen is None:
            ids.append(id_of(row, f"logprobs.content[{i}]"))
        for j, top in enumerate(row.get("top_logprobs") or []):
            lp = top.get("logprob")
            if not isinstance(lp, (int, float)):
                raise where(f"logprobs.content[{i}].top_logprobs[{j}].logprob").with_reason("not a number")
            dense_lp[i, j] = lp
            dense_id[i, j] = id_of(top, f"logprobs.content[{i}].top_logprobs[{j}]")
    return ids, dense_lp, dense_id, mapped


def _exact_arrays(message: dict[str, Any], rows: list[dict[str, Any]], k: int):
    """The common case in one vectorised pass: the server's ids everywhere and k entries per row. None when the
    message needs the entry-by-entry path (which also names the entry at fault)."""
    chosen = message.get("token_ids")
    try:
        if chosen is None or len(chosen) != len(rows) or any(len(r["top_logprobs"]) != k for r in rows):
            return None
        dense_lp = np.array([[t["logprob"] for t in r["top_logprobs"]] for r in rows], dtype=np.float64)  # [T, K]
        dense_id = np.array([[t["token_id"] for t in r["top_logprobs"]] for r in rows], dtype=np.int64)  # [T, K]
        ids = [int(i) for i in chosen]
    except (KeyError, TypeError, ValueError):
        return None
    if np.isnan(dense_lp).any():
        return None
    return ids, dense_lp, dense_id


class _Where:
    def __init__(self, path: str, line: int, prefix: str):
        self.path, self.line, self.prefix = path, line, prefix

    def __call__(self, name: str) -> _Where:
        self.field = f"{self.prefix}.{name}" if name else self.prefix
        return self

    def with_reason(self, reason: str) -> InputError:
        return InputError(reason, path=self.path, line=self.line, field=self.field)


def conversation_row(row: dict[str, Any], tokenizer, *, min_prob_mass: float, mapper: TokenMapper | None,
                     path: str, line: int, stats: ConvertStats) -> dict[str, Any]:
    """One intermediate row -> one cartridges Conversation (as plain Python values)."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError("row has no messages list", path=path, line=line, field="messages")
    metadata = row.get("metadata")
    if not isinstance(metadata, dict) or not metadata:
        raise InputError("metadata must be a non-empty object (an empty struct cannot be written)", path=path,
                         line=line, field="metadata")
    out_messages, counted = [], []  # counted: figures added to stats once the whole row is good
    vocab = len(tokenizer)
    for m, message in enumerate(messages):
        where = _Where(path, line, f"messages[{m}]")
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise where("content").with_reason("message has no content string")
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise where("role").with_reason(f"unknown role {role!r}")
        if role != "assistant":
            ids = tokenizer.encode(message["content"], add_special_tokens=False)
            out_messages.append({"content": message["content"], "role": role, "token_ids": ids, "top_logprobs": None})
            continue
        ids, dense_lp, dense_id, mapped = _assistant_arrays(message, mapper, where, stats)
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is None:
            bad = next((int(t) for t in dense_id[np.isfinite(dense_lp)] if not 0 <= t < vocab), None)
        if bad is not None:
            raise where("token_ids").with_reason(f"token id {bad} is outside the tokenizer's {vocab} ids "
                                                 "(another tokenizer than the teacher's?)")
        flat = flatten_top_logprobs(dense_lp, dense_id, min_prob_mass)
        mass = np.bincount(flat.token_idx, weights=np.exp(flat.logprobs.astype(np.float64)), minlength=len(ids))
        counted.append((len(ids), len(flat.token_idx), mass, mapped))
        out_messages.append({"content": message["content"], "role": "assistant", "token_ids": ids,
                             "top_logprobs": {"token_idx": flat.token_idx, "token_id": flat.token_id,
                                              "logprobs": flat.logprobs, "shape": list(flat.shape)}})
    system_prompt = row.get("system_prompt")
    if system_prompt is None:
        system_prompt = next((m["content"] for m in messages if m.get("role") == "system"), "")
    for tokens, kept, mass, mapped in counted:
        stats.assistant_tokens += tokens
        stats.kept_entries += kept
        stats.mass_kept_sum += float(mass.sum())
        stats.mass_kept_min = min(stats.mass_kept_min, float(mass.min()))
        stats.rows_below_threshold += int((mass < min_prob_mass - 1e-6).sum())
        stats.ids_from_strings += int(mapped)
    return {"messages": out_messages, "system_prompt": str(system_prompt), "metadata": metadata,
            "type": str(row.get("type") or "memory_distillation")}


def _messages_array(rows: list[dict[str, Any]]):
    import pyarrow as pa

    message_type, _ = cartridges_types()
    return pa.array([r["messages"] for r in rows], type=pa.list_(message_type))


def iter_conversations(path: str | Path, tokenizer, *, min_prob_mass: float = 0.99, skip_bad: bool = False,
                       stats: ConvertStats | None = None,
                       on_bad: Callable[[InputError], None] | None = None) -> Iterator[dict[str, Any]]:
    """Conversation rows from an intermediate JSONL (bad rows raise, or are counted and skipped with skip_bad)."""
    stats = stats if stats is not None else ConvertStats()
    mapper = TokenMapper(tokenizer)

    def bad(error: InputError) -> None:
        stats.skipped += 1
        if len(stats.errors) < 20:
            stats.errors.append(str(error))
        if on_bad is not None:
            on_bad(error)

    for line, row in read_jsonl(path, skip_bad=skip_bad, on_bad=bad):
        try:
            conversation = conversation_row(row, tokenizer, min_prob_mass=min_prob_mass, mapper=mapper,
                                            path=str(path), line=line, stats=stats)
        except InputError as error:
            if not skip_bad:
                raise
            bad(error)
            continue
        stats.conversations += 1
        yield conversation


def write_conversations(conversations: Iterator[dict[str, Any]], out: str | Path, *, batch_rows: int = 256,
                        on_rows: Callable[[int], None] | None = None) -> int:
    """Write Conversation rows as the cartridges parquet, atomically (a temporary file, then one rename)."""
    import pyarrow as pa

    chunks, system, metadata, kinds, pending = [], [], [], [], []

    def flush() -> None:
        chunks.append(_messages_array(pending))
        system.extend(c["system_prompt"] for c in pending)
        metadata.extend(c["metadata"] for c in pending)
        kinds.extend(c["type"] for c in pending)
        if on_rows:
            on_rows(len(pending))
        pending.clear()

    for conversation in conversations:
        pending.append(conversation)
        if len(pending) >= batch_rows:
            flush()
    if pending:
        flush()
    if not system:
        raise InputError("no conversation to write (the input is empty, or every row was skipped)")
    try:
        meta = pa.array(metadata)  # one struct type over every row's keys
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"metadata values of different types across rows cannot make one column: {exc}",
                         field="metadata") from None
    schema = cartridges_schema(meta.type)
    table = pa.Table.from_arrays([pa.chunked_array(chunks, type=schema.field("messages").type),
                                  pa.array(system, pa.string()), meta, pa.array(kinds, pa.string())], schema=schema)
    _write_table(table, Path(out))
    return len(system)


def _write_table(table, out: Path) -> None:
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="snappy")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def validate_parquet(path: str | Path, vocab_size: int | None = None) -> dict[str, Any]:
    """Read a cartridges parquet back and check it: the schema, and for every message with top logprobs
    shape[0] == len(token_ids), rows within [0, shape[0]), at most shape[1] entries per row, ids within the
    vocabulary. Raises InputError naming the row, message and field; returns counts."""
    import pyarrow.parquet as pq

    path = Path(path)
    table = pq.read_table(path)
    expected = cartridges_schema(table.schema.field("metadata").type) if "metadata" in table.schema.names else None
    if expected is None or not table.schema.equals(expected):
        raise InputError(f"not the cartridges schema: {table.schema}", path=str(path))
    if table.schema.field("metadata").type.num_fields == 0:
        raise InputError("metadata is an empty struct", path=str(path), field="metadata")
    tokens = entries = 0
    for r, messages in enumerate(table.column("messages").to_pylist()):
        for m, message in enumerate(messages):
            ids = message["token_ids"] or []
            where = dict(path=str(path), line=r + 1)
            if vocab_size is not None and any(not 0 <= t < vocab_size for t in ids):
                raise InputError(f"token id outside the vocabulary of {vocab_size}", **where,
                                 field=f"messages[{m}].token_ids")
            top = message["top_logprobs"]
            if top is None:
                continue
            t, k = top["shape"]
            idx = np.asarray(top["token_idx"], dtype=np.int64)
            tid = np.asarray(top["token_id"], dtype=np.int64)
            if t != len(ids):
                raise InputError(f"shape[0] = {t} but {len(ids)} token ids", **where,
                                 field=f"messages[{m}].top_logprobs.shape")
            if not (len(idx) == len(tid) == len(top["logprobs"])):
                raise InputError("token_idx, token_id and logprobs differ in length", **where,
                                 field=f"messages[{m}].top_logprobs")
            if len(idx) and (idx.min() < 0 or idx.max() >= t or np.any(np.diff(idx) < 0)
                             or np.bincount(idx, minlength=t).max() > k):
                raise InputError("token_idx out of order, out of range or over k per row", **where,
                                 field=f"messages[{m}].top_logprobs.token_idx")
            if vocab_size is not None and len(tid) and (tid.min() < 0 or tid.max() >= vocab_size):
                raise InputError(f"top-k id outside the vocabulary of {vocab_size}", **where,
                                 field=f"messages[{m}].top_logprobs.token_id")
            tokens += t
            entries += len(idx)
    return {"conversations": table.num_rows, "assistant_tokens": tokens, "entries": entries,
            "file_bytes": path.stat().st_size}


def convert(source: str | Path, tokenizer, out: str | Path, *, min_prob_mass: float = 0.99, skip_bad: bool = False,
            on_rows: Callable[[int], None] | None = None,
            on_bad: Callable[[InputError], None] | None = None) -> dict[str, Any]:
    """The intermediate JSONL -> the cartridges parquet at `out`, read back and validated; returns a report.

    `tokenizer`: the teacher's tokenizer (a folder or hub name, or a loaded one): it tokenizes the system and user
    content and checks the ids; it maps token strings only when the server gave no ids.
    """
    if isinstance(tokenizer, (str, Path)):
        from mementokit.hf import load_hf_tokenizer

        tokenizer = load_hf_tokenizer(tokenizer)
    if not 0.0 < min_prob_mass <= 1.0:
        raise ConfigError(f"--min-prob-mass must be in (0, 1], got {min_prob_mass}")
    stats = ConvertStats()
    rows = iter_conversations(source, tokenizer, min_prob_mass=min_prob_mass, skip_bad=skip_bad, stats=stats,
                              on_bad=on_bad)
    written = write_conversations(rows, out, on_rows=on_rows)
    check = validate_parquet(out, len(tokenizer))
    if check["conversations"] != written or check["assistant_tokens"] != stats.assistant_tokens:
        raise InputError(f"read back {check['conversations']} conversations / {check['assistant_tokens']} tokens, "
                         f"wrote {written} / {stats.assistant_tokens}", path=str(out))
    tokens = max(1, stats.assistant_tokens)
    return {
        "out": str(out), "conversations": written, "assistant_tokens": stats.assistant_tokens,
        "entries_kept": stats.kept_entries, "mean_entries_per_token": round(stats.kept_entries / tokens, 4),
        "mean_mass_kept": round(stats.mass_kept_sum / tokens, 6), "min_mass_kept": round(stats.mass_kept_min, 6),
        "rows_below_threshold": stats.rows_below_threshold, "min_prob_mass": min_prob_mass,
        "conversations_with_ids_from_strings": stats.ids_from_strings, "skipped": stats.skipped,
        "skipped_reasons": stats.errors, "file_bytes": check["file_bytes"],
    }
