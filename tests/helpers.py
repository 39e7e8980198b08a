"""Helpers the tests share (fixtures live in conftest.py)."""
from __future__ import annotations

import subprocess
import sys


def run_labctl(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "labctl", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def student_lab(tmp_path, take=(), edits=None) -> dict:
    """A copy of lab/ under tmp_path, as a student who did the steps in `take` would have it (their parts
    taken with `labctl lab take N`), then `edits` applied: {"rootfs.py": [(old, new), ...]}. Returns the
    environment that points labctl at it (LABCTL_LAB_DIR), for run_labctl(..., env=...)."""
    import os
    import shutil
    from pathlib import Path
    lab = tmp_path / "lab"
    shutil.copytree(Path(__file__).resolve().parent.parent / "lab", lab,
                    ignore=shutil.ignore_patterns("__pycache__", "*.mine*"))
    env = {**os.environ, "LABCTL_LAB_DIR": str(lab)}
    for step in take:
        result = run_labctl("lab", "take", str(step), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    for name, replacements in (edits or {}).items():
        path = lab / "mycontainer" / name
        text = path.read_text()
        for old, new in replacements:
            assert old in text, f"{old!r} is not in {path}"
            text = text.replace(old, new)
        path.write_text(text)
    return env
