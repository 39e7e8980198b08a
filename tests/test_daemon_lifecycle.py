"""Step 11: a container's second life through the daemon (`docker restart`, `docker start` of a stopped
one) and other OCI runtimes behind it (`docker run --runtime runc`), with the real docker CLI.

What the tests believe: /proc (the old PID 1 gone, a new one there, PID 1 of a PID namespace of its own,
in the container's cgroup), the container's root filesystem (what the first run wrote is still there),
and the OCI runtime's own state directory (runc's `state` says it made the container).
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from labctl import state
from labctl.containers import store
from test_daemon import DOCKER, alive, daemon, docker  # noqa: F401  (daemon: the module's fixture)

pytestmark = [pytest.mark.root, pytest.mark.skipif(not os.path.exists(DOCKER),
                                                   reason="needs Debian's docker CLI (apt-get install docker.io)")]


def pid_1(container_id: str) -> tuple[int, int]:
    """(host PID, start time) of the container's PID 1, checked with the kernel: it is PID 1 in its PID
    namespace (the last NSpid field), which is not ours."""
    pid = store.load(container_id).pid
    with open(f"/proc/{pid}/status") as f:
        nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
    assert nspid[-1] == "1" and len(nspid) > 1
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    return pid, state.process_start_time(pid)


def gone(pid: int, start: int) -> bool:
    """That process (PID and start time: a reused PID is another process) no longer runs."""
    return state.process_start_time(pid) != start or not alive(pid)


def logs_become(daemon, name: str, expected: str, timeout: float = 10.0) -> str:
    """The container's log once it says `expected` (its PID 1 runs on its own time after the start)."""
    deadline = time.monotonic() + timeout
    while (said := docker(daemon, "logs", name).stdout) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return said


def in_cgroup(pid: int, container_id: str) -> bool:
    with open(f"/proc/{pid}/cgroup") as f:
        return f"labctl-{container_id[:12]}" in f.read()


def test_restart_gives_a_new_pid_1_in_the_same_root(daemon):
    started = docker(daemon, "run", "-d", "--name", "again", "busybox", "sh", "-c",
                     "echo run >> /runs; echo up; exec sleep 600")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        old = pid_1(container_id)
        assert in_cgroup(old[0], container_id)
        restarted = docker(daemon, "restart", "-t", "1", "again")
        assert restarted.returncode == 0, restarted.stderr
        new = pid_1(container_id)
        assert gone(*old) and alive(new[0]) and new != old
        assert in_cgroup(new[0], container_id)                     # a new cgroup of the same name
        assert logs_become(daemon, "again", "up\nup\n") == "up\nup\n"   # the log file is kept too
        with open(f"/proc/{new[0]}/root/runs") as f:               # the root it wrote to the first time
            assert f.read() == "run\nrun\n"
        assert docker(daemon, "inspect", "--format", "{{.State.Status}} {{.State.Pid}}",
                      "again").stdout.split() == ["running", str(new[0])]
        assert docker(daemon, "stop", "-t", "1", "again").returncode == 0
        assert gone(*new)
        assert docker(daemon, "start", "again").returncode == 0    # a stopped container starts again too
        third = pid_1(container_id)
        assert gone(*new) and alive(third[0])
    finally:
        removed = docker(daemon, "rm", "-f", "again")
    assert removed.returncode == 0 and not os.path.exists(store.containers_dir() / container_id)


