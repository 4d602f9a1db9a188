"""The prompts of the three LLM roles, kept lean: every token here is paid once per call.

They restate the paper's rubrics (Memento section 3; the reference's prompt files in microsoft/memento)
in a few lines each. Outputs are numbered so that answers are matched to boundaries and blocks by number,
never by position.
"""

from __future__ import annotations

SCORE_SYSTEM = """You rate where a chain of thought may be cut into blocks that are later summarised.
Each marker [[B<n>]] is a boundary between the text before and after it. Score every marked boundary 0-3:
0 = mid-thought: inside a calculation or derivation; after text ending in ":" or "="; before a sentence that continues the same step ("Therefore", "Thus", "So", "Then"); between an assumption or a step of a trace and its check or processing.
1 = minor transition.
2 = a step is complete and the next one begins.
3 = major shift: new approach, verification phase, final conclusion.
Never give 2-3 in the middle of a calculation. Unmarked text is context only.
Reply with JSON only: {"scores": {"<n>": score, ...}} covering every marked boundary."""

SCORE_USER = """{text}

Score boundaries {first}..{last} ({count} of them)."""

COMPRESS_SYSTEM = """You compress reasoning blocks into mementos: the state a solver needs to continue without the block.
Rules: terse, lemma-like, extractive; keep every formula, equation, numeric value, definition, case split, method name, check and its outcome, and the block's conclusion (an answer found must be stated); say which attempts were rejected and why; add nothing the block does not say, fix no errors; no filler, no narration ("we then"); results first. Plain text with ASCII math (x^2, sqrt(2), >=).
Length: about 10-20% of the block (target given per block); faithfulness beats brevity.
Output for every block, in order, exactly:
MEMENTO <n>:
<memento text>"""

COMPRESS_USER = """Problem (context only, do not summarise it):
{problem}

{blocks}"""

BLOCK_TEMPLATE = """=== BLOCK {number} (about {tokens} tokens; memento target {target} tokens) ===
{text}"""

REFINE_BLOCK_TEMPLATE = """=== BLOCK {number} (about {tokens} tokens; memento target {target} tokens) ===
{text}
--- previous memento {number} (judge score {score}/10) ---
{memento}
--- judge feedback {number} ---
{feedback}"""

REFINE_USER = """Problem (context only, do not summarise it):
{problem}

Rewrite each memento below so that it fixes every point of the judge's feedback, using only its block.

{blocks}"""

JUDGE_SYSTEM = """You judge mementos (compressed summaries) of reasoning blocks: can the memento replace its block for a solver that never sees the block?
Score 0-10: formulas and equations kept verbatim (0-3); numeric values, intermediate and final (0-2); methods named (0-2); validations and their outcomes kept (0-1); only confirmed findings, corrected results not the wrong ones (0-1); results first, not narration (0-1). Subtract 1-2 for anything not in the block (hallucination), for a missing formula or value that makes the block irreproducible, for prose where symbols would do.
For every memento, in order, exactly:
JUDGE <n>:
SCORE: <0-10>/10
FEEDBACK: <the most important missing or wrong items, specific and short; "none" if perfect>"""

JUDGE_USER = """{pairs}"""

JUDGE_PAIR_TEMPLATE = """=== BLOCK {number} ===
{text}
=== MEMENTO {number} ===
{memento}"""

RETRY_NOTE = (
    "\n\n(Attempt {attempt} of {attempts}. Your previous reply could not be used: {reason}. "
    "Answer only for the items above, strictly in the required format.)"
)


def retry_note(reason: str, attempt: int, attempts: int) -> str:
    """The note a re-ask appends: what was wrong, and which try this is (so no two re-asks are the same request)."""
    return RETRY_NOTE.format(reason=reason, attempt=attempt + 1, attempts=attempts)
