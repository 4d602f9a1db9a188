"""Read what LLMs actually answer: JSON inside prose or code fences, <think> preambles, markdown
decorations (`**SCORE:** 8/10`), missing blank lines, numbers as strings, values out of range.

Every parser returns what it could read keyed by NUMBER, plus what it could not, so the caller retries or
records a failure; nothing is ever filled in with a default.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mementokit.format.markers import DEFAULT_MARKERS

_THINK_START, _THINK_END = DEFAULT_MARKERS.think_start, DEFAULT_MARKERS.think_end
_THINK_BLOCK = re.compile(f"{re.escape(_THINK_START)}.*?{re.escape(_THINK_END)}", re.S | re.I)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


def strip_reasoning(text: str) -> str:
    """Drop <think>...</think> preambles; an unclosed <think> keeps only what follows its last </think>."""
    text = _THINK_BLOCK.sub("", text)
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    elif text.lstrip().lower().startswith(_THINK_START):
        text = text.lstrip()[len(_THINK_START) :]
    return text.strip()


def find_json(text: str) -> Any:
    """The first JSON object or array in `text` (fenced first, then anywhere in prose); None if none."""
    text = strip_reasoning(text)
    decoder = json.JSONDecoder()
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for m in re.finditer(r"[{\[]", candidate):
            try:
                value, _ = decoder.raw_decode(candidate, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, (dict, list)) and value:
                return value
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\s*", value)
        return float(m.group(1)) if m else None
    if isinstance(value, dict):
        for key in ("score", "value", "rating"):
            if key in value:
                return _as_number(value[key])
    return None


@dataclass
class ScoreParse:
    scores: dict[int, float] = field(default_factory=dict)  # boundary number -> score in [0, 3]
    clamped: int = 0  # values outside 0..3 brought into range
    problem: str = ""  # why nothing (or too little) could be read


def parse_boundary_scores(text: str, expected: list[int], low: float = 0.0, high: float = 3.0) -> ScoreParse:
    """Scores for the expected boundary numbers.

    Accepted: {"scores": {"17": 2, ...}}, {"17": 2}, {"scores": [{"boundary": 17, "score": 2}]}, and a bare
    list of exactly len(expected) numbers (then taken in order: the only case where position is used).
    """
    out = ScoreParse()
    data = find_json(text)
    if isinstance(data, dict) and "scores" in data:
        data = data["scores"]
    pairs: list[tuple[Any, Any]] = []
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list):
        if all(isinstance(x, dict) for x in data):
            for x in data:
                key = next((x[k] for k in ("boundary", "id", "n", "index") if k in x), None)
                pairs.append((key, x))
        elif len(data) == len(expected):
            pairs = list(zip(expected, data))
        else:
            out.problem = f"a list of {len(data)} scores for {len(expected)} boundaries"
            return out
    else:
        # last resort: lines such as "B17: 2" or "[[B17]] -> 2"
        for m in re.finditer(r"B?(\d+)\]*\s*(?:[:=]|->)\s*(-?\d+(?:\.\d+)?)", strip_reasoning(text)):
            pairs.append((m.group(1), m.group(2)))
        if not pairs:
            out.problem = "no JSON object with scores"
            return out
    wanted = set(expected)
    for key, value in pairs:
        m = re.search(r"\d+", str(key)) if key is not None else None
        number = int(m.group()) if m else None
        score = _as_number(value)
        if number not in wanted or score is None:
            continue
        if not low <= score <= high:
            out.clamped += 1
            score = min(max(score, low), high)
        out.scores[number] = score
    missing = [n for n in expected if n not in out.scores]
    if missing:
        out.problem = f"missing scores for boundaries {missing[:8]}{'...' if len(missing) > 8 else ''}"
    return out


_HEADER = r"^[ \t>#*_]*{word}[ \t*_]*(\d+)[ \t*_]*[:.)\-]*[ \t*_]*"


def parse_numbered_sections(text: str, word: str) -> dict[int, str]:
    """Sections headed `WORD <n>:` (any case, markdown or not, blank lines or not), keyed by n.

    A number that appears twice keeps its last non-empty section (models sometimes restart).
    """
    text = strip_reasoning(text)
    header = re.compile(_HEADER.format(word=word), re.I | re.M)
    matches = list(header.finditer(text))
    sections: dict[int, str] = {}
    for m, nxt in zip(matches, matches[1:] + [None]):
        body = text[m.end() : nxt.start() if nxt else len(text)].strip()
        body = re.sub(r"\n?\s*\[\[\s*##\s*completed\s*##\s*\]\]\s*$", "", body).strip()
        if body:
            sections[int(m.group(1))] = body
    return sections


# "Score", "SCORE (0-10)", "Score 0-10", "Score (out of 10)", "Rating", then up to 12 decorations, the number,
# and an optional scale ("/10", "/ 5", "out of 10").
_RANGE = r"(?:\(?\s*(?:0\s*(?:-|\u2013|to)\s*10|out\s+of\s+10|/\s*10)\s*\)?)?"
_SCORE = re.compile(
    r"(?:score|rating|grade)\s*" + _RANGE + r"[^0-9\n]{0,12}?(-?\d+(?:\.\d+)?)\s*(?:(?:/|out\s+of)\s*(\d+))?", re.I
)
_FEEDBACK = re.compile(r"feedback[ \t*_]*[:\-]*[ \t*_]*(.*)", re.I | re.S)


@dataclass
class Verdict:
    score: float
    feedback: str


def parse_verdict(section: str) -> Verdict | None:
    """`SCORE: 8/10`, `**SCORE:** 8/10`, `Score = 8`, `Score (0-10): 7`, `Score 0-10: 8`, `Rating: 4/5`,
    `Score: 7 out of 10`, `{"score": 8, "feedback": ...}`; None if no score."""
    data = find_json(section) if "{" in section else None
    if isinstance(data, dict) and _as_number(data.get("score")) is not None:
        score = _as_number(data.get("score"))
        feedback = str(data.get("feedback", "")).strip()
    else:
        m = _SCORE.search(section)
        if not m:
            return None
        score = float(m.group(1))
        if m.group(2) and float(m.group(2)) not in (0.0, 10.0):
            score = 10.0 * score / float(m.group(2))  # "4/5" or "80/100"
        f = _FEEDBACK.search(section[m.end() :]) or _FEEDBACK.search(section)
        feedback = f.group(1).strip() if f else section[m.end() :].strip()
    return Verdict(min(max(score, 0.0), 10.0), feedback)


_NUMBER_KEYS = ("block", "judge", "memento", "number", "n", "id", "index")


def _json_verdicts(text: str, expected: list[int]) -> dict[int, Verdict]:
    """Verdicts given as JSON: a list of {"block": 1, "score": 8, "feedback": ...}, or {"1": {...}, "2": 7}."""
    data = find_json(text)
    if isinstance(data, dict):
        inner = next((data[k] for k in ("verdicts", "judgements", "judgments", "results") if k in data), None)
        data = inner if isinstance(inner, (list, dict)) else data
    pairs: list[tuple[Any, Any]] = []
    if isinstance(data, list):
        pairs = [(next((x[k] for k in _NUMBER_KEYS if k in x), None), x) for x in data if isinstance(x, dict)]
    elif isinstance(data, dict) and "score" not in data:
        pairs = list(data.items())
    out: dict[int, Verdict] = {}
    for key, value in pairs:
        m = re.search(r"\d+", str(key)) if key is not None else None
        number = int(m.group()) if m else None
        if number not in expected:
            continue
        score = _as_number(value)
        if score is None:
            continue
        feedback = str(value.get("feedback", "")).strip() if isinstance(value, dict) else ""
        out[number] = Verdict(min(max(score, 0.0), 10.0), feedback)
    return out


def parse_verdicts(text: str, expected: list[int]) -> dict[int, Verdict]:
    """Judge answers for the expected block numbers; a single unnumbered verdict counts for one block."""
    found = _json_verdicts(text, expected) if ("{" in text or "[" in text) else {}
    if found:
        return found
    sections = parse_numbered_sections(text, "judge")
    if not sections:
        sections = parse_numbered_sections(text, "(?:memento|block|summary)")
    if not sections and len(expected) == 1:
        sections = {expected[0]: strip_reasoning(text)}
    out = {}
    for number in expected:
        if number in sections:
            verdict = parse_verdict(sections[number])
            if verdict is not None:
                out[number] = verdict
    return out
