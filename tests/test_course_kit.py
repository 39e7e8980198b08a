"""The teacher's kit: the hint ladder, the progress record, the solutions setting, the questions.

Hints and progress are judged through the real CLI in a subprocess, and by the files it leaves: the
record's owner (stat(2): written as the student, not as root), its content, and what strace(1) shows
the kernel was asked to do (a temporary file renamed over the record, never the record opened for
writing). The checks recorded are real `labctl check 1` runs: one failing on the skeleton, one passing
on the reference.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

from helpers import run_labctl

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "lab"
STEPS = range(1, 14)


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A fresh progress record and class file for this test (the conftest's session ones are shared)."""
    monkeypatch.setenv("LABCTL_PROGRESS_FILE", str(tmp_path / "progress.json"))
    monkeypatch.setenv("LABCTL_CLASS_FILE", str(tmp_path / "class.toml"))
    monkeypatch.delenv("SUDO_USER", raising=False)
    return tmp_path


def _record(course: Path) -> dict:
    return json.loads((course / "progress.json").read_text())


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("labctl: error: "), result
    return lines[0]


def test_every_step_has_a_ladder_concept_then_syscall_then_code():
    from labctl import steps
    from labctl.steps import hints
    for n in STEPS:
        ladder = hints.load(steps.get(n))
        kinds = [r.kind for r in ladder.rungs]
        assert kinds[0] == "concept" and "syscall" in kinds and kinds[-1] == "code", (n, kinds)
        assert "```" in ladder.rungs[-1].text, f"step {n}'s last rung shows no code"
        assert re.search(r"\w\(\d\)", ladder.rungs[kinds.index("syscall")].text), \
            f"step {n}'s syscall rung names no man page, such as unshare(2)"


def test_hints_come_in_order_and_are_remembered(course):
    titles = []
    for _ in range(3):
        out = run_labctl("hint", "1")
        assert out.returncode == 0, out.stderr
        titles.append(re.search(r"Step 1, hint (\d) of 3", out.stdout).group(1))
    assert titles == ["1", "2", "3"]
    record = _record(course)
    assert [h["rung"] for h in record["steps"]["1"]["hints"]] == [1, 2, 3]
    assert all(datetime.fromisoformat(h["time"]) for h in record["steps"]["1"]["hints"])
    again = run_labctl("hint", "1", "2")   # an explicit rung, again: shown, the ladder's place kept
    assert again.returncode == 0 and "hint 2 of 3" in again.stdout
    listed = run_labctl("hint", "1", "--list")
    assert listed.stdout.count("seen") == 3 and "the solution" in listed.stdout
    assert "hint 1 of 3" in run_labctl("hint", "2").stdout, "each step has its own place on its ladder"


def test_past_the_last_rung_the_solution_only_if_the_class_allows(course):
    for k in (1, 2, 3):
        run_labctl("hint", "8", str(k))
    (course / "class.toml").write_text("solutions = false\n")
    refused = run_labctl("hint", "8")        # the next after the last rung: the solution
    line = _one_error_line(refused)
    assert "solutions = false" in line and str(course / "class.toml") in line
    assert not [h for h in _record(course)["steps"]["8"]["hints"] if h.get("solution")]
    assert run_labctl("class", "--solutions", "on").returncode == 0
    given = run_labctl("hint", "8")
    assert given.returncode == 0 and "bpf_get_ns_current_pid_tgid" in given.stdout and "def reference" in given.stdout
    assert [h["rung"] for h in _record(course)["steps"]["8"]["hints"] if h.get("solution")] == [4]
    assert _one_error_line(run_labctl("hint", "8", "5")).find("there is no rung 5") > 0


def test_no_setting_shows_solutions_and_the_setting_keeps_other_lines(course):
    assert "shown (the default" in run_labctl("class").stdout
    (course / "class.toml").write_text("# our class\nname = \"ws24\"\n\n[room]\nseats = 20\n")
    assert run_labctl("class", "--solutions", "off").returncode == 0
    import tomllib
    assert tomllib.loads((course / "class.toml").read_text()) == {"name": "ws24", "solutions": False,
                                                                  "room": {"seats": 20}}
    assert "hidden (set in" in run_labctl("class").stdout
    (course / "class.toml").write_text("solutions = maybe\n")   # a typo hides them, and says where
    line = _one_error_line(run_labctl("hint", "1", "4"))
    assert str(course / "class.toml") in line and "not valid TOML" in line


