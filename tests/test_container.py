"""Step 7: `labctl run` and friends, judged by /proc, cgroup files and the state directory's records."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_labctl, student_lab
from labctl.kernel import namespaces
from labctl import state

pytestmark = pytest.mark.root

IMAGE_CONFIG = {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=from-image", "KEEP=image"],
                "Entrypoint": ["/bin/busybox"], "Cmd": ["sleep", "1001"],
                "WorkingDir": "/home/student/work", "User": "student"}


@pytest.fixture(scope="module")
def custom_image():
    """An image whose config sets Env, Entrypoint, Cmd, WorkingDir and User (on the busybox layer)."""
    from labctl.images import archive as imageimport, ocilayout
    from labctl.images.store import ImageStore, sha256_digest
    image = ocilayout.Image(ocilayout.busybox_image().layers, config=IMAGE_CONFIG)
    blobs = image.blobs()
    manifest = image.manifest_blob()
    desc = {"mediaType": ocilayout.MEDIA_OCI_MANIFEST, "digest": sha256_digest(manifest), "size": len(manifest)}
    imageimport.import_manifest(ImageStore(), lambda d: io.BytesIO(blobs[d]), desc, "localhost/t7-config:latest")
    return "localhost/t7-config:latest"


def labctl_ok(*args, timeout=60):
    result = run_labctl(*args, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def record(name):
    from labctl.containers import store
    return store.find(name)


def proc_env(pid):
    return dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if e)


def proc_ids(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return [int(x) for x in line.split()[1:]]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def names():
    """Container names used by a test; whatever is left is force-removed at the end."""
    used = []
    yield lambda suffix: used.append(f"t7-{suffix}-{os.getpid()}") or used[-1]
    for name in used:
        run_labctl("rm", "-f", name)


def test_image_env_entrypoint_cmd_workdir_and_user_are_honoured(custom_image, names):
    name = names("cfg")
    labctl_ok("run", "-d", "--name", name, "-e", "GREETING=from-cli", custom_image)
    pid = record(name).pid
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3] == [b"/bin/busybox", b"sleep", b"1001"]
    env = proc_env(pid)
    assert env["GREETING"] == "from-cli" and env["KEEP"] == "image" and env["HOME"] == "/home/student"
    assert env["HOSTNAME"] == namespaces.hostname_of(pid)
    assert proc_ids(pid, "Uid")[:2] == [1000, 1000] and proc_ids(pid, "Gid")[:2] == [1000, 1000]
    assert os.readlink(f"/proc/{pid}/cwd") == "/home/student/work"
    labctl_ok("rm", "-f", name)
    # a command on the command line replaces Cmd, not Entrypoint; -u and -w replace User and WorkingDir
    labctl_ok("run", "-d", "--name", name, "-u", "daemon", "-w", "/tmp", custom_image, "sleep", "1002")
    pid = record(name).pid
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3] == [b"/bin/busybox", b"sleep", b"1002"]
    assert proc_ids(pid, "Uid")[0] == 1 and os.readlink(f"/proc/{pid}/cwd") == "/tmp"


def test_unknown_user_is_one_clear_error(custom_image):
    result = run_labctl("run", "--rm", "-u", "nobody-here", custom_image, "true")
    assert result.returncode != 0
    assert "unable to find user nobody-here" in result.stderr


def test_relative_workdir_is_one_clear_error_and_nothing_is_created():
    before = sorted(os.listdir(state.subdir("containers")))
    result = run_labctl("run", "--rm", "-w", "relative/dir", "busybox", "true")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not an absolute path" in result.stderr and "Traceback" not in result.stderr
    assert sorted(os.listdir(state.subdir("containers"))) == before


@pytest.mark.parametrize("name", ["../../escape", "a/b", "bad name", "x"])
def test_bad_container_name_is_refused_before_anything_is_created(name, tmp_path):
    """--name becomes a file name in the state directory: `..` or `/` would put it anywhere."""
    before = sorted(os.listdir(state.subdir("containers-by-name")))
    result = run_labctl("run", "--rm", "--name", name, "busybox", "true")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bad container name" in result.stderr and "Traceback" not in result.stderr
    assert sorted(os.listdir(state.subdir("containers-by-name"))) == before
    assert not (state.state_dir().parent / "escape").exists()


def test_exit_code_is_labctls_own():
    assert run_labctl("run", "--rm", "busybox", "sh", "-c", "exit 7").returncode == 7
    assert run_labctl("run", "--rm", "busybox", "no-such-command").returncode == 127


def test_signal_death_is_128_plus_n():
    # under --init (tini), the shell can die of a signal; tini reports it as 128+N
    result = run_labctl("run", "--rm", "--init", "busybox", "sh", "-c", "kill -KILL $$")
    assert result.returncode == 128 + signal.SIGKILL, result.stderr


def test_sigterm_to_labctl_is_forwarded_to_the_container(names):
    name = names("sig")
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "run", "--rm", "--init", "--name", name, "busybox",
                             "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(lambda: run_labctl("ps", "-q").stdout.strip() != "" and _running(name))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM


def _running(name):
    from labctl.containers import store
    try:
        return store.find(name).status == "running"
    except Exception:
        return False


def test_init_reaps_zombies(names):
    name = names("zombie")
    # sh exits at once, leaving `sleep` orphaned: tini (PID 1) adopts it and reaps it when it ends
    labctl_ok("run", "-d", "--init", "--name", name, "busybox", "sh", "-c", "(sleep 0.2 &) ; sleep 60")
    pid1 = record(name).pid
    time.sleep(1.0)
    children = Path(f"/proc/{pid1}/task/{pid1}/children").read_text().split()
    states = [Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0] for c in children]
    assert "Z" not in states
    assert Path(f"/proc/{pid1}/cmdline").read_bytes().startswith(b"/sbin/labctl-init")


def test_exec_joins_every_namespace_the_cgroup_and_the_root(names):
    name = names("exec")
    labctl_ok("run", "-d", "--name", name, "-h", "t7-exec-host", "-m", "48m", "busybox", "sleep", "60")
    c = record(name)
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "exec", name, "sleep", "1003"])
    try:
        assert wait_for(lambda: _in_cgroup(c, "sleep\x001003\x00"))
        joined = _in_cgroup(c, "sleep\x001003\x00")
        for kind in ("cgroup", "ipc", "mnt", "net", "pid", "time", "uts"):
            assert os.readlink(f"/proc/{joined}/ns/{kind}") == os.readlink(f"/proc/{c.pid}/ns/{kind}"), kind
            assert os.readlink(f"/proc/{joined}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
        assert Path(f"/proc/{joined}/cgroup").read_text() == Path(f"/proc/{c.pid}/cgroup").read_text()
        root_a, root_b = os.stat(f"/proc/{joined}/root/"), os.stat(f"/proc/{c.pid}/root/")
        assert (root_a.st_dev, root_a.st_ino) == (root_b.st_dev, root_b.st_ino)
        assert namespaces.hostname_of(joined) == "t7-exec-host"
        assert namespaces.pid_inside(joined)[-1] > 1
    finally:
        proc.kill()
        proc.wait()


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _in_cgroup(container, cmdline):
    """The host PID of the process in the container's cgroup whose /proc/PID/cmdline is `cmdline`, or None."""
    return next((int(p) for d in container.state["cgroup"]["dirs"].values()
                 for p in Path(d, "cgroup.procs").read_text().split() if _cmdline(p) == cmdline), None)


