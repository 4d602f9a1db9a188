"""The one chat prompt builder: a tokenizer's own chat template, or the Memento ChatML layout when it has none.

    render_chat(tokenizer, [{"role": "user", "content": "What is 2 + 2?"}])
    # '<|im_start|>user\\nWhat is 2 + 2?<|im_end|>\\n<|im_start|>assistant\\n'   (no template: Memento ChatML)

Memento models are trained without a system prompt (the reference overlay's `memento_nosys.jinja`), so the ChatML
fallback writes exactly the turns it is given and nothing else. The tokenizer is only duck-typed here
(`apply_chat_template`, `chat_template`): the format core imports nothing.
"""

from __future__ import annotations

CHATML_TURN = "<|im_start|>{role}\n{content}<|im_end|>\n"
CHATML_GENERATION_PROMPT = "<|im_start|>assistant\n"
CHATML_TURN_END = "<|im_end|>\n"


def chatml(messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
           continue_final_message: bool = False) -> str:
    """Memento ChatML: one `<|im_start|>role\\ncontent<|im_end|>\\n` per turn, then the assistant header.

    continue_final_message leaves the last turn open (no end of turn, no header) so the model continues it.
    """
    text = "".join(CHATML_TURN.format(role=m["role"], content=m["content"]) for m in messages)
    if continue_final_message:
        return text[: -len(CHATML_TURN_END)] if messages else text
    return text + CHATML_GENERATION_PROMPT if add_generation_prompt else text


def render_chat(tokenizer, messages: list[dict[str, str]], *, chat_template: str | None = None,
                add_generation_prompt: bool = True, continue_final_message: bool = False) -> str:
    """The prompt text of a conversation: `chat_template` (Jinja text), else the tokenizer's template, else ChatML."""
    template = chat_template or (getattr(tokenizer, "chat_template", None) if tokenizer is not None else None)
    if not template:
        return chatml(messages, add_generation_prompt=add_generation_prompt,
                      continue_final_message=continue_final_message)
    options = {"continue_final_message": True} if continue_final_message else {}
    text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt and not continue_final_message,
                                         **options)
    if not isinstance(text, str):
        raise ValueError("the chat template did not render to one string")
    return text


def chat_prompt_ids(tokenizer, problem: str, *, chat_template: str | None = None) -> list[int]:
    """Token ids of a one-turn prompt (the user's problem) ending with the assistant header."""
    text = render_chat(tokenizer, [{"role": "user", "content": problem}], chat_template=chat_template)
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]
