"""Trace rows as chat conversations, and a conversation as (prompt text, completion text).

    for example in iter_chat_examples("traces.jsonl"): example.messages
    renderer = ChatRenderer(tokenizer)             # the tokenizer's chat template, ChatML when it has none
    prompt, completion = renderer.render(example.messages)

The SFT shape is formats.md's `{"messages": [user problem, assistant response]}` (Qwen3-style Memento models are
trained without a system prompt; one can be given).

Why the completion is the response VERBATIM rather than whatever the template makes of the assistant turn: some
templates rewrite the final assistant turn (Qwen3's strips the newlines around the reasoning and re-wraps it in
`<think>\\n...\\n</think>\\n\\n`). At inference the model is prompted with the generation prompt and then produces the
response token by token, so training must see exactly generation prompt + response + end of turn. The template is
still the authority for the prompt and for how a turn ends (found by rendering a sentinel as the assistant turn).
`mode="template"` takes the template's full rendering instead, for users who want it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mementokit.errors import ConfigError, InputError
from mementokit.format.chat import CHATML_TURN_END, chatml
from mementokit.records import TraceRecord

_SENTINEL = "\x00MEMENTO-ASSISTANT-CONTENT\x00"
RENDER_MODES = ("verbatim", "template")


@dataclass(frozen=True, slots=True)
class ChatExample:
    """One conversation ready for tokenization, with the labels kept for the dataset card."""

    messages: list[dict[str, str]]
    domain: str = "unknown"
    source: str | None = None
    index: int = 0
    origin: str = ""

    @property
    def response(self) -> str:
        return self.messages[-1]["content"]


def chat_messages(problem: str, response: str, *, system_prompt: str | None = None) -> list[dict[str, str]]:
    """[system?, user problem, assistant response]."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": problem})
    messages.append({"role": "assistant", "content": response})
    return messages


def iter_chat_examples(source: str | Path | Iterable[Any], *, system_prompt: str | None = None,
                       **read_options: Any) -> Iterator[ChatExample]:
    """Conversations from any trace source mementokit.io reads (or an iterable of TraceRecords / dicts), lazily.

    read_options go to mementokit.io.iter_traces (field_map, limit, skip_bad, stats, config, split, ...).
    A trace without a problem is an InputError naming where it came from: a chat example needs a user turn.
    """
    if isinstance(source, (str, Path)):
        from mementokit.io import iter_traces

        traces: Iterable[Any] = iter_traces(source, **read_options)
    else:
        if read_options:
            raise ConfigError(f"read options {sorted(read_options)} apply only to a path or hub name")
        traces = source
    for position, trace in enumerate(traces):
        record = TraceRecord.of(trace, index=position)
        problem, response, origin, index = record.problem, record.response, record.origin, record.index
        where: dict[str, Any] = {"path": origin} if origin else {"line": position + 1}  # origin is "file:line"
        if not isinstance(response, str):
            raise InputError("trace has no response string", **where, field="response")
        if not isinstance(problem, str) or not problem:
            raise InputError("trace has no problem: a chat example needs the user turn", **where, field="problem")
        yield ChatExample(
            messages=chat_messages(problem, response, system_prompt=system_prompt),
            domain=record.domain or "unknown",
            source=record.source,
            index=index,
            origin=origin,
        )


class ChatRenderer:
    """Turn a conversation into (prompt text, completion text) the way a tokenizer's chat template lays it out.

    The prompt ends with the assistant header (the generation prompt); the completion is what the model must
    produce after it: the response, then the template's end of turn (`<|im_end|>\\n` in ChatML).
    """

    def __init__(self, tokenizer=None, *, mode: str = "verbatim", chat_template: str | None = None):
        if mode not in RENDER_MODES:
            raise ConfigError(f"chat rendering mode must be one of {RENDER_MODES}, got {mode!r}")
        self.tokenizer = tokenizer
        self.mode = mode
        self.template = chat_template or (getattr(tokenizer, "chat_template", None) if tokenizer is not None else None)
        self._turn_end: str | None = None

    @property
    def uses_template(self) -> bool:
        """False: ChatML is written by hand (the tokenizer has no chat template)."""
        return bool(self.template)

    def _apply(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)
        if not isinstance(text, str):
            raise ConfigError("the chat template did not render to one string")
        return text

    def prompt(self, messages: list[dict[str, str]]) -> str:
        """Everything before the assistant's answer, ending with the generation prompt."""
        head = messages[:-1]
        if not self.uses_template:
            return chatml(head)
        return self._apply(head, add_generation_prompt=True)

    def turn_end(self, messages: list[dict[str, str]]) -> str:
        """What the template writes after the assistant's content (found once with a sentinel; cached)."""
        if self._turn_end is None:
            if not self.uses_template:
                self._turn_end = CHATML_TURN_END
            else:
                probe = [*messages[:-1], {"role": "assistant", "content": _SENTINEL}]
                text = self._apply(probe, add_generation_prompt=False)
                if text.count(_SENTINEL) != 1:
                    raise ConfigError("cannot find where the chat template ends an assistant turn (the content "
                                      "does not appear verbatim in its output); use mode='template'")
                self._turn_end = text.split(_SENTINEL, 1)[1]
        return self._turn_end

    def render(self, messages: list[dict[str, str]]) -> tuple[str, str]:
        """(prompt, completion): prompt + completion is the whole training text; only the completion gets loss."""
        if not messages or messages[-1]["role"] != "assistant":
            raise ConfigError("a training conversation must end with the assistant turn")
        prompt = self.prompt(messages)
        if self.mode == "verbatim":
            return prompt, messages[-1]["content"] + self.turn_end(messages)
        full = self._apply(messages, add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ConfigError("the chat template renders the conversation so that it does not start with its own "
                              "generation prompt; use mode='verbatim'")
        return prompt, full[len(prompt):]
