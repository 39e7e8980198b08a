"""Issue #14's container and CLI faults, probed as a hostile-but-fair user would, each kept as a test:
read-only binds with writable mounts below them, a cleanup that killed healthy containers, names too
long for the files they become, lock files that piled up, `rm`/`stop` stopping at the first missing
name, and flags that ended in a libc message or a traceback instead of one line."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from helpers import run_labctl
from labctl import state
from labctl.containers import store


@pytest.fixture
def names():
    """Container names used by a test; whatever is left is force-removed at the end."""
    used = []
    yield lambda suffix: used.append(f"t14-{suffix}-{os.getpid()}") or used[-1]
    if used:
        run_labctl("rm", "-f", *used)


def labctl_ok(*args):
    result = run_labctl(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alive(pid: int) -> bool:
    return state.process_start_time(pid) is not None and state.process_state(pid) not in ("Z", "X")


def one_error_line(result: subprocess.CompletedProcess, words: str, code: int = 2) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def test_read_only_bind_is_read_only_in_the_mounts_below_it_too(tmp_path):
    """-v SRC:DST:ro over a source with a mount below it (as / has /dev/shm): writing there must fail."""
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "t14-submount", str(source / "sub")], check=True)
    try:
        out = labctl_ok("run", "--rm", "-v", f"{source}:/host:ro", "busybox", "sh", "-c",
                        "touch /host/sub/written 2>&1; touch /host/top 2>&1; true")
        assert not (source / "sub" / "written").exists()      # judged on the host, in the real tmpfs
        assert not (source / "top").exists()
        assert out.count("Read-only file system") == 2, out
    finally:
        subprocess.run(["umount", str(source / "sub")], check=True)


def test_cleanup_leaves_running_containers_and_removes_killed_ones(names):
    healthy, killed = names("healthy"), names("killed")
    labctl_ok("run", "-d", "--name", healthy, "busybox", "sleep", "60")
    labctl_ok("run", "-d", "--name", killed, "busybox", "sleep", "60")
    victim = store.find(killed)
    os.kill(victim.state["supervisor_pid"], signal.SIGKILL)
    out = labctl_ok("cleanup")
    assert healthy in out and "--all" in out                 # it says what it left, and how to remove it
    assert alive(store.find(healthy).pid) and store.find(healthy).status == "running"
    assert not alive(victim.pid)
    with pytest.raises(store.NoSuchContainer):
        store.find(killed)
    assert "--all" in labctl_ok("cleanup", "--help")
    pid = store.find(healthy).pid
    labctl_ok("cleanup", "--all")
    assert not alive(pid)
    with pytest.raises(store.NoSuchContainer):
        store.find(healthy)


@pytest.mark.parametrize("length", [65, 250, 300])
def test_a_long_name_is_refused_before_anything_is_created(length):
    before = (sorted(os.listdir(state.subdir("containers"))), sorted(os.listdir(state.journal_dir())))
    result = run_labctl("run", "--rm", "--network", "bridge", "--name", "n" * length, "busybox", "true")
    one_error_line(result, "the lab allows 64")
    assert (sorted(os.listdir(state.subdir("containers"))), sorted(os.listdir(state.journal_dir()))) == before
    one_error_line(run_labctl("rm", "-f", "n" * length), "no such container", code=1)   # as docker rm: 1


def test_a_name_of_the_longest_length_runs():
    assert run_labctl("run", "--rm", "--name", "n" * 64, "busybox", "true").returncode == 0


def test_cleanup_survives_an_undo_that_raises(tmp_path):
    """The leftovers of a long-name run (an empty containers/<id>, a record whose name no file can have)
    are removed; a record whose undo fails gets one line and the others still go."""
    container_id = store.new_id()
    (state.subdir("containers") / container_id).mkdir()
    state.record("container", "labctl.containers.teardown:undo_container", container_id=container_id, name="n" * 300)
    failing = state.record("path", "os:rmdir", path=str(tmp_path / "not-empty"))
    (tmp_path / "not-empty" / "inside").mkdir(parents=True)
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    state.record_path(str(doomed), "t14 leftover")
    try:
        result = run_labctl("cleanup")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
        assert "not-empty" in result.stdout + result.stderr
        assert not doomed.exists() and not (state.subdir("containers") / container_id).exists()
        assert [str(r.path) for r in state.records()] == [str(failing.path)]
    finally:
        failing.forget()


def test_a_containers_lock_file_goes_with_it(names):
    locks = state.subdir("locks")
    name = names("lock")
    container_id = labctl_ok("run", "-d", "--name", name, "busybox", "sleep", "60").strip()
    labctl_ok("stop", "-t", "0", name)                       # the supervisor and stop both took the lock
    labctl_ok("rm", name)
    labctl_ok("run", "--rm", "busybox", "true")              # and one removed by its own supervisor
    assert not [p.name for p in locks.iterdir() if p.name.startswith("container-") and p.name != "container-names.lock"]
    assert not (state.subdir("containers") / container_id).exists()


@pytest.mark.parametrize("command", [["stop", "-t", "0"], ["rm", "-f"]])
def test_stop_and_rm_go_on_past_a_missing_name(command, names):
    first, second = names("one"), names("two")
    for name in (first, second):
        labctl_ok("run", "-d", "--name", name, "busybox", "sleep", "60")
    pids = [store.find(name).pid for name in (first, second)]
    result = run_labctl(*command, "t14-missing", first, second)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "no such container: t14-missing" in result.stderr
    assert result.stdout.split() == [first, second]
    assert not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("flags, words", [
    (["-m", "99999999999999999999999"], "above the kernel's largest memory limit"),
    (["-u", "99999999999"], "the uid 99999999999 is out of range"),
    (["-u", "0:4294967295"], "the gid 4294967295 is out of range"),
    (["-v", "/tmp:/"], "cannot mount over / in the container"),
    (["-v", "/tmp:/proc"], "cannot mount over /proc"),
    (["-v", "/tmp:/sys/"], "cannot mount over /sys"),
    (["--tmpfs", "/dev"], "cannot mount over /dev"),
    (["-h", "h" * 100], "the kernel allows 64"),
])
def test_a_bad_flag_is_one_line_before_anything_is_created(flags, words):
    before = sorted(os.listdir(state.subdir("containers")))
    one_error_line(run_labctl("run", "--rm", *flags, "busybox", "true"), words)
    assert sorted(os.listdir(state.subdir("containers"))) == before


def test_a_hostname_of_64_bytes_is_the_kernels_own():
    assert labctl_ok("run", "--rm", "-h", "h" * 64, "busybox", "hostname").strip() == "h" * 64


def test_a_workdir_that_is_a_file_in_the_image_is_one_line():
    """Only PID 1 can tell (the image decides, after pivot_root): one line, and with --rm nothing left."""
    before = sorted(os.listdir(state.subdir("containers")))
    result = run_labctl("run", "--rm", "-w", "/etc/passwd", "busybox", "true")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "/etc/passwd is not a directory" in result.stderr and result.stderr.count("\n") == 1
    assert sorted(os.listdir(state.subdir("containers"))) == before
