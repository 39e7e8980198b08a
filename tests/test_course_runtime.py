"""The runtime the student grows in lab/mycontainer (one part per step, labctl/steps/mycontainer):
`labctl lab take|reset` never loses the student's work; the skeleton parts say what must become true,
never the line to type; and a runtime completed step by step, in order, passes every check."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import run_labctl, student_lab
from labctl.steps import mycontainer

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "lab" / "mycontainer"
#: step -> its part, for the parts written so far
BUILT = {n: name for n, name in mycontainer.PARTS.items() if (mycontainer.HERE / "skeleton" / f"{name}.py").exists()}


def test_the_lab_ships_the_skeleton_of_every_part():
    """lab/mycontainer/PART.py is, in git, exactly the skeleton `labctl lab reset N` puts back."""
    assert BUILT, "no part yet"
    for step, name in BUILT.items():
        assert (RUNTIME / f"{name}.py").read_text() == (mycontainer.HERE / "skeleton" / f"{name}.py").read_text(), name
        assert (mycontainer.HERE / "reference" / f"{name}.py").exists(), name


def _todo_blocks(text: str) -> list[str]:
    """Each TODO comment with its continuation lines."""
    blocks, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(r"(#|/\*|\*)\s*TODO", stripped):
            current = [stripped]
            blocks.append(current)
        elif current is not None and stripped.startswith(("#", "*")) and not stripped.startswith("*/"):
            current.append(stripped)
        else:
            current = None
    return [" ".join(b) for b in blocks]


#: What a line of code looks like inside a comment: a call with arguments (`os.chdir(rootfs)`,
#: `host.link("add", ...)`), an assignment, a C statement. A man page reference (`mount(2)`) is not one.
CODE = re.compile(r"[\w.\]]+\((?!\d\))[^)]*\)|\b\w+ = \w|;\s*$|\+\+|\bexecs\.increment")


def test_todos_say_what_must_become_true_not_the_line_to_type():
    files = [RUNTIME / f"{name}.py" for name in BUILT.values()] + \
        [p for p in sorted(REPO.glob("lab/[01][0-9]-*/exercise.py")) if int(p.parent.name[:2]) in set(BUILT) | {8, 11, 12, 13}]
    found = {}
    for path in files:
        for block in _todo_blocks(path.read_text()):
            if CODE.search(block):
                found[f"{path.relative_to(REPO)}: {block[:60]}"] = CODE.search(block).group(0)
    assert found == {}


def test_the_code_detector_sees_code(tmp_path):
    """The test above is only as good as CODE: it must catch the literal lines the TODOs used to hold."""
    for old in ("# TODO 5: os.chdir(rootfs); pivot_root(\".\", \".\")",
                "# TODO 1: host.link(\"add\", ifname=..., kind=\"veth\", peer=...)",
                "/* TODO 2: add one to the counter:  execs.increment(zero); */",
                "# TODO 1: cgroup = cgroups.Cgroup.create(name, limits)"):
        assert CODE.search(_todo_blocks(old)[0]), old
    assert not CODE.search("# TODO 2: sethostname(2), man 2 sethostname; mount(2) with MS_PRIVATE")


def test_take_and_reset_keep_the_students_own_version(tmp_path):
    env = student_lab(tmp_path)
    part = tmp_path / "lab" / "mycontainer" / "rootfs.py"
    mine = part.read_text().replace("    pass\n", "    print('my attempt')\n", 1)
    part.write_text(mine)
    took = run_labctl("lab", "take", "2", env=env)
    assert took.returncode == 0, took.stdout + took.stderr
    assert part.read_text() == (mycontainer.HERE / "reference" / "rootfs.py").read_text()
    assert (part.parent / "rootfs.py.mine").read_text() == mine
    reset = run_labctl("lab", "reset", "2", env=env)      # the reference is no one's work: no backup
    assert reset.returncode == 0 and part.read_text() == (mycontainer.HERE / "skeleton" / "rootfs.py").read_text()
    assert sorted(p.name for p in part.parent.glob("rootfs.py.mine*")) == ["rootfs.py.mine"]
    part.write_text(mine + "# second attempt\n")
    assert run_labctl("lab", "take", "2", env=env).returncode == 0
    assert (part.parent / "rootfs.py.mine").read_text() == mine                       # the first kept
    assert (part.parent / "rootfs.py.mine.2").read_text() == mine + "# second attempt\n"
    again = run_labctl("lab", "take", "2", env=env)
    assert again.returncode == 0 and "already is" in again.stdout
    status = run_labctl("lab", "status", env=env)
    assert re.search(r"2\s*│\s*rootfs\.py\s*│\s*reference\s*│\s*rootfs\.py\.mine rootfs\.py\.mine\.2", status.stdout), \
        status.stdout


def test_take_names_the_steps_that_have_a_part(tmp_path):
    result = run_labctl("lab", "take", "8", env=student_lab(tmp_path))
    assert result.returncode != 0 and "step 8 has no part of the runtime" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# ---------------------------------------------------------------------------------------------
# A runtime built in order, as a student does it: at each step the check fails while the step's part is
# the skeleton (every earlier part done), then passes once it is done (here: `labctl lab take N`).
# Steps 8, 11, 12 and 13 have no part (8's exercise watches a container from outside, 11's is a client of
# labctl's daemon, 12's turns an upper directory into a layer, 13's joins two namespaces by VXLAN): they
# are completed in place.

@pytest.mark.root
@pytest.mark.slow
def test_a_runtime_completed_step_by_step_passes_every_check(tmp_path):
    from test_checks import STEP12_TODOS, STEP13_TODOS, _step12, _step13
    from test_daemon_course import solve as solve_step_11
    from test_tracing import _solve as solve_step_8
    env = student_lab(tmp_path)
    for step in sorted(BUILT) + [8, 11, 12, 13]:
        before = run_labctl("check", str(step), env=env, timeout=300)
        assert before.returncode == 1 and "FAIL" in before.stdout, f"check {step} before:\n{before.stdout}{before.stderr}"
        if step in BUILT:
            took = run_labctl("lab", "take", str(step), env=env)
            assert took.returncode == 0, took.stdout + took.stderr
        elif step == 8:
            exercise = tmp_path / "lab" / "08-ebpf" / "exercise.py"
            exercise.write_text(solve_step_8(exercise.read_text()))
        elif step == 11:
            exercise = tmp_path / "lab" / "11-client-server" / "exercise.py"
            exercise.write_text(solve_step_11(exercise.read_text()))
        elif step == 12:
            (tmp_path / "lab" / "12-build-push" / "exercise.py").write_text(_step12(*STEP12_TODOS))
        else:
            (tmp_path / "lab" / "13-multi-host" / "exercise.py").write_text(_step13(*STEP13_TODOS))
        after = run_labctl("check", str(step), env=env, timeout=300)
        assert after.returncode == 0, f"check {step} after:\n{after.stdout}{after.stderr}"
