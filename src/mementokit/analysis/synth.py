"""Synthetic OpenMementos-like traces, shaped by the published figures (reference-figures.md).

    for row in synthetic_rows(1000, seed=0): ...        # a generator: constant memory, any n
    write_synthetic_jsonl("synthetic.jsonl", 10_000)    # atomic: a temporary file, then os.replace

What follows the paper, per domain (math / code / science):
- domain shares 54 / 19 / 27 %: rows take domains in a smooth weighted round robin, so every prefix of the
  stream has each domain within one row of its share (a small sample is as fair as a large one);
- blocks per trace: lognormal, median 9 / 9 / 7, rounded, clipped to [1, 60];
- block size: lognormal, median 3,750 / 3,000 / 2,300 characters (>= 700, the paper's 200-token floor);
- memento size = block size x a lognormal compression ratio with median 0.16 / 0.18 / 0.23, so memento
  medians are 600 / 540 / 529 characters (the paper: 509-603) and traces compress ~5-6x;
- the final answer follows </think>.

The text is made of words, not noise, so word and token counts mean something: sentences are drawn once per
seed from a vocabulary (Zipf-weighted reasoning words, domain words, LaTeX such as \\( x^2 \\), code lines
for code, a few non-ASCII characters such as ≠ ² é), and each block or memento is a random run of those
sentences cut at the sentence boundary nearest its drawn size. Mementos use a terser vocabulary (fewer
short function words), as real ones do, so their word ratio is below their character ratio.

Every response is built with mementokit.format.build_response and parses with no issue.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from mementokit.errors import ConfigError
from mementokit.format.builders import build_response, response_from_segments
from mementokit.jsonl import write_jsonl_atomic


@dataclass(frozen=True)
class DomainShape:
    """The distributions one domain's traces are drawn from (medians from reference-figures.md)."""

    share: float
    median_blocks: float
    blocks_sigma: float  # of log(blocks per trace)
    median_block_chars: float
    block_chars_sigma: float
    median_ratio: float  # memento chars / block chars, per block
    ratio_sigma: float


DOMAINS: dict[str, DomainShape] = {
    "math": DomainShape(0.54, 9, 0.50, 3750, 0.55, 0.16, 0.30),
    "code": DomainShape(0.19, 9, 0.50, 3000, 0.55, 0.18, 0.30),
    "science": DomainShape(0.27, 7, 0.50, 2300, 0.55, 0.23, 0.30),
}
MIN_BLOCKS, MAX_BLOCKS = 1, 60
MIN_BLOCK_CHARS, MAX_BLOCK_CHARS = 700, 30_000
MIN_MEMENTO_CHARS, MAX_MEMENTO_CHARS = 60, 6_000
SYNTHETIC_SOURCE = "synthetic"

# The sample shipped in the package (src/mementokit/data/sample.jsonl): the real trace + this many synthetic
# rows, which keeps the file under ~3 MB (synthetic traces average ~45K characters).
SAMPLE_N_SYNTHETIC = 40  # keeps the shipped file under 2 MB
SAMPLE_SEED = 0
SAMPLE_REAL_SOURCE = "AIME 2025 Problem 5 (microsoft/memento, MIT)"

# ------------------------------------------------------------------------------------------ vocabulary

# Reasoning prose, most frequent first (a Zipf weight follows the rank).
COMMON_WORDS = """
the to I so is a of that and we this be it in for let me can need but which wait if with as then check not
have are on think get would maybe should each one two first now number value because from at case actually
since both also find means what equal right term other again more than how same step answer hmm let's compute
consider perhaps correct approach original second terms sum given gives total possible result problem
condition all only there these those when where into by or no yes just like our its an up out about over
after before while might must could does did was were been being has had do any some such way thing things
part parts set write take look here try trying start looks seems wrong okay good fine careful sure exactly
""".split()

