"""Tests of the vLLM plugin. They need vLLM 0.32 and run in their own virtual environment (CI: .ci-venv-vllm):

    python -m pytest tests_vllm -p no:xdist

The main suite never collects this folder (pyproject: testpaths = ["tests"]). One engine per test module.
"""

import os
import sys
from pathlib import Path

import pytest

# The engine core runs in the test process, so tests can inspect the scheduler (and no spawn is needed).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
sys.path.insert(0, str(Path(__file__).parent))

import vllm  # noqa: E402,F401  (a missing vLLM must fail this suite, never skip it)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    from helpers_vllm import build_model_dir

    return build_model_dir(tmp_path_factory.mktemp("vllm-model"))


def pytest_sessionfinish(session, exitstatus):
    # CI must not pass when nothing ran (everything deselected or skipped).
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter is not None else 0
    if exitstatus == 0 and passed == 0:
        session.exitstatus = 1
