"""Helpers the tests share (fixtures live in conftest.py)."""
from __future__ import annotations

import subprocess
import sys


def run_labctl(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "labctl", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)