DOMAIN_WORDS = {
    "math": """
triangle integer integers divisible polynomial equation modulo prime factor coefficient radius circle angle
sequence series derivative integral probability combinations permutations parity inequality roots quadratic
remainder tangent perpendicular hypotenuse trapezoid vertices symmetric function maximum minimum residue
denominator numerator fraction exponent logarithm geometric arithmetic bases legs height area perimeter
diagonal chord midpoint segment ratio digits divisor multiple lattice points expected value recurrence
""".split(),
    "code": """
function array index loop string list return variable recursion complexity input output pointer buffer bytes
dictionary integer edge test golf character regex iterate element stack queue node tree graph hash map sort
binary search dynamic programming memo lambda parse print bytes length counter prefix suffix substring
matrix grid row column boolean null exception compile runtime language shortest submission
""".split(),
    "science": """
energy molecule electron pressure temperature reaction equilibrium concentration velocity acceleration force
mass charge field wavelength frequency photon enzyme protein cell gene mutation orbital bond entropy enthalpy
gas solution acid base mole volume density momentum potential kinetic nucleus isotope catalyst oxidation
reduction spectrum absorbance voltage current resistance circuit membrane species population hydrogen oxygen
carbon nitrogen sodium chloride ion buffer titration half-life decay
""".split(),
}

# Terse memento words: verbs of what was done, and connectives with longer words than the prose's.
MEMENTO_WORDS = """
computed derived found verified concluded set uses obtains checks solves implements tests identifies
determines applies considers notes rejects confirms establishes therefore gives yields hence substituting
using from with and so via the of for then both equation result value condition assumption earlier
candidate final consistent contradiction simplifies rewritten expressed satisfies requires implies
""".split()

RARE_TOKENS = ["≠", "≤", "≥", "x²", "π", "Poincaré", "Bézout", "Hölder", "→", "×", "θ", "Δ", "μm", "Å", "°C", "café"]

OPENERS = [
    "Wait, ",
    "Hmm, ",
    "So ",
    "Let me ",
    "Now, ",
    "Actually, ",
    "But ",
    "Therefore, ",
    "Alternatively, ",
    "Okay, ",
    "Then ",
    "First, ",
]
ENDINGS = np.array([".", ".", ".", ".", ".", "?", ":", "!"])

LATEX_TEMPLATES = [
    "\\( {v}^{e} + {w}^{e} = {n} \\)",
    "\\( {v} + {w} = {n} \\)",
    "\\( \\frac{{{n}}}{{{m}}} \\)",
    "\\( {v} \\neq {w} \\)",
    "\\( \\sqrt{{{n}}} \\)",
    "\\( {n} \\cdot {m} = {p} \\)",
    "\\( {v} \\)",
    "\\( {v}_{{{k}}} \\)",
    "\\( \\binom{{{n}}}{{{k}}} \\)",
    "\\( {v} \\equiv {k} \\pmod{{{m}}} \\)",
    "\\( {v}^2 \\)",
    "\\( {v} = {n} \\)",
    "\\( {v} \\le {n} \\)",
]
UNIT_TEMPLATES = [
    "{n} mol",
    "{n} K",
    "{n} J",
    "{n}.{k} eV",
    "{n} nm",
    "\\( {n} \\, \\text{{m/s}}^2 \\)",
    "{k}.{m} × 10^{e} C",
    "{n} g/mL",
    "{n} kPa",
    "pH {k}.{m}",
    "\\( \\Delta G = -{n} \\text{{ kJ}} \\)",
    "{n} °C",
]
INLINE_CODE_TEMPLATES = [
    "`{a}`",
    "`len({a})`",
    "`{a}[{i}]`",
    "`range({n})`",
    "`{a} % {k}`",
    "`O(n log n)`",
    "`{f}({a})`",
    "`None`",
    "`{a}[::-1]`",
]
CODE_LINE_TEMPLATES = [
    "def {f}({a}, {b}):",
    "    {a} = {n}",
    "    for {i} in range({n}):",
    "        {a} += {b}[{i}]",
    "    return {a}",
    "if {a} % {k} == 0:",
    "    print({a})",
    "{a} = [{i} * {i} for {i} in range({n})]",
    "while {a} > {n}:",
    "    {a} //= {k}",
    "{a} = sorted({b}, key=lambda x: -x)",
    "import sys",
    "{a} = int(input())",
    "print(sum({b}))",
    "{f} = lambda {a}: {a} * {n}",
    "memo = {{}}",
    "    if {a} in memo: return memo[{a}]",
    "{b} = input().split()",
    "    {b}.append({a})",
    "{a}, {b} = {b}, {a} + {b}",
]
VARIABLES = list("xyzabcnmkrst")
IDENTIFIERS = [
    "s",
    "n",
    "arr",
    "dp",
    "total",
    "count",
    "res",
    "left",
    "right",
    "mid",
    "nums",
    "word",
    "grid",
    "seen",
    "ans",
]
FUNCTIONS = ["solve", "f", "helper", "count_ways", "check", "dfs", "gcd", "main", "is_prime", "g"]

