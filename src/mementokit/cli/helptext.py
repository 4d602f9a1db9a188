"""One way to lay out every command's help, applied to the whole app (commands added later included).

Click rewraps help paragraphs to the terminal width, which breaks an example command in the middle of an option
(`--shuffle-` / `seed 0`). `tidy_help` turns the "Example:" / "Examples:" part of a docstring into a block click
leaves alone (`\\b`), each command broken before an option with a shell continuation (` \\`) so it fits
80 columns and can be pasted as is. The command list shows each command's whole first sentence.
"""

from __future__ import annotations

import inspect
import re

import typer

EXAMPLE_WIDTH = 76  # click indents the help by 2: 78 columns, whole at 80
_EXAMPLE_HEADER = re.compile(r"(?:^|(?<=\s))(Examples?):\s*(.*)$", re.DOTALL)


def _words(command: str) -> list[str]:
    """Split on spaces outside quotes (JSON in single quotes stays one word)."""
    words, current, quote = [], "", None
    for char in command:
        if quote:
            current += char
            if char == quote:
                quote = None
        elif char in "'\"":
            current += char
            quote = char
        elif char.isspace():
            if current:
                words.append(current)
            current = ""
        else:
            current += char
    if current:
        words.append(current)
    return words


def _units(words: list[str]) -> list[str]:
    """An option and its value stay together: break points are only before options (and redirections)."""
    units: list[str] = []
    for word in words:
        if units and not word.startswith("-") and word not in (">", "|", "&&"):
            units[-1] += " " + word
        else:
            units.append(word)
    return units


def format_command(command: str, width: int = EXAMPLE_WIDTH) -> list[str]:
    """One example command as lines of at most `width` (where its words allow), continued with ` \\`."""
    lines: list[str] = []
    current = "  "
    for unit in _units(_words(command)):
        if current.strip() and len(current) + 1 + len(unit) + 2 > width:
            lines.append(current + " \\")
            current = "      " + unit
        else:
            current = (current + " " + unit) if current.strip() else current + unit
    lines.append(current)
    return lines


def _example_commands(text: str) -> list[str]:
    """The commands of an examples section: one per line, `\\` continuations joined."""
    commands, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip().removeprefix("$ ")
        if not line:
            continue
        if line.startswith("-") and not pending and commands:  # an option on its own line continues the command
            pending = commands.pop()
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        commands.append(pending)
        pending = ""
    if pending:
        commands.append(pending)
    return commands


def tidy_help(text: str) -> str:
    """The help text with its examples section laid out for 80 columns (the rest is left to click)."""
    text = inspect.cleandoc(text or "")
    paragraphs = text.split("\n\n")
    for i, paragraph in enumerate(paragraphs):
        match = _EXAMPLE_HEADER.search(paragraph.strip())
        if not match or paragraph.startswith("\b"):
            continue
        before = paragraph.strip()[:match.start()].strip()  # "... text. Example: memento ..." in one paragraph
        commands = _example_commands("\n".join([match.group(2)] + paragraphs[i + 1:]))
        body = [line for command in commands for line in format_command(command)]
        header = "Examples:" if len(commands) > 1 else "Example:"
        return "\n\n".join(paragraphs[:i] + ([before] if before else []) + ["\b\n" + header + "\n" + "\n".join(body)])
    return text


def first_sentence(text: str) -> str:
    """The first paragraph, on one line: what the command list shows (whole, wrapped by click)."""
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split())


def _tidy_command(info) -> None:
    text = info.help if isinstance(info.help, str) else inspect.getdoc(info.callback) or ""
    info.help = tidy_help(text)
    if isinstance(info.epilog, str) and _EXAMPLE_HEADER.search(info.epilog):  # examples given as an epilog
        info.epilog = tidy_help(info.epilog)
    if not isinstance(info.short_help, str):
        info.short_help = first_sentence(text)


def tidy_app_help(app: typer.Typer) -> None:
    """Tidy the help of every command and sub-app of `app` (call once, after every command is registered)."""
    for info in app.registered_commands:
        _tidy_command(info)
    if app.registered_callback is not None:
        callback = app.registered_callback
        callback.help = tidy_help(callback.help if isinstance(callback.help, str)
                                  else inspect.getdoc(callback.callback) or "")
    for group in app.registered_groups:
        sub_app = group.typer_instance
        if isinstance(sub_app.info.help, str):
            if not isinstance(sub_app.info.short_help, str):
                sub_app.info.short_help = first_sentence(sub_app.info.help)
            sub_app.info.help = tidy_help(sub_app.info.help)
        tidy_app_help(sub_app)