def _catches(pid, signum):
    """Has the process a handler for `signum`? The SigCgt mask of /proc/PID/status."""
    mask = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("SigCgt:"))
    return bool(int(mask, 16) & (1 << (signum - 1)))


def test_sighup_to_a_foreground_exec_reaches_the_process_inside(names):
    """`labctl exec` passes on the signals `labctl run` passes on: SIGHUP (a closed terminal) kills the
    exec'd `sleep` (not a PID 1, so the default action applies), and its wait status, killed by signal 1,
    comes back out as 128+1. (Without the forwarding, SIGHUP kills labctl itself and the sleep runs on.)"""
    name = names("hup")
    labctl_ok("run", "-d", "--name", name, "busybox", "sleep", "60")
    c = record(name)
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "exec", name, "sleep", "1004"])
    try:
        assert wait_for(lambda: _in_cgroup(c, "sleep\x001004\x00") and _catches(proc.pid, signal.SIGHUP))
        inside = _in_cgroup(c, "sleep\x001004\x00")
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=20) == 128 + signal.SIGHUP
        assert not Path(f"/proc/{inside}").exists()   # reaped: it died, and its parent saw how
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_limits_are_written_to_the_container_cgroup(names):
    name = names("lim")
    labctl_ok("run", "-d", "--name", name, "-m", "40m", "--cpus", "0.5", "--pids-limit", "12", "busybox",
              "sleep", "60")
    c = record(name)
    dirs = c.state["cgroup"]["dirs"].values()
    pid = str(c.pid)
    for d in dirs:
        assert pid in Path(d, "cgroup.procs").read_text().split()
    files = {Path(d).parts[4]: Path(d) for d in dirs}
    if "memory" in files:   # cgroup v1 (this host); the VM's v2 has memory.max
        assert int((files["memory"] / "memory.limit_in_bytes").read_text()) == 40 << 20
        assert int((files["pids"] / "pids.max").read_text()) == 12
        assert int((files["cpu"] / "cpu.cfs_quota_us").read_text()) == 50000
    else:
        unified = next(iter(files.values()))
        assert (unified / "memory.max").read_text().strip() == str(40 << 20)
        assert (unified / "pids.max").read_text().strip() == "12"
    # inside, the cgroup namespace is rooted at the container's cgroup
    out = labctl_ok("exec", name, "cat", "/proc/self/cgroup")
    assert all(line.endswith(":/") for line in out.split())


