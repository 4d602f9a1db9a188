"""A look inside a cartridges parquet: counts, tokens, entries kept per token, mass kept, file size, and one
conversation rendered with the teacher's top alternatives at each assistant token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mementokit.errors import InputError


def inspect_dataset(path: str | Path, *, example: int = 0, tokens: int = 12, alternatives: int = 3,
                    tokenizer=None) -> dict[str, Any]:
    """Summary figures and `tokens` assistant tokens of conversation `example` with their top alternatives."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a file that is not parquet
        raise InputError(f"not a parquet file ({type(exc).__name__}: {exc})", path=str(path)) from None
    if "messages" not in table.column_names:
        raise InputError("no 'messages' column: not a cartridges dataset", path=str(path), field="messages")
    conversations = table.column("messages").to_pylist()
    roles: dict[str, int] = {}
    prompt_tokens = assistant_tokens = entries = 0
    mass: list[np.ndarray] = []
    ks: set[int] = set()
    for messages in conversations:
        for message in messages:
            roles[message["role"]] = roles.get(message["role"], 0) + 1
            top = message["top_logprobs"]
            if top is None:
                prompt_tokens += len(message["token_ids"] or [])
                continue
            t, k = top["shape"]
            ks.add(int(k))
            assistant_tokens += t
            entries += len(top["token_idx"])
            lp = np.asarray(top["logprobs"], dtype=np.float64)
            mass.append(np.bincount(np.asarray(top["token_idx"], dtype=np.int64), weights=np.exp(lp), minlength=t))
    all_mass = np.concatenate(mass) if mass else np.zeros(0)
    report = {
        "path": str(path), "file_bytes": path.stat().st_size, "conversations": len(conversations),
        "messages_by_role": roles, "prompt_tokens": prompt_tokens, "assistant_tokens": assistant_tokens,
        "top_k": sorted(ks), "entries_kept": entries,
        "mean_entries_per_token": round(entries / assistant_tokens, 4) if assistant_tokens else None,
        "mean_mass_kept": round(float(all_mass.mean()), 6) if all_mass.size else None,
        "min_mass_kept": round(float(all_mass.min()), 6) if all_mass.size else None,
        "bytes_per_token": round(path.stat().st_size / assistant_tokens, 2) if assistant_tokens else None,
        "metadata_fields": [f.name for f in table.schema.field("metadata").type] if "metadata" in table.column_names
        else [],
    }
    if conversations:
        if not 0 <= example < len(conversations):
            raise InputError(f"--example {example} is out of range (0..{len(conversations) - 1})", path=str(path))
        report["example"] = render_example(conversations[example], tokens=tokens, alternatives=alternatives,
                                           tokenizer=tokenizer, index=example)
    return report


def _label(token_id: int, tokenizer) -> str:
    return repr(tokenizer.decode([token_id])) if tokenizer is not None else f"#{token_id}"


def render_example(messages: list[dict[str, Any]], *, tokens: int, alternatives: int, tokenizer=None,
                   index: int = 0) -> dict[str, Any]:
    """One conversation: each message's text (cut), and the first `tokens` assistant tokens with alternatives."""
    out: dict[str, Any] = {"index": index, "messages": [], "tokens": []}
    for message in messages:
        text = message["content"]
        out["messages"].append({"role": message["role"], "tokens": len(message["token_ids"] or []),
                                "content": text if len(text) <= 300 else text[:300] + " …"})
        top = message["top_logprobs"]
        if top is None or out["tokens"]:
            continue
        idx = np.asarray(top["token_idx"], dtype=np.int64)
        for i, token_id in enumerate((message["token_ids"] or [])[:tokens]):
            kept = np.flatnonzero(idx == i)[:alternatives]
            out["tokens"].append({
                "position": i, "token": _label(int(token_id), tokenizer),
                "alternatives": [(_label(int(top["token_id"][j]), tokenizer),
                                  round(float(np.exp(top["logprobs"][j])), 4)) for j in kept]})
    return out
