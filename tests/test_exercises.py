"""Every exercise runs the same way: `sudo python3 exercise.py ARGS` in its folder (or `python3
lab/NN-topic/exercise.py` from anywhere), with Debian's python3, or through `labctl check N`. The checks
themselves are tested step by step (tests/test_namespaces.py, ...). Needs no root."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXERCISES = sorted(REPO.glob("lab/[0-9][0-9]-*/exercise.py"))
DEBIAN_PYTHON = Path("/usr/bin/python3")


def test_there_are_exercises():
    assert len(EXERCISES) >= 8


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="no /usr/bin/python3 (Debian's) on this machine")
@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(),
                    reason="no .venv beside lab/ (vagrant/provision.sh makes it): exercises 3, 6, 7 need it")
@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.parent.name for p in EXERCISES])
def test_debian_python3_reaches_every_import_of_the_exercise(exercise, tmp_path):
    """Without arguments an exercise prints its usage: by then it has imported all it needs (labctl,
    pyroute2, bcc), whatever it needs to do to get them."""
    result = subprocess.run([str(DEBIAN_PYTHON), str(exercise)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    number = int(exercise.parent.name[:2])
    assert result.returncode == 1 and result.stderr.startswith(f"Step {number} exercise:"), result.stderr


def test_no_exercise_edits_sys_path():
    """They reach labctl through the lab's virtual environment, not by pointing sys.path at the tree."""
    assert [p.parent.name for p in EXERCISES if "sys.path" in p.read_text()] == []


@pytest.mark.parametrize("folder", [p.parent for p in EXERCISES], ids=[p.parent.name for p in EXERCISES])
def test_readme_and_usage_run_the_exercise_with_python3(folder):
    """The README's "Try it" lines and the exercise's usage name one interpreter: python3."""
    texts = (folder / "README.md").read_text() + (folder / "exercise.py").read_text()
    interpreters = set(re.findall(r"([^\s`]*python[^\s`]*) (?:\S*/)?exercise\.py", texts))
    assert interpreters == {"python3"}