def test_named_volume_persists_across_containers():
    volume = f"t7vol-{os.getpid()}"
    try:
        labctl_ok("run", "--rm", "-v", f"{volume}:/data", "busybox", "sh", "-c", "echo kept > /data/file")
        out = labctl_ok("run", "--rm", "-v", f"{volume}:/data:ro", "busybox", "sh", "-c",
                        "cat /data/file; echo x > /data/other || echo read-only")
        assert out.split() == ["kept", "read-only"]
        assert volume in labctl_ok("volume", "ls")
    finally:
        run_labctl("volume", "rm", volume)
    assert volume not in labctl_ok("volume", "ls")


def test_bind_mount_and_tmpfs(tmp_path):
    (tmp_path / "in.txt").write_text("from the host\n")
    out = labctl_ok("run", "--rm", "-v", f"{tmp_path}:/host", "--tmpfs", "/scratch", "busybox", "sh", "-c",
                    "cat /host/in.txt; echo back > /host/out.txt; grep ' /scratch ' /proc/mounts | cut -d' ' -f3")
    assert out.split("\n")[:2] == ["from the host", "tmpfs"]
    assert (tmp_path / "out.txt").read_text() == "back\n"


def test_ps_is_right_after_labctl_and_the_supervisor_are_killed(names):
    name = names("crash")
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "run", "--name", name, "busybox", "sleep", "60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: _running(name))
    proc.kill()             # labctl dies mid-run: the container and its supervisor go on
    proc.wait()
    c = record(name)
    assert c.status == "running" and c.supervisor_alive()
    os.kill(c.state["supervisor_pid"], signal.SIGKILL)   # now the supervisor dies too
    assert wait_for(lambda: not record(name).supervisor_alive())
    assert record(name).status == "running"              # PID 1 still runs: ps says so
    assert name in labctl_ok("ps")
    os.kill(c.pid, signal.SIGKILL)                       # and when it dies, nobody records it, yet:
    assert wait_for(lambda: record(name).status == "exited")
    assert name not in labctl_ok("ps") and name in labctl_ok("ps", "-a")
    labctl_ok("rm", name)                                # rm tears down what the supervisor could not


def test_stop_sends_sigterm_then_sigkill(names):
    name = names("stop")
    labctl_ok("run", "-d", "--name", name, "busybox", "sh", "-c",
              "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done")
    assert wait_for(lambda: "ready" in labctl_ok("logs", name), timeout=60)   # the trap is set before we stop
    started = time.monotonic()
    labctl_ok("stop", name)
    prompt_stop = time.monotonic() - started        # what one `labctl stop` costs on this machine, now
    assert record(name).state["exit_code"] == 42          # the shell's TERM trap ran
    labctl_ok("run", "-d", "--name", names("stop2"), "busybox", "sleep", "60")
    started = time.monotonic()
    labctl_ok("stop", "-t", "0.5", f"t7-stop2-{os.getpid()}")   # sleep as PID 1 ignores SIGTERM
    # SIGKILL came after -t 0.5, not after the default 10 s (measured against a prompt stop: the
    # classroom VM under emulation takes seconds for any labctl command)
    assert time.monotonic() - started < prompt_stop + 5
    assert record(f"t7-stop2-{os.getpid()}").state["exit_code"] == 128 + signal.SIGKILL


def test_logs_of_a_detached_container(names):
    name = names("logs")
    labctl_ok("run", "-d", "--name", name, "busybox", "sh", "-c", "echo one; echo two >&2")
    assert wait_for(lambda: record(name).status == "exited")
    assert labctl_ok("logs", name).split() == ["one", "two"]