def test_restart_of_an_auto_remove_container_is_refused_and_it_runs_on(daemon):
    started = docker(daemon, "run", "-d", "--rm", "--name", "once", "busybox", "sleep", "600")
    assert started.returncode == 0, started.stderr
    try:
        pid = pid_1(started.stdout.strip())
        refused = docker(daemon, "restart", "once")
        assert refused.returncode == 1 and "--rm" in refused.stderr, refused.stderr
        assert not gone(*pid)                                      # refused before anything was stopped
    finally:
        docker(daemon, "rm", "-f", "once")
    missing = docker(daemon, "restart", "no-such-container")
    assert missing.returncode == 1 and "No such container" in missing.stderr


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_docker_run_runtime_gives_the_bundle_to_that_oci_runtime(daemon, runtime):
    """`docker run --runtime runc` is `labctl run --runtime runc`: the OCI runtime makes PID 1 from the
    bundle, and its own state says so (runc's, under the container's directory)."""
    from labctl.runtime import peers
    if runtime not in peers.available():
        pytest.skip(f"{runtime} is not installed")
    fg = docker(daemon, "run", "--rm", "--runtime", runtime, "busybox", "sh", "-c", "echo hi; exit 3")
    assert (fg.returncode, fg.stdout) == (3, "hi\n"), fg.stderr
    started = docker(daemon, "run", "-d", "--runtime", runtime, "--name", f"via{runtime}", "busybox",
                     "sh", "-c", "echo up; exec sleep 600")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    oci_state = peers.command(runtime) + ["--root", str(store.containers_dir() / container_id / "oci"),
                                          "state", container_id]
    try:
        pid = pid_1(container_id)
        said = subprocess.run(oci_state, capture_output=True, text=True, timeout=30)
        assert said.returncode == 0, said.stderr
        assert (json.loads(said.stdout)["status"], json.loads(said.stdout)["pid"]) == ("running", pid[0])
        assert in_cgroup(pid[0], container_id)
        assert docker(daemon, "inspect", "--format", "{{.HostConfig.Runtime}}", container_id).stdout.strip() == runtime
        assert logs_become(daemon, container_id, "up\n") == "up\n"
        assert docker(daemon, "restart", "-t", "1", container_id).returncode == 0   # the runtime makes it anew
        old, pid = pid, pid_1(container_id)
        assert gone(*old) and json.loads(subprocess.run(oci_state, capture_output=True, text=True,
                                                        timeout=30).stdout)["pid"] == pid[0]
    finally:
        removed = docker(daemon, "rm", "-f", container_id)
    assert removed.returncode == 0 and gone(*pid)
    assert not os.path.exists(store.containers_dir() / container_id)


def test_an_unknown_runtime_is_refused_with_the_known_ones(daemon):
    refused = docker(daemon, "run", "--rm", "--runtime", "nosuch", "busybox", "true")
    assert refused.returncode == 125 and "unknown or invalid runtime name: nosuch" in refused.stderr
    assert "runc" in refused.stderr or "labctl" in refused.stderr
    runtimes = json.loads(docker(daemon, "info", "--format", "{{json .Runtimes}}").stdout)
    assert "labctl" in runtimes and all(os.path.exists(v["path"]) for k, v in runtimes.items()
                                        if k in ("runc", "crun"))


