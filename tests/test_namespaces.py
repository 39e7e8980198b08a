"""Step 1: namespaces, judged by /proc/<pid>/ns, NSpid and the UTS namespace's hostname."""
from __future__ import annotations

import os
import signal
import socket

import pytest

from helpers import run_labctl, student_lab
from labctl.kernel import namespaces
from labctl.errors import ChildError, LabError
from labctl.kernel.syscalls import namespace_inode


pytestmark = pytest.mark.root


def test_spawn_creates_new_uts_pid_ipc_mnt_namespaces():
    with namespaces.spawn(["sleep", "30"], hostname="lab-t1") as proc:
        for kind in ("uts", "pid", "ipc", "mnt"):
            assert namespace_inode(proc.pid, kind) != namespace_inode("self", kind), kind
        for kind in ("net", "user", "cgroup"):
            assert namespace_inode(proc.pid, kind) == namespace_inode("self", kind), kind


def test_container_process_is_pid_1_inside():
    with namespaces.spawn(["sleep", "30"]) as proc:
        assert namespaces.pid_inside(proc.pid) == [proc.pid, 1]


def test_hostname_is_set_inside_only():
    host = socket.gethostname()
    with namespaces.spawn(["sleep", "30"], hostname="lab-inside") as proc:
        assert namespaces.hostname_of(proc.pid) == "lab-inside"
        assert socket.gethostname() == host


def test_exit_status_and_signal_propagate():
    proc = namespaces.spawn(["sh", "-c", "exit 5"])
    assert proc.wait(timeout=10) == 5
    proc = namespaces.spawn(["sh", "-c", "kill -TERM $$; sleep 5"])
    # PID 1 ignores signals it has no handler for, even from itself: sh keeps running, so kill from outside
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_setns_joins_the_pid_namespace():
    with namespaces.spawn(["sleep", "30"]) as proc:
        seen = namespaces.run_in_namespaces_of(proc.pid, os.getpid, kinds=("pid",))
        assert int(seen) > 1  # PID 1 is the sleep; a joiner gets the next free PID inside


def test_missing_command_is_one_clear_error():
    with pytest.raises(LabError, match="no-such-command"):
        namespaces.spawn(["no-such-command-xyz"])


def test_a_lab_error_in_the_child_crosses_the_fork_with_its_cause_and_fix():
    def setup():
        raise LabError("the exercise's mount failed", "mount /proc before pivot_root")
    with pytest.raises(LabError) as caught:
        namespaces.spawn(["true"], setup=setup)
    assert caught.value.cause == "setting up the container failed: the exercise's mount failed"
    assert caught.value.fix == "mount /proc before pivot_root"


def test_an_unexpected_error_in_the_child_comes_back_with_its_traceback():
    def broken_setup():
        return {}["no such key"]
    with pytest.raises(LabError, match="KeyError") as caught:
        namespaces.spawn(["true"], setup=broken_setup)
    assert isinstance(caught.value.__cause__, ChildError)
    assert "broken_setup" in str(caught.value.__cause__)   # the child's traceback names the function


@pytest.mark.root(False)
def test_handshake_sends_pid_first_even_when_pid_1_is_quicker():
    """PID 1 is held back until its parent has sent PID (no namespaces needed to see it: plain forks)."""
    import time
    from labctl.kernel import handshake
    pipes = handshake.Pipes()
    helper = os.fork()
    if helper == 0:
        end = pipes.child()
        pid1 = end.fork()
        if pid1 == 0:
            end.send_ready()   # at once; the helper below takes its time
            os._exit(0 if end.wait_for_go() else 125)
        time.sleep(0.2)
        end.send_pid(pid1)
        end.close()
        os._exit(os.waitstatus_to_exitcode(os.waitpid(pid1, 0)[1]))
    end = pipes.parent()
    try:
        first = end.expect(handshake.PID, "no PID first", "")
        end.expect(handshake.READY, "no READY second", "")
        end.send_go()
        assert end.receive() is None   # EOF: PID 1 has exited
    finally:
        end.close()
        status = os.waitpid(helper, 0)[1]
    assert first.pid > 0 and os.waitstatus_to_exitcode(status) == 0


@pytest.mark.root(False)
def test_unknown_namespace_kind_is_rejected():
    with pytest.raises(LabError, match="unknown namespace kind"):
        namespaces.spawn(["true"], namespaces=("uts", "bogus"))


def test_check_fails_on_skeleton_with_a_hint():
    result = run_labctl("check", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "shares the host's uts namespace" in result.stdout
    assert "TODO 1" in result.stdout


def test_check_passes_on_reference():
    result = run_labctl("check", "1", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


def test_check_passes_on_a_completed_exercise(tmp_path):
    """The student's step 1 part (here the reference part, taken as `labctl lab take 1` does)."""
    result = run_labctl("check", "1", env=student_lab(tmp_path, take=[1]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_shows_a_hostname_passed_as_str(tmp_path):
    """ctypes passes a str as wchar_t*: sethostname gets 'l\0a\0b...' and stops at the first NUL."""
    env = student_lab(tmp_path, take=[1], edits={"namespaces.py": [("raw = name.encode()", "raw = name")]})
    result = run_labctl("check", "1", env=env)
    assert result.returncode == 1 and "hostname 'l'" in result.stdout, result.stdout + result.stderr


def test_step_1_demo_runs():
    result = run_labctl("step", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PID 1 inside" in result.stdout