def test_concurrent_runs_do_not_collide():
    procs = [subprocess.Popen([sys.executable, "-m", "labctl", "run", "--rm", "busybox", "hostname"],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 4           # four containers, four hostnames (their IDs)


def test_a_name_is_given_to_one_container_only(names):
    name = names("race")
    procs = [subprocess.Popen([sys.executable, "-m", "labctl", "run", "-d", "--name", name, "busybox", "sleep", "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    codes = [p.wait(timeout=60) for p in procs]
    assert sorted(codes) == [0, 2, 2]


def test_cleanup_all_removes_a_running_container():
    result = run_labctl("run", "-d", "-m", "32m", "busybox", "sleep", "60")
    assert result.returncode == 0
    pid = record(result.stdout.strip()).pid
    labctl_ok("cleanup", "--all")   # without --all it stays: tests/test_faults_containers.py
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists() or
                    Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    assert result.stdout.strip()[:12] not in labctl_ok("ps", "-a")


def test_check_fails_on_skeleton_with_a_hint(tmp_path):
    """Steps 1 to 4 done, container.py still the skeleton: the exercise says what is missing."""
    result = run_labctl("check", "7", env=student_lab(tmp_path, take=[1, 2, 3, 4]))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no process running `sleep 1007` appeared" in result.stdout and "container.py" in result.stdout


def test_check_passes_on_reference():
    result = run_labctl("check", "7", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


def test_check_passes_on_a_completed_exercise(tmp_path):
    """A container made entirely of the student's parts 1 to 4 and 7 (the reference parts, as taken with
    `labctl lab take N`)."""
    result = run_labctl("check", "7", env=student_lab(tmp_path, take=[1, 2, 3, 4, 7]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pivot_root, not chroot" in result.stdout and "its cgroup was removed" in result.stdout


def test_check_fails_when_the_students_root_filesystem_part_is_a_chroot(tmp_path):
    """The whole runtime done, but step 2's switch_root chroots: /proc/<pid>/root and the container's own
    mountinfo look right; joining its mount namespace lands on the host's /, and the check says so."""
    chroot = [('    os.chdir(rootfs)\n    pivot_root(".", ".")\n    umount2(".", MNT_DETACH)\n', '    os.chroot(rootfs)\n')]
    env = student_lab(tmp_path, take=[1, 2, 3, 4, 7], edits={"rootfs.py": chroot})
    result = run_labctl("check", "7", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "its root is a chroot" in result.stdout and "pivot_root" in result.stdout and "rootfs.py" in result.stdout


def test_step_7_demo_runs_and_leaves_nothing():
    result = run_labctl("step", "7", "--no-explain")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from a volume" in result.stdout
    # each line says where it comes from: ps's output is ps's, the HTTP answer the server's
    assert "ps> PID   COMMAND" in result.stdout and "http> GET http://127.0.0.1:" in result.stdout


def test_tty_is_the_containers_own_pty_with_the_window_size_and_exit_code():
    import fcntl
    import pty
    import select
    import struct
    import termios
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "labctl", "run", "-it", "--rm", "busybox", "sh"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    out = b""

    def pump_until(token: bytes, seconds: float) -> None:
        """Read the terminal until `token` appears (or the time is up); answer busybox's cursor query."""
        nonlocal out
        end = time.monotonic() + seconds
        while token not in out and time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return
                out += chunk
                if b"\x1b[6n" in chunk:      # busybox asks where the cursor is; answer like a terminal
                    os.write(fd, b"\x1b[1;1R")
    # Type only once the shell shows its prompt: input typed while labctl switches the terminal to raw
    # mode may be discarded (on a slow machine, such as the emulated classroom VM, that takes seconds).
    pump_until(b"# ", 60)
    if b"# " not in out:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
        pytest.fail(f"no shell prompt from labctl run -it; the terminal showed {out[-500:]!r}")
    os.write(fd, b"tty; stty size; exit 5\r")
    pump_until(b"33 101", 30)
    deadline = time.monotonic() + 30
    while True:                           # bounded: a shell that never exits fails the test, not the run
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(fd)
            pytest.fail(f"labctl run -it did not exit; the terminal showed {out[-500:]!r}")
        pump_until(b"\0never", 0.2)
    os.close(fd)
    assert b"/dev/pts/0" in out          # allocated from the container's own devpts instance
    assert b"33 101" in out
    assert os.waitstatus_to_exitcode(status) == 5
