"""One trace in the terminal: each block beside its memento, with sizes and the ratio."""

from __future__ import annotations

from bisect import bisect_left

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mementokit.analysis.textstats import WordCounter
from mementokit.format import Kind, parse_response


def _clip(text: str, max_chars: int) -> str:
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]} … [{len(text) - 2 * half:,} chars] … {text[-half:]}"


def render_trace(console: Console, record, *, max_chars: int = 600, tokenizer: str | None = None) -> None:
    """Print `record` (anything with .response, and optionally .origin, .domain, .problem)."""
    trace = parse_response(record.response)
    response = trace.response
    words = WordCounter(response)
    offsets = None
    if tokenizer:
        from mementokit.analysis.tokens import load_counting_tokenizer

        offsets = load_counting_tokenizer(tokenizer, trace.markers).encode(response, add_special_tokens=False).offsets

    def tokens(a: int, b: int) -> str:
        if offsets is None:
            return ""
        return f", {bisect_left(offsets, (b,)) - bisect_left(offsets, (a,)):,} tok"

    title = f"{getattr(record, 'origin', '')}  domain={getattr(record, 'domain', '?')}  {len(response):,} chars"
    problem = getattr(record, "problem", None)
    if problem:
        console.print(Panel(Text(_clip(problem, max_chars)), title="problem", title_align="left"))
    table = Table(title=Text(title), title_justify="left", show_lines=True, expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("block", ratio=3)
    table.add_column("memento", ratio=2)
    table.add_column("ratio", justify="right", no_wrap=True)
    summary_of = {block.index: summary for block, summary in trace.pairs()}
    for block in trace.blocks:
        summary = summary_of.get(block.index)
        bc = block.content_end - block.content_start
        block_cell = Text(_clip(block.content(response), max_chars))
        start, end = block.content_start, block.content_end
        block_cell.append(f"\n{bc:,} chars, {words.words(start, end):,} words{tokens(start, end)}", style="dim")
        if summary is None:
            table.add_row(str(block.index), block_cell, Text("(no memento)", style="red"), "-")
            continue
        sc = summary.content_end - summary.content_start
        summary_cell = Text(_clip(summary.content(response), max_chars))
        start, end = summary.content_start, summary.content_end
        summary_cell.append(f"\n{sc:,} chars, {words.words(start, end):,} words{tokens(start, end)}", style="dim")
        table.add_row(str(block.index), block_cell, summary_cell, f"{sc / bc:.3f}" if bc else "-")
    console.print(table)
    answer = trace.answer
    if answer.strip():
        console.print(Panel(Text(_clip(answer.strip(), max_chars)), title=f"answer ({len(answer):,} chars)",
                            title_align="left"))
    for issue in trace.issues:
        console.print(f"[red]problem[/] {escape(str(issue))}")
    if not any(s.kind is Kind.BLOCK for s in trace.segments):
        console.print("[yellow]this response has no blocks[/]")