PROBLEM_CLOSERS = {
    "math": [
        "Find the remainder when the result is divided by 1000.",
        "Find \\( m + n \\).",
        "What is the largest possible value?",
        "Compute the sum of all such integers.",
    ],
    "code": [
        "Write the shortest program that does this. Input: one integer n. Output: the answer.",
        "Return the answer as a list.",
        "Your code must run in O(n log n) time.",
    ],
    "science": [
        "Which of the following is correct? (A) increases (B) decreases (C) unchanged (D) cannot be determined",
        "Give the answer in SI units.",
        "What is the expected ratio?",
    ],
}


def _zipf_weights(n: int, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


class _Filler:
    """Fills {v} {w} {n} ... placeholders of templates with random values (one draw per template use)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, templates: list[str], count: int) -> list[str]:
        rng = self.rng
        chosen = rng.integers(0, len(templates), count)
        ints = rng.integers(2, 1000, (count, 3))
        small = rng.integers(1, 10, (count, 2))
        var = rng.integers(0, len(VARIABLES), (count, 2))
        ident = rng.integers(0, len(IDENTIFIERS), (count, 3))
        func = rng.integers(0, len(FUNCTIONS), count)
        out = []
        for j in range(count):
            out.append(
                templates[chosen[j]].format(
                    v=VARIABLES[var[j, 0]],
                    w=VARIABLES[var[j, 1]],
                    n=ints[j, 0],
                    m=ints[j, 1],
                    p=ints[j, 2],
                    k=small[j, 0],
                    e=small[j, 1],
                    a=IDENTIFIERS[ident[j, 0]],
                    b=IDENTIFIERS[ident[j, 1]],
                    i=IDENTIFIERS[ident[j, 2]][0],
                    f=FUNCTIONS[func[j]],
                )
            )
        return out


@dataclass
class _SentencePool:
    """Sentences (each with its trailing separator) and their lengths, for cheap random runs of text."""

    sentences: np.ndarray  # (K,) object: str
    lengths: np.ndarray  # (K,) int64: characters, separator included
    mean_length: float

    @classmethod
    def of(cls, sentences: list[str]) -> _SentencePool:
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        return cls(np.array(sentences, dtype=object), lengths, float(lengths.mean()))


def _make_sentences(
    rng: np.random.Generator,
    count: int,
    ranked_words: list[str],
    specials: list[tuple[list[str], float]],
    *,
    words_median: float,
    opener_p: float,
    comma_p: float,
    separators: tuple[list[str], list[float]],
) -> list[str]:
    """`count` sentences: capitalised, punctuated, each followed by a separator.

    Each word is Zipf-drawn from `ranked_words` (most frequent first), or with the given share drawn
    uniformly from a special group (LaTeX, inline code, units, rare non-ASCII tokens).
    """
    lengths = np.clip(np.rint(rng.lognormal(np.log(words_median), 0.45, count)), 3, 60).astype(np.int64)
    total = int(lengths.sum())
    shares = [share for _, share in specials]
    group = rng.choice(len(specials) + 1, size=total, p=[1.0 - sum(shares), *shares])
    words = np.empty(total, dtype=object)
    ranked = np.array(ranked_words, dtype=object)
    plain = group == 0
    words[plain] = rng.choice(ranked, size=int(plain.sum()), p=_zipf_weights(len(ranked), 0.9))
    for g, (items, _) in enumerate(specials, start=1):
        mask = group == g
        words[mask] = np.array(items, dtype=object)[rng.integers(0, len(items), int(mask.sum()))]
    ends = rng.choice(ENDINGS, size=count)
    openers = rng.integers(0, len(OPENERS), count)
    use_opener = rng.random(count) < opener_p
    comma_at = np.where(rng.random(count) < comma_p, (rng.random(count) * (lengths - 1)).astype(np.int64), -1)
    seps = rng.choice(np.array(separators[0], dtype=object), size=count, p=separators[1])
    out, start = [], 0
    for j in range(count):
        chunk = list(words[start : start + lengths[j]])
        start += lengths[j]
        if comma_at[j] >= 0 and not chunk[comma_at[j]].endswith(("\\)", "`")):
            chunk[comma_at[j]] += ","
        text = " ".join(chunk)
        text = (OPENERS[openers[j]] + text) if use_opener[j] else text[:1].upper() + text[1:]
        out.append(text + ends[j] + seps[j])
    return out


@dataclass
class _DomainText:
    block: _SentencePool
    memento: _SentencePool
    code_snippets: list[str]


@lru_cache(maxsize=8)
def _domain_text(seed: int) -> dict[str, _DomainText]:
    """Each domain's sentence pools for this seed (built once: ~0.2 s)."""
    rng = np.random.default_rng([seed, 0x5E7])
    fill = _Filler(rng)
    latex = fill(LATEX_TEMPLATES, 600)
    units = fill(UNIT_TEMPLATES, 300)
    inline_code = fill(INLINE_CODE_TEMPLATES, 300)
    texts = {}
    for domain, words in DOMAIN_WORDS.items():
        specials = {
            "math": [(latex, 0.08)],
            "code": [(inline_code, 0.06), (latex, 0.01)],
            "science": [(units, 0.05), (latex, 0.02)],
        }[domain]
        specials.append((RARE_TOKENS, 0.001))
        prose_words = COMMON_WORDS[:40] + words[:20] + COMMON_WORDS[40:] + words[20:]
        memento_words = MEMENTO_WORDS[:20] + words + MEMENTO_WORDS[20:] + COMMON_WORDS[:25]
        block_sentences = _make_sentences(
            rng,
            4000,
            prose_words,
            specials,
            words_median=16,
            opener_p=0.3,
            comma_p=0.5,
            separators=([" ", "\n", "\n\n"], [0.78, 0.12, 0.10]),
        )
        snippets: list[str] = []
        if domain == "code":
            lines = fill(CODE_LINE_TEMPLATES, 3000)
            sizes = rng.integers(3, 12, 400)
            start = 0
            for size in sizes:
                snippets.append("\n```python\n" + "\n".join(lines[start : start + size]) + "\n```\n")
                start = (start + size) % (len(lines) - 12)
            # About one sentence in six is a code snippet (a third of the characters or so).
            block_sentences += snippets * 2
        elif domain == "math":
            # Display equations on their own lines.
            block_sentences += ["\n\\[\n" + expr[3:-3] + "\n\\]\n" for expr in latex[:300]]
        memento_sentences = _make_sentences(
            rng,
            3000,
            memento_words,
            [(group, share * 1.5) for group, share in specials],
            words_median=13,
            opener_p=0.0,
            comma_p=0.6,
            separators=([" ", "; ", "\n"], [0.85, 0.1, 0.05]),
        )
        texts[domain] = _DomainText(_SentencePool.of(block_sentences), _SentencePool.of(memento_sentences), snippets)
    return texts


def _text_of_length(rng: np.random.Generator, pool: _SentencePool, target: int, *, lead: str = "") -> str:
    """A random run of pool sentences whose length is the sentence boundary nearest `target` characters."""
    target = max(target - len(lead), 1)
    draws = int(target / pool.mean_length * 1.3) + 4
    while True:
        index = rng.integers(0, len(pool.lengths), draws)
        cumulative = np.cumsum(pool.lengths[index])
        if cumulative[-1] >= target:
            break
        draws *= 2
    cut = int(np.searchsorted(cumulative, target))  # first boundary at or past target
    if cut > 0 and target - cumulative[cut - 1] < cumulative[cut] - target:
        cut -= 1
    text = "".join(pool.sentences[index[: cut + 1]]).strip()
    # The lead continues into the first sentence ("Okay, so I need to check ...").
    return lead + text[:1].lower() + text[1:] if lead else text


# ------------------------------------------------------------------------------------------ rows


def _domain_order(n: int) -> Iterator[str]:
    """Domains by smooth weighted round robin: after any i rows, each count is within one of share * i."""
    names = list(DOMAINS)
    shares = np.array([DOMAINS[d].share for d in names])
    counts = np.zeros(len(names))
    for i in range(n):
        pick = int(np.argmax(shares * (i + 1) - counts))
        counts[pick] += 1
        yield names[pick]


def _lognormal_int(rng: np.random.Generator, median: float, sigma: float, size: int, low: int, high: int) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(np.log(median), sigma, size)), low, high).astype(np.int64)