def parse_stamp(line: str) -> tuple[float, str]:
    """`2026-12-01T14:09:00.123456789Z text` -> (seconds since the epoch, text)."""
    import datetime
    stamp, _, text = line.partition(" ")
    assert stamp.endswith("Z") and len(stamp.split(".")[1]) == 10, stamp       # nine digits, as dockerd's
    when = datetime.datetime.strptime(stamp[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    return when.timestamp(), text


def test_logs_timestamps_and_tail_through_docker_and_labctl(daemon):
    """`logs -t`: each line after when it was written, as the supervisor saw it arrive; the two lines a
    sleep apart are that far apart, and both after PID 1 began (its start time, from /proc)."""
    from helpers import run_labctl
    started = docker(daemon, "run", "-d", "--name", "stamped", "busybox", "sh", "-c",
                     "echo one; sleep 1.5; echo two; exec sleep 600")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        began = boot + pid_1(container_id)[1] / os.sysconf("SC_CLK_TCK")   # /proc/<pid>/stat's start time
        assert logs_become(daemon, "stamped", "one\ntwo\n") == "one\ntwo\n"
        stamped = docker(daemon, "logs", "-t", "stamped")
        assert stamped.returncode == 0, stamped.stderr
        (t1, one), (t2, two) = [parse_stamp(line) for line in stamped.stdout.splitlines()]
        assert (one, two) == ("one", "two")
        assert began - 0.05 <= t1 <= t2 - 1.4 and t2 <= time.time()
        last = docker(daemon, "logs", "-t", "--tail", "1", "stamped").stdout
        assert last == stamped.stdout.splitlines(keepends=True)[1]
        assert run_labctl("logs", "-t", "stamped").stdout == stamped.stdout          # the same file, read locally
        remote = run_labctl("--host", f"unix://{daemon}", "logs", "-t", "--tail", "1", "stamped")
        assert remote.stdout == last, remote.stderr
    finally:
        docker(daemon, "rm", "-f", "stamped")


def test_logs_timestamps_of_a_container_started_without_the_daemon(daemon):
    """`labctl run -d` with no daemon involved: its supervisor copies PID 1's output too, so `logs -t`
    works there as well, locally and through the daemon (which reads the same log); the two lines a sleep
    apart are that far apart, both after PID 1 began (its start time, from /proc)."""
    from helpers import run_labctl
    started = run_labctl("run", "-d", "--name", "nodaemon", "busybox", "sh", "-c",
                         "echo one; sleep 1.5; echo two >&2; exec sleep 600")
    assert started.returncode == 0, started.stderr
    try:
        container = store.find("nodaemon")
        assert not container.state.get("daemon")
        boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        with open(f"/proc/{container.pid}/stat") as f:
            began = boot + int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        deadline = time.monotonic() + 10
        while (local := run_labctl("logs", "-t", "nodaemon")).stdout.count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert local.returncode == 0, local.stderr
        (t1, one), (t2, two) = [parse_stamp(line) for line in local.stdout.splitlines()]
        assert (one, two) == ("one", "two")
        assert began - 0.05 <= t1 <= t2 - 1.4 and t2 <= time.time()
        assert docker(daemon, "logs", "-t", "nodaemon").stdout == local.stdout
        assert run_labctl("logs", "nodaemon").stdout == "one\ntwo\n"
    finally:
        run_labctl("rm", "-f", "nodaemon")


def test_docker_py_run_gets_every_fast_containers_output(daemon):
    """docker-py's run() asks for the log (follow) right after the start: a fast `echo` has exited by then,
    while its supervisor may still be copying its output into the log. The log is followed until the
    supervisor is done, so no output is lost (seen lost in a full CI run before the fix)."""
    docker_py = pytest.importorskip("docker")
    client = docker_py.DockerClient(base_url=f"unix://{daemon}", version="1.41")
    try:
        got = [client.containers.run("busybox", ["echo", f"run-{i}"], remove=True) for i in range(15)]
    finally:
        client.close()
    assert got == [f"run-{i}\n".encode() for i in range(15)]


def test_a_container_started_meanwhile_does_not_hold_a_clients_connection_open(daemon):
    """The supervisor of a container is forked from the daemon: whatever the daemon has open at that
    moment (another client's hijacked exec or attach stream) must not stay open in it, or that client
    would wait for its EOF until the new container ends."""
    assert docker(daemon, "run", "-d", "--name", "holder-a", "busybox", "sleep", "1000").returncode == 0
    try:
        started = time.monotonic()
        exec_a = subprocess.Popen([DOCKER, "-H", f"unix://{daemon}", "exec", "holder-a", "sh", "-c", "sleep 2; echo done"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.8)   # the exec's stream is open in the daemon now
        run_a = subprocess.Popen([DOCKER, "-H", f"unix://{daemon}", "run", "--rm", "busybox", "sh", "-c", "sleep 2; echo ran"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.8)   # its attach stream too
        assert docker(daemon, "run", "-d", "--name", "holder-b", "busybox", "sleep", "1000").returncode == 0
        for proc, said in ((exec_a, "done\n"), (run_a, "ran\n")):
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                pytest.fail(f"{proc.args[3:]} did not end: the stream stays open in holder-b's supervisor")
            assert (proc.returncode, out) == (0, said), err
        assert time.monotonic() - started < 15
    finally:
        docker(daemon, "rm", "-f", "holder-a", "holder-b")
