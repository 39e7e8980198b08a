"""Every exercise runs the same way: `sudo labctl exercise N -- ARGS`, from any directory, with the lab's
interpreter (labctl, pyroute2, bcc) and the student's runtime (lab/mycontainer) importable; `labctl
check N` starts it the same way. The checks themselves are tested step by step (tests/test_namespaces.py,
...); the runtime the exercises grow, in tests/test_course_runtime.py."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import run_labctl, student_lab

REPO = Path(__file__).resolve().parent.parent
EXERCISES = sorted(REPO.glob("lab/[0-9][0-9]-*/exercise.py"))


def test_there_are_exercises():
    assert len(EXERCISES) >= 8


@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.parent.name for p in EXERCISES])
def test_labctl_exercise_reaches_every_import_of_the_exercise(exercise, tmp_path):
    """Without arguments an exercise prints its usage: by then it has imported all it needs (its parts
    of lab/mycontainer, labctl, pyroute2, bcc). Run from a directory that is not the repository's."""
    number = int(exercise.parent.name[:2])
    result = run_labctl("exercise", str(number), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith(f"Step {number} exercise:"), result.stderr


@pytest.mark.root
def test_labctl_exercise_runs_the_students_part_from_another_directory(tmp_path):
    """`labctl exercise 1 -- HOSTNAME COMMAND` from /: the command runs in the UTS namespace the
    student's part made, with that hostname, as PID 1 (asked of the kernel by the command itself)."""
    env = student_lab(tmp_path, take=[1])
    result = run_labctl("exercise", "1", "--", "box-ex1", "sh", "-c", "hostname; echo $$; exit 3",
                        env=env, cwd="/")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.split() == ["box-ex1", "1"]


def test_no_exercise_edits_sys_path():
    """They reach lab/mycontainer through `labctl exercise`'s runner, not by pointing sys.path at the tree."""
    assert [p.parent.name for p in EXERCISES if "sys.path" in p.read_text()] == []


@pytest.mark.parametrize("folder", [p.parent for p in EXERCISES], ids=[p.parent.name for p in EXERCISES])
def test_readme_and_usage_run_the_exercise_one_way(folder):
    """The README's "Try it" lines and the exercise's usage name no interpreter: `labctl exercise N --`."""
    number = int(folder.name[:2])
    texts = (folder / "README.md").read_text() + (folder / "exercise.py").read_text()
    assert re.findall(r"[^\s`]*python[^\s`]* (?:\S*/)?exercise\.py", texts) == []
    assert f"labctl exercise {number} -- " in (folder / "README.md").read_text()
    assert f"labctl exercise {number} -- " in (folder / "exercise.py").read_text()