def _synthetic_row(rng: np.random.Generator, domain: str, text: _DomainText) -> dict[str, Any]:
    """One synthetic trace of `domain` (see the module docstring for the distributions)."""
    shape = DOMAINS[domain]
    n_blocks = int(_lognormal_int(rng, shape.median_blocks, shape.blocks_sigma, 1, MIN_BLOCKS, MAX_BLOCKS)[0])
    block_sizes = _lognormal_int(
        rng, shape.median_block_chars, shape.block_chars_sigma, n_blocks, MIN_BLOCK_CHARS, MAX_BLOCK_CHARS
    )
    ratios = rng.lognormal(np.log(shape.median_ratio), shape.ratio_sigma, n_blocks)
    memento_sizes = np.clip(np.rint(block_sizes * ratios), MIN_MEMENTO_CHARS, MAX_MEMENTO_CHARS).astype(np.int64)
    blocks = [
        _text_of_length(rng, text.block, int(size), lead="Okay, so I need to " if i == 0 else "")
        for i, size in enumerate(block_sizes)
    ]
    mementos = [_text_of_length(rng, text.memento, int(size)) for size in memento_sizes]
    answer = "\n\n" + _answer(rng, domain, text)
    problem = (
        _text_of_length(rng, text.memento, int(rng.lognormal(np.log(350), 0.5)))
        + " "
        + PROBLEM_CLOSERS[domain][int(rng.integers(len(PROBLEM_CLOSERS[domain])))]
    )
    difficulty = int(np.clip(np.rint(1 + n_blocks / 2 + rng.normal(0, 1.5)), 1, 10))
    return {
        "problem": problem,
        "response": build_response(blocks, mementos, answer),
        "domain": domain,
        "source": SYNTHETIC_SOURCE,
        "difficulty": difficulty,
        "synthetic": True,
    }