def test_reference_is_refused_when_solutions_are_hidden(course):
    (course / "class.toml").write_text("solutions = false\n")
    line = _one_error_line(run_labctl("check", "1", "--reference"))
    assert "--reference" in line and "solutions = false" in line
    assert not (course / "progress.json").exists(), "a refused check is not an attempt"


def test_a_ladder_is_data_a_new_one_needs_no_code(course, monkeypatch):
    lab = course / "lab"
    shutil.copytree(LAB / "01-namespaces", lab / "01-namespaces")
    with open(lab / "01-namespaces/hints.toml", "a") as f:
        f.write("\n[[rung]]\nkind = \"code\"\ntitle = \"A fourth rung\"\ntext = \"More code.\"\n")
    monkeypatch.setenv("LABCTL_LAB_DIR", str(lab))
    listed = run_labctl("hint", "1", "--list")
    assert "A fourth rung" in listed.stdout and "5 " in listed.stdout
    (lab / "01-namespaces/hints.toml").write_text('[[rung]]\nkind = "code"\ntitle = "x"\ntext = "y"\n'
                                                 '[[rung]]\nkind = "concept"\ntitle = "x"\ntext = "y"\n')
    assert "a concept rung after a code rung" in _one_error_line(run_labctl("hint", "1"))
    (lab / "01-namespaces/hints.toml").unlink()
    assert "no hint ladder yet" in _one_error_line(run_labctl("hint", "1"))


def test_a_damaged_record_is_named_in_one_line_and_never_overwritten(course):
    assert "No progress recorded yet" in run_labctl("progress").stdout
    damaged = course / "progress.json"
    damaged.write_text('{"format": "labctl-progress/1", "steps": {"1": ')
    before = damaged.read_bytes()
    for words in (["progress"], ["hint", "1"], ["progress", "--export", "csv"]):
        line = _one_error_line(run_labctl(*words))
        assert str(damaged) in line and "damaged" in line and "mv " in line
    assert damaged.read_bytes() == before


