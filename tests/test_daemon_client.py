"""Step 11: labctl's own commands as clients of the daemon (`--host unix:///PATH`, or LABCTL_HOST), on
the same state as docker's: what one starts, the other sees."""
from __future__ import annotations

import os

import pytest

from helpers import run_labctl
from labctl import state
from labctl.containers import store

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("client") / "labctl.sock")
    assert run_labctl("daemon", "start", "--socket", path).returncode == 0
    yield f"unix://{path}"
    assert run_labctl("daemon", "stop", "--socket", path).returncode == 0


def test_run_through_the_daemon_gives_output_streams_and_exit_code(host):
    before = {c.id for c in store.all_containers()}
    done = run_labctl("--host", host, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    # a container's stdout and stderr share its log file, in the order written: both come back as stdout
    assert (done.returncode, done.stdout) == (3, "out\nerr\n"), done.stderr
    assert {c.id for c in store.all_containers()} == before


def test_detached_ps_logs_exec_stop_rm_through_the_daemon(host):
    env = dict(os.environ, LABCTL_HOST=host)
    started = run_labctl("run", "-d", "--name", "viahost", "busybox", "sh", "-c", "echo a; echo b; sleep 600", env=env)
    assert started.returncode == 0, started.stderr
    try:
        pid = store.find("viahost").pid
        assert started.stdout.strip() == store.find("viahost").id
        assert "viahost" in run_labctl("ps", env=env).stdout
        assert store.find("viahost").id[:12] in run_labctl("ps", "-q", env=env).stdout.split()
        for _ in range(50):
            if run_labctl("logs", "viahost", env=env).stdout == "a\nb\n":
                break
        assert run_labctl("logs", "--tail", "1", "viahost", env=env).stdout == "b\n"
        entered = run_labctl("exec", "viahost", "sh", "-c", "echo in; exit 4", env=env)
        assert (entered.returncode, entered.stdout) == (4, "in\n")
        assert run_labctl("stop", "-t", "1", "viahost", env=env).returncode == 0
        assert state.process_state(pid) in (None, "Z", "X")          # the kernel: PID 1 is gone
    finally:
        assert run_labctl("rm", "-f", "viahost", env=env).returncode == 0
    gone = run_labctl("rm", "viahost", env=env)
    assert gone.returncode == 1 and "No such container: viahost" in gone.stderr
    assert "localhost/busybox:latest" in run_labctl("images", "-q", env=env).stdout.split()