def _answer(rng: np.random.Generator, domain: str, text: _DomainText) -> str:
    explanation = _text_of_length(rng, text.memento, int(rng.lognormal(np.log(600), 0.6)))
    if domain == "math":
        return f"{explanation}\n\nThe answer is \\( \\boxed{{{int(rng.integers(0, 1000))}}} \\)."
    if domain == "code":
        snippet = text.code_snippets[int(rng.integers(len(text.code_snippets)))]
        return f"{explanation}\n{snippet.rstrip()}"
    return f"{explanation}\n\nThe answer is ({'ABCD'[int(rng.integers(4))]})."


def synthetic_rows(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`n` synthetic rows, lazily; the same (n, seed) always gives the same rows, and a shorter n a prefix.

    Row keys: problem, response, domain (math | code | science), source ("synthetic"), difficulty (int),
    synthetic (True).
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"n must be a non-negative integer, got {n!r}")
    return _rows(int(n), int(seed))


def _rows(n: int, seed: int) -> Iterator[dict[str, Any]]:
    texts = _domain_text(seed)
    rng = np.random.default_rng([seed, 0xD0C])
    for domain in _domain_order(n):
        yield _synthetic_row(rng, domain, texts[domain])


# ------------------------------------------------------------------------------------------ files


def write_synthetic_jsonl(
    path: str | os.PathLike, n: int, seed: int = 0, *, progress: Callable[[int], None] | None = None
) -> int:
    """Write `synthetic_rows(n, seed)` as JSON lines (UTF-8) to `path`, atomically; returns the row count.

    `progress` is called with the number of rows written since its last call.
    """
    return write_jsonl_atomic(path, synthetic_rows(n, seed), progress)


