"""What OpenAI-compatible servers return for logprobs, read into one shape with exact token ids.

Token ids must come from the server, never from re-encoding strings (decoded strings are lossy: a partial UTF-8
byte token decodes to "" or U+FFFD):
- vLLM / `memento serve`: `return_token_ids: true` adds `choices[0].token_ids` (and `prompt_token_ids`);
  `return_tokens_as_token_ids: true` writes every token, top-k entries included, as "token_id:N".
- Tokasaurus: `logprobs_in_fingerprint: true` puts `completion_ids` and base64-packed arrays (chosen logprobs,
  top-k ids and logprobs) in `system_fingerprint`.
- Anything else: token strings only. The converter maps them with the tokenizer (a raw vocabulary string, or a
  string that encodes to exactly one id) and the row's metadata says so.

The normalised assistant message (the intermediate format, OpenAI-style plus ids where the server gave them):
    {"role": "assistant", "content": str, "token_ids": [int] | None,
     "logprobs": {"content": [{"token", "logprob", "token_id"?, "top_logprobs": [{"token", "logprob", "token_id"?}]}]}}
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np

ID_SOURCES = ("vllm", "tokasaurus", "strings")
_TOKEN_ID = re.compile(r"^token_id:(-?\d+)$")


class TeacherError(Exception):
    """A teacher answer that cannot be used (recorded in failures.jsonl with its stage; retried on rerun)."""

    def __init__(self, message: str, stage: str = "logprobs"):
        self.stage = stage
        super().__init__(message)


def request_options(top_logprobs: int, id_source: str = "vllm") -> dict[str, Any]:
    """The chat-completions fields that ask for logprobs, top-k and exact ids in the server's dialect."""
    if id_source not in ID_SOURCES:
        raise ValueError(f"id_source must be one of {ID_SOURCES}, got {id_source!r}")
    options: dict[str, Any] = {"logprobs": True, "top_logprobs": top_logprobs}
    if id_source == "vllm":
        options["extra_body"] = {"return_token_ids": True, "return_tokens_as_token_ids": True}
    elif id_source == "tokasaurus":
        options["extra_body"] = {"logprobs_in_fingerprint": True}
    return options


def token_id_of(token: Any) -> int | None:
    """N from a "token_id:N" string (vLLM's return_tokens_as_token_ids), else None."""
    match = _TOKEN_ID.match(token) if isinstance(token, str) else None
    return int(match.group(1)) if match else None


def _unpack(packed: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed), dtype=dtype)


def _from_fingerprint(fingerprint: str, top_logprobs: int) -> tuple[list[int], list[dict[str, Any]]]:
    try:
        data = json.loads(fingerprint)
        ids = [int(i) for i in data["completion_ids"][0]]
        chosen = _unpack(data["packed_chosen_logprobs"][0], np.float32)
        top_ids = _unpack(data["packed_topk_indices"][0], np.int32)
        top_lp = _unpack(data["packed_topk_logprobs"][0], np.float32)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TeacherError(f"system_fingerprint does not hold Tokasaurus logprobs ({type(exc).__name__}: {exc}); "
                           "is logprobs_in_fingerprint supported by this server?") from None
    if len(ids) == 0 or top_ids.size % len(ids) or top_ids.size != top_lp.size or chosen.size != len(ids):
        raise TeacherError(f"system_fingerprint arrays disagree: {len(ids)} ids, {chosen.size} chosen logprobs, "
                           f"{top_ids.size} top-k ids, {top_lp.size} top-k logprobs")
    k = top_ids.size // len(ids)
    top_ids, top_lp = top_ids.reshape(len(ids), k), top_lp.reshape(len(ids), k)
    content = [{"token": f"token_id:{tid}", "logprob": float(lp), "token_id": tid,
                "top_logprobs": [{"token": f"token_id:{int(j)}", "logprob": float(v), "token_id": int(j)}
                                 for j, v in zip(top_ids[t], top_lp[t])]}
               for t, (tid, lp) in enumerate(zip(ids, chosen))]
    return ids, content


def _with_ids(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for entry in entries:
        row = {"token": entry.get("token"), "logprob": entry.get("logprob")}
        if (tid := entry.get("token_id", token_id_of(entry.get("token")))) is not None:
            row["token_id"] = int(tid)
        row["top_logprobs"] = []
        for top in entry.get("top_logprobs") or []:
            item = {"token": top.get("token"), "logprob": top.get("logprob")}
            if (tid := top.get("token_id", token_id_of(top.get("token")))) is not None:
                item["token_id"] = int(tid)
            row["top_logprobs"].append(item)
        out.append(row)
    return out


def assistant_message(response: dict[str, Any], top_logprobs: int) -> dict[str, Any]:
    """The normalised assistant message of a chat-completions response (see the module docstring).

    Raises TeacherError when the server sent no logprobs, fewer top entries than asked, or ids that disagree
    with the logprob rows.
    """
    choice = response["choices"][0]
    content = (choice.get("message") or {}).get("content") or ""
    fingerprint = response.get("system_fingerprint")
    raw = (choice.get("logprobs") or {}).get("content")
    if raw is None and isinstance(fingerprint, str) and "completion_ids" in fingerprint:
        ids, rows = _from_fingerprint(fingerprint, top_logprobs)
    elif raw is None:
        raise TeacherError("the server returned no logprobs (does it support logprobs / top_logprobs?)")
    else:
        rows = _with_ids(raw)
        ids = choice.get("token_ids")
        if ids is None and rows and all("token_id" in r for r in rows):
            ids = [r["token_id"] for r in rows]
    if not rows:
        raise TeacherError("the server returned an empty logprobs list")
    short = next((i for i, r in enumerate(rows) if len(r["top_logprobs"]) < top_logprobs), None)
    if short is not None:
        raise TeacherError(f"the server returned {len(rows[short]['top_logprobs'])} top logprobs for token {short}, "
                           f"fewer than the {top_logprobs} asked (lower --top-logprobs or raise the server's limit)")
    if ids is not None:
        ids = [int(i) for i in ids]
        if len(ids) != len(rows):
            raise TeacherError(f"the server returned {len(ids)} token ids but {len(rows)} logprob rows")
        for row, tid in zip(rows, ids):
            if row.get("token_id", tid) != tid:
                raise TeacherError(f"token id {row['token_id']} in the logprobs disagrees with {tid} in token_ids")
            row["token_id"] = tid
    return {"role": "assistant", "content": content, "token_ids": ids, "logprobs": {"content": rows}}


def ids_source(message: dict[str, Any]) -> str:
    """'server' when every chosen and top-k entry carries the server's id, else 'strings' (mapped at conversion)."""
    rows = message["logprobs"]["content"]
    exact = message.get("token_ids") is not None and all(
        "token_id" in top for row in rows for top in row["top_logprobs"])
    return "server" if exact else "strings"