def test_the_record_is_written_to_a_temporary_file_then_renamed(course):
    run_labctl("hint", "3")   # an existing record, so that a rewrite would have something to damage
    trace = course / "strace.log"
    result = subprocess.run(["strace", "-f", "-o", str(trace), "-e", "trace=openat,rename,renameat,renameat2",
                             sys.executable, "-m", "labctl", "hint", "3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = trace.read_text()
    path = str(course / "progress.json")
    writes = [line for line in calls.splitlines() if "openat(" in line and f"{course}/" in line
              and "progress.json" in line and re.search(r"O_WRONLY|O_RDWR", line)]
    renames = [line for line in calls.splitlines() if "rename" in line and line.rstrip().endswith("= 0")]
    assert writes and all(f"/.progress.json.tmp-" in w and "O_EXCL" in w for w in writes), writes
    assert any(f'"{path}"' in r and ".progress.json.tmp-" in r for r in renames), renames
    assert [h["rung"] for h in _record(course)["steps"]["3"]["hints"]] == [1, 2]
    assert not list(course.glob(".progress.json.tmp-*")), "no temporary file is left"


def test_an_interrupted_write_leaves_the_old_record(course, monkeypatch):
    """What a kill between writing the temporary file and renaming it leaves: the old record, whole."""
    from labctl.steps import progress
    progress.record_hint(5, 1)
    before = (course / "progress.json").read_bytes()

    def killed(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        progress.record_hint(5, 2)
    assert (course / "progress.json").read_bytes() == before
    assert not list(course.glob(".progress.json.tmp-*"))


@pytest.mark.root
def test_checks_are_recorded_as_the_student_fail_then_pass(course, monkeypatch):
    """Two real `sudo labctl check 1` runs by user nobody: the skeleton fails, the reference passes;
    the record has both with their times and the failure's cause, and nobody owns it."""
    home = Path(tempfile.mkdtemp(prefix="labctl-student-"))
    try:
        os.chmod(home, 0o755)
        os.chown(home, 65534, 65534)
        record_file = home / ".local/share/labctl/progress.json"
        monkeypatch.setenv("LABCTL_PROGRESS_FILE", str(record_file))
        monkeypatch.setenv("SUDO_USER", "nobody")
        run_labctl("hint", "1")
        failed = run_labctl("check", "1")
        passed = run_labctl("check", "1", "--reference")
        assert failed.returncode == 1 and passed.returncode == 0, failed.stdout + passed.stdout
        st = os.stat(record_file)
        assert (st.st_uid, st.st_gid) == (65534, 65534) and st.st_mode & 0o777 == 0o644
        assert os.stat(record_file.parent).st_uid == 65534, "the directories it made are the student's too"
        checks = json.loads(record_file.read_text())["steps"]["1"]["checks"]
        assert [(c["result"], c["reference"]) for c in checks] == [("fail", False), ("pass", True)]
        assert "namespace" in checks[0]["cause"] and checks[1]["cause"] is None
        assert checks[0]["hints"] == 1
        first, second = (datetime.fromisoformat(c["time"]) for c in checks)
        assert first <= second and abs((datetime.now().astimezone() - second).total_seconds()) < 120
        table = run_labctl("progress", env=dict(os.environ, COLUMNS="200"))
        row = next(line for line in table.stdout.splitlines() if line.strip("│ ").startswith("1 "))
        assert "fail" in row and " 1 " in row and "1/3" in row, row
    finally:
        shutil.rmtree(home)


def test_export_parses_back(course):
    from labctl.steps import progress
    progress.record_hint(2, 1)
    progress.record_check(2, passed=False, cause="the process's root is not ROOTFS, \"quoted\"", reference=False)
    progress.record_check(2, passed=True, cause=None, reference=False)
    progress.record_check(3, passed=True, cause=None, reference=True)
    rows = list(csv.DictReader(io.StringIO(run_labctl("progress", "--export", "csv").stdout)))
    assert [r["step"] for r in rows] == [str(n) for n in STEPS]
    two, three = rows[1], rows[2]
    assert (two["status"], two["attempts"], two["hints_seen"], two["rungs"]) == ("pass", "2", "1", "3")
    assert two["last_cause"] == "the process's root is not ROOTFS, \"quoted\"" and two["user"]
    assert (three["status"], three["attempts"], three["reference_runs"]) == ("reference only", "0", "1")
    exported = json.loads(run_labctl("progress", "--export", "json").stdout)
    step2 = exported["steps"][1]
    assert step2["step"] == 2 and [c["result"] for c in step2["checks"]] == ["fail", "pass"]
    assert step2["first_pass"] == step2["checks"][1]["time"] and exported["user"] == two["user"]


def _questions(text: str) -> list[str]:
    return re.findall(r"^\*\*Q(\d+\.\d+)\.?\*\*", text, re.MULTILINE)


def test_every_readme_asks_questions_and_the_teachers_notes_answer_each():
    teaching = (LAB / "TEACHING.md").read_text()
    answers = teaching[teaching.index("## Answers"):]
    answered = _questions(answers)
    asked_all = []
    for n in STEPS:
        readme = next(LAB.glob(f"{n:02d}-*")) / "README.md"
        text = readme.read_text()
        assert "## Predict, then run" in text, readme
        section = text[text.index("## Predict, then run"):]
        assert "\n## " not in section[3:], f"{readme}: the questions are the README's last section"
        asked = _questions(section)
        assert 2 <= len(asked) <= 3 and all(q.startswith(f"{n}.") for q in asked), (readme, asked)
        assert section.count("Run:") >= len(asked), f"{readme}: each question says what to run"
        asked_all += asked
    assert sorted(answered) == sorted(asked_all), "TEACHING.md answers exactly the README's questions"
    assert len(set(answered)) == len(answered)
