"""The README's tour runs as written, in order, offline.

The commands are read from the README itself (the "A tour" section: `bash` blocks line by line, `console`
blocks' `$ ` lines), so the README and this test cannot drift apart. Only commands marked `# online` (the hub, an
LLM endpoint) or `# your data` (the user's own files) are skipped. `memento ...` runs in this process through the
real app (one interpreter, so the tour stays fast); a `# server` line runs as a real process until it answers
/health, then is stopped; `export NAME=VALUE` sets the environment of the commands after it; `> FILE` writes
stdout to FILE. Anything else in the tour fails this test, so every line of it stays runnable.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mementokit.cli.helptext import _example_commands
from mementokit.cli.main import app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SKIPPED = ("# online", "# your data")
SERVER = "# server"
# Commands that the tour does not need to show (each has its own tests and --help example).
NOT_IN_TOUR = {"pipeline select", "pipeline split", "pipeline score", "pipeline segment", "pipeline summarize",
               "pipeline assemble", "pipeline report"}


def tour_section(text: str) -> str:
    start = text.index("## A tour")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def tour_commands(text: str) -> list[str]:
    """Every command of the tour, in order, continuation lines joined (as the help's examples are read)."""
    commands: list[str] = []
    for lang, body in re.findall(r"```(bash|console)\n(.*?)```", tour_section(text), re.S):
        kept, continued = [], False
        for line in body.splitlines():
            if continued or (line.startswith("$ ") if lang == "console" else not line.lstrip().startswith("#")):
                kept.append(line)
                continued = line.rstrip().endswith("\\")
        commands += _example_commands("\n".join(kept))
    return commands


def _run(command: str, env: dict[str, str]) -> None:
    words = shlex.split(command, comments=True)
    if words[0] == "export":
        for assignment in words[1:]:
            name, _, value = assignment.partition("=")
            env[name] = value
            os.environ[name] = value
        return
    assert words[0] == "memento", f"the tour may only run memento and export: {command!r}"
    target = None
    if ">" in words:
        at = words.index(">")
        words, target = words[:at], words[at + 1]
    result = CliRunner().invoke(app, words[1:], env={**env, "COLUMNS": "80"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, f"{command}\n{result.output}"
    if target is not None:
        Path(target).write_text(result.stdout, encoding="utf-8")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_until_healthy(command: str, env: dict[str, str]) -> None:
    """Start a `# server` command as a real process, wait for /health, stop it."""
    port = _free_port()
    words = shlex.split(command, comments=True)
    process = subprocess.Popen([sys.executable, "-m", "mementokit.cli", *words[1:], "--port", str(port)],
                               env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, f"{command}\n{process.stdout.read()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{command}: no answer on /health within 180 s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_tour_reads_its_commands_from_the_readme():
    commands = tour_commands(README.read_text(encoding="utf-8"))
    assert commands[0] == "export HF_HUB_OFFLINE=1"
    assert "memento analyze" in commands
    assert any(c.startswith("memento generate --model demo-model") and "--block-masking '{" in c for c in commands)


def test_every_command_of_the_app_is_in_the_tour():
    commands = tour_commands(README.read_text(encoding="utf-8"))
    shown = {" ".join(w for w in shlex.split(c)[1:3] if not w.startswith("-")) for c in commands
             if c.startswith("memento ")}
    shown |= {s.split()[0] for s in shown}
    group = typer.main.get_command(app)
    names = []
    for name, command in group.commands.items():
        names += [f"{name} {sub}" for sub in getattr(command, "commands", {})] or [name]
    missing = [n for n in names if n not in NOT_IN_TOUR and n not in shown and n.split()[0] not in shown]
    assert not missing, f"commands missing from the README tour: {missing}"


@pytest.mark.slow
def test_the_readme_tour_runs_offline_in_order(tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)  # tiny models gain nothing from threads, and the machine's cores are shared
    (tmp_path / "tests").symlink_to(REPO / "tests")
    monkeypatch.chdir(tmp_path)
    for name in ("HF_HUB_OFFLINE", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    env: dict[str, str] = {}
    ran = 0
    for command in tour_commands(README.read_text(encoding="utf-8")):
        if any(mark in command for mark in SKIPPED):
            continue
        if SERVER in command:
            _serve_until_healthy(command, env)
        else:
            _run(command, env)
        ran += 1
    assert ran >= 14
    assert env["HF_HUB_OFFLINE"] == "1"
    for written in ("memento-report/report.html", "compressed.txt", "synthetic.jsonl", "demo-model/config.json",
                    "report-with-kv/kv_typical_trace.png", "kv.png", "curve.png", "sft-data", "run/final"):
        assert (tmp_path / written).exists(), written
    assert "KV cache (simulator)" in (tmp_path / "report-with-kv/report.html").read_text(encoding="utf-8")
