"""The CLI as a user meets it: help, errors as one line, doctor, tour, and cleanup after a SIGKILL."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl.images import labimage
from labctl import state

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.root(False)
def test_help_is_fast_and_lists_examples():
    times = []
    for _ in range(5):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "labctl", "--help"], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    assert out.returncode == 0 and "examples:" in out.stdout
    assert min(times) < 0.2, f"labctl --help took {min(times):.3f} s at best"


@pytest.mark.root(False)
def test_help_imports_no_heavy_module():
    code = "import sys; from labctl.client import main as cli; cli.build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'pyroute2', 'bcc', 'matplotlib', 'psutil')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _command_names(parser: argparse.ArgumentParser) -> list[str]:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(subparsers.choices)


def test_every_command_answers_help_with_examples():
    from labctl.client import main as cli
    commands = _command_names(cli.build_parser())
    assert commands == list(cli.GROUP_OF), "labctl --help lists the commands in the order of main.GROUP_OF"
    for words in [[c] for c in commands] + [["cgroup", "info"], ["cgroup", "run"], ["jupyter", "url"],
                                             ["jupyter", "serve"]]:
        result = run_labctl(*words, "--help")
        assert result.returncode == 0 and "examples:" in result.stdout and not result.stderr, words
        assert result.stdout.startswith(f"usage: labctl {' '.join(words)} "), words


def test_only_the_command_on_the_line_is_built_from_the_group_that_defines_it():
    from labctl.client import main as cli
    for name, group in cli.GROUP_OF.items():
        parser = cli.build_parser(only=name)
        assert parser.complete and _command_names(parser) == [name], name
        func = parser.parse_args([name, "info"] if name == "cgroup" else [name] + _REQUIRED.get(name, [])).func
        assert func.__module__ == f"labctl.client.{group}", (name, func)
    assert not cli.build_parser(only="no-such-command").complete   # main() then builds them all


_REQUIRED = {"step": ["1"], "check": ["1"], "hint": ["1"], "import": ["x"], "image": ["inspect", "x"], "rmi": ["x"],
             "login": ["host", "-u", "u"], "save": ["-o", "/tmp/x", "x"],
             "pull": ["x"], "push": ["x"], "build": ["-t", "x", "."], "registry": ["status"], "run": ["busybox"],
             "logs": ["c"], "exec": ["c"],
             "stop": ["c"], "rm": ["c"], "inspect": ["c"], "volume": ["ls"], "jupyter": ["url"], "exercise": ["1"],
             "lab": ["status"], "bundle": ["busybox", "/tmp/b"]}


def test_run_imports_one_command_group_and_the_standard_library_only():
    code = ("import sys; from labctl.client import main as cli; cli.build_parser(only='run'); "
            "print(sorted(m for m in sys.modules if m.startswith('labctl')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == str(sorted(["labctl", "labctl.client", "labctl.client.main", "labctl.client.parsing",
                                             "labctl.client.containers", "labctl.errors"])), out.stdout + out.stderr
    stdlib = ("import sys; before = set(sys.modules); from labctl.client import main as cli; cli.build_parser(only='run'); "
              "print(sorted(m for m in set(sys.modules) - before if not m.startswith('labctl') "
              "and m.split('.')[0] not in sys.stdlib_module_names))")
    out = subprocess.run([sys.executable, "-c", stdlib], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_version_is_written_once():
    import labctl
    import tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "labctl.__version__"}
    result = run_labctl("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"labctl {labctl.__version__}"
    written = [str(p.relative_to(REPO)) for p in (REPO / "labctl").rglob("*.py")
               if f'"{labctl.__version__}"' in p.read_text()]
    assert written == ["labctl/__init__.py"]


def test_step_titles_are_defined_once_in_the_curriculum():
    from labctl import steps
    for step in steps.available():
        assert not hasattr(step.load(), "TITLE"), f"{step.module_name} has its own TITLE: CURRICULUM's topic is the title"


def _one_line_error(result):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("labctl: error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.root(False)
def test_unknown_step_is_one_line():
    line = _one_line_error(run_labctl("step", "42"))
    assert "no step" in line and "labctl steps" in line
    line = _one_line_error(run_labctl("check", "banana"))
    assert "no step" in line


@pytest.mark.parametrize("words", [["step", "1"], ["run", "busybox", "true"], ["cleanup"], ["cgroup", "run", "true"],
                                   ["network"], ["trace", "--build"]])
def test_not_root_is_one_line(words):
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-m", "labctl", *words],
                            capture_output=True, text=True, cwd=REPO)
    line = _one_line_error(result)
    assert "needs root" in line and "sudo" in line and f"`labctl {' '.join(words[:2 if words[0] == 'cgroup' else 1])}" in line


def test_missing_busybox_is_one_line(tmp_path):
    env = dict(os.environ, LABCTL_STATE_DIR=str(tmp_path / "state"), LABCTL_BUSYBOX=str(tmp_path / "none"))
    line = _one_line_error(run_labctl("prepare", env=env))
    assert "busybox-static" in line


@pytest.mark.root(False)
def test_missing_rootfs_in_reference_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "labctl.steps.s02_rootfs", str(tmp_path), "true"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "does not look like a root filesystem" in result.stderr and "Traceback" not in result.stderr


def test_every_reference_solution_fails_in_one_line():
    # a command that does not exist: the reference of step 1 cannot start it
    result = subprocess.run([sys.executable, "-m", "labctl.steps.s01_namespaces", "box", "no-such-command-xyz"],
                            capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "no-such-command-xyz" in lines[0], result.stderr


@pytest.mark.root(False)
def test_doctor_reports_this_hosts_cgroup_mode():
    result = run_labctl("doctor", "--json")
    rows = {r["requirement"]: r for r in json.loads(result.stdout)}
    mode_row = rows["cgroup mode"]
    with open("/proc/self/mountinfo") as f:
        fstypes = [line.split(" - ")[1].split()[0] for line in f]
    v1, v2 = "cgroup" in fstypes, "cgroup2" in fstypes
    expected = "hybrid" if v1 and v2 else ("v2" if v2 else "v1")
    assert mode_row["detail"].startswith(expected if expected != "v2" else "cgroup v2"), mode_row
    if expected == "hybrid":
        unified = Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text().split()
        assert all(c in mode_row["detail"] for c in unified)
    # Exit status follows the rows: non-zero exactly when something needed is missing.
    assert (result.returncode != 0) == any(r["status"] == "fail" for r in rows.values())


def test_doctor_reports_missing_tracefs_with_the_fix():
    # In a private mount namespace, so the host's tracefs stays mounted for everyone else.
    script = f"umount /sys/kernel/tracing 2>/dev/null; exec {sys.executable} -m labctl doctor --json"
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, cwd=REPO)
    rows = {r["requirement"]: r for r in json.loads(result.stdout)}
    assert rows["tracefs"]["status"] == "fail"
    assert "mount -t tracefs" in rows["tracefs"]["fix"]
    assert result.returncode == 1


@pytest.mark.root(False)
def test_steps_lists_the_curriculum():
    from labctl import steps
    result = run_labctl("steps", env=dict(os.environ, COLUMNS="250"))   # wide enough that no title wraps
    assert result.returncode == 0
    for step in steps.CURRICULUM:
        assert step.topic in result.stdout, step


def test_check_waits_for_the_exercise_and_kills_it_after_the_timeout():
    from labctl.steps import checking
    assert checking.run_to_end([sys.executable, "-c", "print('judged'); raise SystemExit(7)"], timeout=30) == (7, "judged")
    start = time.monotonic()
    status, output = checking.run_to_end(["sleep", "60"], timeout=0.5)
    assert status is None and output == "" and time.monotonic() - start < 10
    # the sleep is gone: the residue fixture fails the test if any child of ours is left


def test_tour_runs_the_available_steps():
    from labctl import steps
    result = run_labctl("tour", "--no-explain", timeout=600, env=dict(os.environ, COLUMNS="250"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for step in steps.available():
        assert f"Step {step.number}: {step.topic}" in result.stdout, step
    assert "Tour complete" in result.stdout


def test_check_names_its_step_and_what_it_judges(tmp_path):
    from labctl import steps
    result = run_labctl("check", "1", "--reference")
    assert result.returncode == 0 and f"Checking step 1 ({steps.get(1).topic}): the reference solution" in result.stdout
    line = _one_line_error(run_labctl("check", "1", "--file", str(tmp_path / "missing.py")))
    assert f"no exercise at {tmp_path / 'missing.py'}" in line and "--file" in line


def _alive(pid: int, start_time: int) -> bool:
    return state.process_start_time(pid) == start_time and \
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_cleanup_after_sigkill_mid_step(tmp_path):
    """SIGKILL a running step while its container lives; prove the container outlives it and that
    `labctl cleanup` then removes everything the journal recorded."""
    journal = state.journal_dir()
    before = set(journal.glob("*.json"))
    step = subprocess.Popen([sys.executable, "-m", "labctl.steps.s02_rootfs",
                             str(labimage.ensure_busybox_rootfs()), "sleep", "300"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        records = []
        while time.monotonic() < deadline and not records:
            records = [json.loads(p.read_text()) for p in set(journal.glob("*.json")) - before]
            time.sleep(0.05)
        assert records, "the step never recorded its container"
        container = records[0]["data"]
        assert _alive(container["pid"], container["start_time"])
    finally:
        step.send_signal(signal.SIGKILL)
        step.wait()
    time.sleep(0.2)
    assert _alive(container["pid"], container["start_time"]), "nothing was left: the test would prove nothing"
    result = run_labctl("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removed process" in result.stdout
    assert not _alive(container["pid"], container["start_time"])
    assert set(journal.glob("*.json")) - before == set()


def test_cleanup_removes_what_a_crashed_pull_left_in_the_image_store_unless_a_writer_runs():
    """A pull killed mid-blob leaves incoming/blob-*, an import killed mid-unpack leaves tmp/layer-*/:
    `labctl cleanup` removes both; while a writer holds the store (shared lock) it leaves them alone."""
    from labctl.images.store import ImageStore
    store = ImageStore()
    blob = store.root / "incoming" / "blob-crashed"
    blob.write_bytes(b"half a layer")
    layer = store.root / "tmp" / "layer-crashed"
    (layer / "usr" / "bin").mkdir(parents=True)
    (layer / "usr" / "bin" / "tool").write_bytes(b"\x7fELF")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom labctl import state\n"
                               "with state.locked('image-store', shared=True):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = run_labctl("cleanup")
        assert busy.returncode == 0, busy.stdout + busy.stderr
        assert "a pull or import is running" in busy.stdout
        assert blob.exists() and layer.is_dir()
    finally:
        holder.kill()
        holder.wait()
    result = run_labctl("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not blob.exists() and not layer.exists()
    assert not any((store.root / "incoming").iterdir()) and not any((store.root / "tmp").iterdir())
    assert {"blobs", "layers"} <= {p.name for p in store.root.iterdir()}   # the store itself is untouched


@pytest.fixture
def running_container():
    """A detached busybox container for the commands that work on one; removed at the end."""
    name = f"tcli-{os.getpid()}"
    result = run_labctl("run", "-d", "--name", name, "busybox", "sh", "-c", "echo one; sleep 2; echo two; sleep 60")
    assert result.returncode == 0, result.stderr
    yield name
    run_labctl("rm", "-f", name)


def test_inspect_shows_the_namespaces_of_pid_1_and_logs_follow_the_output(running_container):
    [data] = json.loads(run_labctl("inspect", running_container).stdout)
    pid = data["state"]["pid"]
    assert data["state"]["status"] == "running"
    for kind in ("net", "pid", "mnt"):
        assert data["namespaces"][kind] == os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
    followed = subprocess.Popen([sys.executable, "-m", "labctl", "logs", "-f", running_container],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert followed.stdout.readline() == "one\n"
        assert followed.stdout.readline() == "two\n"    # (written two seconds after the first)
        time.sleep(0.3)
        assert followed.poll() is None                   # still following: the container runs
        os.kill(pid, signal.SIGKILL)
        assert followed.wait(timeout=10) == 0            # and done when it has exited
    finally:
        followed.kill()
        followed.wait()
    [data] = json.loads(run_labctl("inspect", running_container).stdout)
    assert data["state"]["status"] == "exited" and "namespaces" not in data


def test_exec_passes_on_the_exit_code_and_gives_stdin_or_a_terminal_as_asked(running_container):
    plain = run_labctl("exec", running_container, "sh", "-c", "cat; echo out; exit 5", input="typed\n")
    assert plain.returncode == 5 and plain.stdout.split() == ["out"]     # no -i: stdin is /dev/null
    interactive = run_labctl("exec", "-i", running_container, "cat", input="typed\n")
    assert interactive.returncode == 0 and interactive.stdout == "typed\n"
    terminal = run_labctl("exec", "-t", running_container, "sh", "-c", "tty; exit 6", stdin=subprocess.DEVNULL)
    assert terminal.returncode == 6 and terminal.stdout.strip().startswith("/dev/pts/"), terminal.stdout
    missing = run_labctl("exec", running_container, "no-such-command-xyz")
    assert missing.returncode == 126 and "no-such-command-xyz" in _one_line_error(missing)
