import os
import sys
from pathlib import Path

from hypothesis import settings

# Test helpers (tiny tokenizer and model builders) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

# No time limits per example (the machines are shared and noisy). Under CI the examples are derandomized so a
# run is reproducible; locally they stay random, to keep finding new cases.
settings.register_profile("local", deadline=None, print_blob=True)
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "local")