def real_sample_row(fixture_path: str | os.PathLike) -> dict[str, Any]:
    """The real Qwen3-32B Memento trace of microsoft/memento (MIT) as a sample row."""
    fixture_path = Path(fixture_path)
    data = json.loads(fixture_path.read_text(encoding="utf-8"))
    return {
        "problem": data["problem"],
        "response": response_from_segments(data["segments"], where=str(fixture_path)),
        "domain": "math",
        "source": SAMPLE_REAL_SOURCE,
        "difficulty": None,  # not published for this trace
        "synthetic": False,
    }


def build_sample(
    out_path: str | os.PathLike,
    fixture_path: str | os.PathLike,
    n_synthetic: int = SAMPLE_N_SYNTHETIC,
    seed: int = SAMPLE_SEED,
) -> int:
    """The sample shipped in the package: the real fixture trace first, then `n_synthetic` synthetic rows.

    Written atomically; returns the number of rows.
    """
    real = real_sample_row(fixture_path)
    return write_jsonl_atomic(out_path, chain([real], synthetic_rows(n_synthetic, seed)))


def sample_license_text(upstream_license: str, n_synthetic: int = SAMPLE_N_SYNTHETIC, seed: int = SAMPLE_SEED) -> str:
    """The notice shipped beside sample.jsonl: where each row comes from, and the upstream MIT license."""
    return (
        "mementokit sample data (sample.jsonl)\n"
        "=====================================\n\n"
        "Row 1 is a real Memento trace generated by Qwen3-32B for AIME 2025 Problem 5, taken from the\n"
        "microsoft/memento repository (file memento_trace_aime2025_p5.json, its `segments` joined into one\n"
        "response string by mementokit.format.response_from_segments). It is used under the MIT license of\n"
        'microsoft/memento, reproduced below. Its row has "synthetic": false and source\n'
        f'"{SAMPLE_REAL_SOURCE}".\n\n'
        f'Rows 2 to {n_synthetic + 1} are synthetic ("synthetic": true, source "synthetic"): generated by\n'
        f"mementokit.analysis.synth (seed {seed}) to follow the published OpenMementos statistics. They are\n"
        "random text, not model output, and are part of mementokit (MIT).\n\n"
        "Regenerate both files with: python -m mementokit.analysis.synth --rebuild-sample\n\n"
        "-------------------------------------------------------------------------------------------\n"
        "License of microsoft/memento (applies to row 1):\n\n"
        f"{upstream_license.strip()}\n"
    )


def rebuild_shipped_sample(repo_root: str | os.PathLike) -> int:
    """Regenerate src/mementokit/data/sample.jsonl and LICENSE-sample.txt from tests/data (run from a checkout)."""
    root = Path(repo_root)
    data_dir = root / "src" / "mementokit" / "data"
    fixtures = root / "tests" / "data"
    rows = build_sample(data_dir / "sample.jsonl", fixtures / "memento_trace_aime2025_p5.json")
    upstream = (fixtures / "LICENSE-microsoft-memento.txt").read_text(encoding="utf-8")
    (data_dir / "LICENSE-sample.txt").write_text(sample_license_text(upstream), encoding="utf-8")
    return rows


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--rebuild-sample"]:
        sys.exit("usage: python -m mementokit.analysis.synth --rebuild-sample   (from the repository root)")
    print(f"wrote {rebuild_shipped_sample(Path.cwd())} rows to src/mementokit/data/sample.jsonl")
