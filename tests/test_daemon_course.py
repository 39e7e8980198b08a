"""Step 11 of the course: `labctl check 11` judges lab/11-client-server/exercise.py by what the daemon
saw (the requests from the exercise's PID, SO_PEERCRED's, in its log; the container's events; its record
in the state directory), never by what the exercise printed. The check fails on the untouched skeleton,
passes on the reference and on the skeleton completed, and names the TODO of a client that leaves the
container behind. The demo runs and leaves nothing; the exercise needs nothing but the standard library."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl.containers import store

REPO = Path(__file__).resolve().parent.parent
EXERCISE = REPO / "lab" / "11-client-server" / "exercise.py"

#: The skeleton's TODO bodies -> a solution (the hints' "code" rung says the same).
SOLUTION = {
    "    return None\n\n\ndef send_request":
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n    s.connect(path)\n    return s\n\n\n"
        "def send_request",
    "    pass\n\n\ndef read_response":
        "    head = (f'{method} {url} HTTP/1.1\\r\\nHost: docker\\r\\nContent-Type: application/json\\r\\n'\n"
        "            f'Content-Length: {len(body)}\\r\\n\\r\\n')\n"
        "    sock.sendall(head.encode() + body)\n\n\ndef read_response",
    "    return 0, b\"\"\n":
        "    status = int(f.readline().split()[1])\n"
        "    headers = {}\n"
        "    while (line := f.readline()) not in (b'\\r\\n', b''):\n"
        "        name, _, value = line.decode().partition(':')\n"
        "        headers[name.strip().lower()] = value.strip()\n"
        "    if 'content-length' in headers:\n"
        "        return status, f.read(int(headers['content-length']))\n"
        "    if headers.get('transfer-encoding') != 'chunked':\n"
        "        return status, b''\n"
        "    body = b''\n"
        "    while (size := int(f.readline(), 16)) > 0:\n"
        "        body += f.read(size)\n"
        "        f.readline()\n"
        "    f.readline()\n"
        "    return status, body\n",
    "    sys.exit(\"TODO 4: no container made yet\")\n":
        "    status, answer = request(path, 'POST', '/containers/create', {'Image': image, 'Cmd': command})\n"
        "    if status != 201:\n"
        "        sys.exit(answer['message'])\n"
        "    cid = answer['Id']\n"
        "    request(path, 'POST', f'/containers/{cid}/start')\n"
        "    status, answer = request(path, 'POST', f'/containers/{cid}/wait')\n"
        "    KEEP request(path, 'DELETE', f'/containers/{cid}')\n"
        "    print(cid)\n"
        "    print(answer['StatusCode'])\n"
        "    sys.exit(answer['StatusCode'])\n",
}


def solve(skeleton: str, delete: bool = True, length: bool = True) -> str:
    solved = skeleton
    for old, new in SOLUTION.items():
        assert old in solved, old
        solved = solved.replace(old, new.replace("KEEP ", "" if delete else "# "))
    if not length:
        framed = solved
        solved = solved.replace("            f'Content-Length: {len(body)}\\r\\n\\r\\n')", "            '\\r\\n')")
        assert solved != framed
    return solved


def test_the_exercise_needs_only_the_standard_library(tmp_path):
    """Debian's python3, outside the lab's venv and without `labctl exercise`: it reaches its usage."""
    result = subprocess.run(["/usr/bin/python3", "-I", str(EXERCISE)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=30)
    assert result.returncode == 1 and result.stderr.startswith("Step 11 exercise:"), result.stderr


@pytest.mark.root
def test_check_11_fails_on_the_skeleton_and_passes_on_the_reference():
    before = {c.id for c in store.all_containers()}
    failed = run_labctl("check", "11")
    assert failed.returncode == 1 and "FAIL" in failed.stdout, failed.stdout + failed.stderr
    assert "TODO 1" in failed.stdout
    passed = run_labctl("check", "11", "--reference")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASS" in passed.stdout and "event destroy" in passed.stdout
    assert {c.id for c in store.all_containers()} == before          # the check removed what it made


@pytest.mark.root
def test_check_11_passes_the_completed_skeleton(tmp_path):
    solved = tmp_path / "exercise.py"
    solved.write_text(solve(EXERCISE.read_text()))
    passed = run_labctl("check", "11", "--file", str(solved))
    assert passed.returncode == 0, passed.stdout + passed.stderr


@pytest.mark.root
def test_check_11_names_the_container_left_behind_and_removes_it(tmp_path):
    before = {c.id for c in store.all_containers()}
    leaky = tmp_path / "exercise.py"
    leaky.write_text(solve(EXERCISE.read_text(), delete=False))
    failed = run_labctl("check", "11", "--file", str(leaky))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "still there" in failed.stdout and "DELETE /containers/{id}" in failed.stdout
    assert {c.id for c in store.all_containers()} == before


@pytest.mark.root
def test_check_11_says_create_was_refused_when_the_body_has_no_length(tmp_path):
    """Without Content-Length the daemon cannot know the body is there: create is refused, and said so."""
    unframed = tmp_path / "exercise.py"
    unframed.write_text(solve(EXERCISE.read_text(), length=False))
    failed = run_labctl("check", "11", "--file", str(unframed))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "answered 201" in failed.stdout and "Content-Length" in failed.stdout, failed.stdout


@pytest.mark.root
def test_step_11_demo_runs_and_leaves_nothing():
    before = {c.id for c in store.all_containers()}
    result = run_labctl("step", "11", "--no-explain", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/containers/create" in result.stdout and "still running" in result.stdout
    assert 'execve("/bin/true")' in result.stdout and "supervisor" in result.stdout   # the traced timeline
    assert {c.id for c in store.all_containers()} == before


@pytest.mark.root
def test_request_latency_figure_from_runs_through_a_private_daemon():
    """The notebook's figure, from create/start/wait/delete times measured now on a daemon of the test's
    own; the daemon logged each request with this process's PID (SO_PEERCRED), its status the one expected."""
    import matplotlib
    matplotlib.use("Agg")
    from labctl.demos import daemonrun
    from labctl.plots.daemon import request_latency
    with daemonrun.private_daemon() as daemon:
        runs = [daemonrun.timed_run(daemon.socket, "busybox", ["/bin/true"])[0] for _ in range(3)]
        logged = [(r.method, r.path.split("/")[-1], r.status) for r in daemon.requests(os.getpid())
                  if r.path != "/_ping"]                  # the ping of `labctl daemon start`, from here too
    assert len(logged) == 12 and {s for _, _, s in logged} == {201, 204, 200}
    assert [m for m, _, _ in logged[:4]] == ["POST", "POST", "POST", "DELETE"]
    assert all(list(r) == ["create", "start", "wait", "delete"] and min(r.values()) > 0 for r in runs)
    fig = request_latency(runs)
    ax = fig.axes[0]
    assert "ms" in ax.get_xlabel() and ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["create", "start", "wait", "delete"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["run 1", "run 2", "run 3"]
