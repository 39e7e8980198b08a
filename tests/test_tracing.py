"""Step 8: eBPF tracing. The real bcc programs attached to this kernel's tracepoints, each scoped to
one container: it must see that container's events and none of a second container running the same
commands, nor of the host. Ground truth comes from the kernel: what the commands themselves read
from /proc inside the container, fork parents, and the kernel's list of loaded BPF programs."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl import tracing
from labctl.errors import LabError
from labctl.tracing import Scope
from labctl.demos.workload import ShellContainer

pytestmark = pytest.mark.root

BUSYBOX = "/bin/busybox"


@pytest.fixture
def two_containers():
    with ShellContainer("lab-trace-a") as a, ShellContainer("lab-trace-b") as b:
        yield a, b


def host_run(command: str) -> None:
    """The same command on the host (busybox, so the programs are the same as in the containers)."""
    subprocess.run([BUSYBOX, "sh", "-c", command], check=True, capture_output=True)


def test_scope_is_the_pid_namespace_inode(two_containers):
    a, b = two_containers
    scope = Scope.of_pid(a.pid)
    assert scope.pidns_ino == os.stat(f"/proc/{a.pid}/ns/pid").st_ino
    assert scope.pidns_ino != Scope.of_pid(b.pid).pidns_ino
    assert scope.member_pids() == [a.pid]
    with pytest.raises(LabError, match="host's PID namespace"):
        Scope.of_pid(os.getpid())


def test_exec_tracer_sees_its_container_and_not_the_other_nor_the_host(two_containers):
    from labctl.tracing.execsnoop import ExecTracer
    a, b = two_containers
    commands = "cat /proc/self/stat; sleep 0; /bin/true"
    with ExecTracer(Scope.of_pid(a.pid)) as trace_a, ExecTracer(Scope.of_pid(b.pid)) as trace_b:
        out_a = a.run(commands)
        out_b = b.run(commands)
        host_run(commands)
        events_a, events_b = trace_a.drain(), trace_b.drain()
    for events, box, out in ((events_a, a, out_a), (events_b, b, out_b)):
        execs = [e for e in events if e["event"] == "exec"]
        assert [e["argv"] for e in execs] == [["cat", "/proc/self/stat"], ["sleep", "0"], ["/bin/true"]], execs
        # the PID `cat` read for itself from the container's /proc is the one the tracer reported
        assert execs[0]["nspid"] == int(out.split()[0])
        # every process the tracer saw was forked by that container's PID 1 (sched_process_fork)
        children = {e["child"] for e in events if e["event"] == "fork" and e["pid"] == box.pid}
        assert {e["pid"] for e in execs} <= children
        assert {e["pid"] for e in events} <= children | {box.pid}
        assert all(e["event"] != "exit" or e["pid"] in children for e in events)
    pids_a = {e["pid"] for e in events_a}
    pids_b = {e["pid"] for e in events_b}
    assert not pids_a & pids_b


def test_open_tracer_reports_path_fd_and_errno_of_its_container_only(two_containers):
    from labctl.tracing.opensnoop import OpenTracer
    a, b = two_containers
    commands = "cat /etc/os-release >/dev/null; cat /lab-no-such-file 2>/dev/null; true"
    with OpenTracer([Scope.of_pid(a.pid)]) as trace_a, OpenTracer([Scope.of_pid(b.pid)]) as trace_b:
        a.run(commands)
        b.run(commands)
        host_run("cat /etc/os-release >/dev/null; cat /lab-no-such-file 2>/dev/null; true")
        events_a, events_b = trace_a.drain(), trace_b.drain()
    for events in (events_a, events_b):
        release = [e for e in events if e["path"] == "/etc/os-release"]
        missing = [e for e in events if e["path"] == "/lab-no-such-file"]
        assert len(release) == 1 and release[0]["fd"] >= 0 and release[0]["flags"].startswith("O_RDONLY")
        assert len(missing) == 1 and missing[0]["errno"] == 2   # ENOENT, as the kernel returned it
    assert not {e["pid"] for e in events_a} & {e["pid"] for e in events_b}


def test_syscall_counts_are_per_container(two_containers):
    from labctl.tracing.syscount import SyscallCounter
    a, b = two_containers
    with SyscallCounter([Scope.of_pid(a.pid), Scope.of_pid(b.pid)]) as counter:
        a.run("dd if=/dev/zero of=/dev/null bs=1 count=5000 2>/dev/null")
        b.run("dd if=/dev/zero of=/dev/null bs=1 count=2000 2>/dev/null")
        host_run("dd if=/dev/zero of=/dev/null bs=1 count=11000 2>/dev/null")
        counts_a, counts_b = counter.counts(0), counter.counts(1)
    # dd with bs=1 makes one read and one write per byte; the shell adds a few of its own
    assert 5000 <= counts_a["read"] < 5400, counts_a
    assert 5000 <= counts_a["write"] < 5400, counts_a
    assert 2000 <= counts_b["read"] < 2400, counts_b
    assert 2000 <= counts_b["write"] < 2400, counts_b


def test_tcp_tracer_follows_the_container_connection_only(two_containers):
    from labctl.tracing.tcpstates import TcpStateTracer
    a, b = two_containers
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    peers: list[int] = []

    def serve(n):
        for _ in range(n):
            conn, peer = server.accept()
            peers.append(peer[1])
            conn.recv(100)
            conn.close()

    thread = threading.Thread(target=serve, args=(3,), daemon=True)
    thread.start()
    try:
        with TcpStateTracer(Scope.of_pid(a.pid)) as trace_a:
            a.run(f"echo hi | nc 127.0.0.1 {port}")
            b.run(f"echo hi | nc 127.0.0.1 {port}")
            host_run(f"echo hi | nc 127.0.0.1 {port}")
            thread.join(10)
            time.sleep(0.2)
            events = trace_a.drain()
    finally:
        server.close()
    a_port, b_port, host_port = peers   # the server accepted them in this order
    transitions = [(e["old"], e["new"]) for e in events]
    assert ("CLOSE", "SYN_SENT") in transitions and ("SYN_SENT", "ESTABLISHED") in transitions, transitions
    assert all(e["rport"] == port for e in events if e["new"] != "SYN_SENT")
    assert {e["lport"] for e in events if e["old"] != "CLOSE"} == {a_port}
    assert not {b_port, host_port} & {e["lport"] for e in events}


def test_build_trace_shows_namespace_flags_and_pivot_root():
    result = run_labctl("trace", "--build", "--json")
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in result.stdout.splitlines()]
    unshare = [c for c in calls if c["syscall"] == "unshare"]
    assert len(unshare) == 1 and unshare[0]["ret"] == 0 and unshare[0]["step"] == 1
    for flag in ("CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWPID"):
        assert flag in unshare[0]["call"]
    pivot = [c for c in calls if c["syscall"] == "pivot_root"]
    assert len(pivot) == 1 and pivot[0]["ret"] == 0 and pivot[0]["role"] == "PID 1" and pivot[0]["step"] == 2
    assert any(c["syscall"] == "sethostname" and '"lab-build"' in c["call"] for c in calls)
    assert any(c["syscall"] == "umount2" and "MNT_DETACH" in c["call"] for c in calls)
    proc_mounts = [c for c in calls if c["syscall"] == "mount" and '"proc"' in c["call"]]
    assert proc_mounts and proc_mounts[0]["ms"] < pivot[0]["ms"]
    # the PID 1 that pivoted is the child the helper forked after unshare(CLONE_NEWPID)
    forks = [c for c in calls if c["syscall"] == "clone" and c["role"] == "helper"]
    assert forks and forks[0]["ret"] == pivot[0]["pid"] and forks[0]["ms"] > unshare[0]["ms"]
    # step 3: PID 1 was put into the container's cgroup (one write per hierarchy) before it executed
    # (on cgroup v2 the lab also moves its own processes into a `labctl/supervisor` leaf and back: those
    # writes carry labctl's PIDs, so only writes into the container's own cgroup are judged here)
    joins = [c for c in calls if c["syscall"] == "write" and "cgroup.procs" in c["call"]
             and "/trace-build-" in c["call"]]
    execve = [c for c in calls if c["syscall"] == "execve" and c["role"] == "PID 1"]
    assert joins and all(f'"{pivot[0]["pid"]}"' in c["call"] and c["step"] == 3 for c in joins), joins
    assert execve and max(c["ms"] for c in joins) < execve[0]["ms"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_signal_detaches_the_cli_tracer(sig):
    """SIGTERM and Ctrl-C detach cleanly; even SIGKILL leaves nothing: nothing is pinned, so the kernel
    unloads a program when the last file descriptor to it closes, with the process."""
    with ShellContainer("lab-trace-sig") as box:
        proc = subprocess.Popen([sys.executable, "-m", "labctl", "trace", str(box.pid), "--exec", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "attached" in proc.stderr.readline()
            ids = tracing.program_ids_held_by(proc.pid)
            loaded = tracing.loaded_program_ids()
            assert len(ids) == 5 and all(loaded.get(i, "").startswith("lab_") for i in ids), (ids, loaded)
            box.run("cat /etc/hostname >/dev/null")
            proc.send_signal(sig)
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.system(f"cat /proc/{proc.pid}/wchan; cat /proc/{proc.pid}/status | grep -i sig; ls /proc/{proc.pid}/task")
                raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if sig != signal.SIGKILL:
        assert proc.returncode == 0, err
        assert any(json.loads(line).get("argv") == ["cat", "/etc/hostname"] for line in out.splitlines()), out
    # the kernel frees a released program from deferred work: give it a moment, not a second chance
    deadline = time.monotonic() + 3
    while set(ids) & set(tracing.loaded_program_ids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    still = set(ids) & set(tracing.loaded_program_ids())
    assert not still, f"programs {still} are still loaded after {sig.name}"


def test_duration_ends_the_trace_and_counts_print():
    with ShellContainer("lab-trace-dur") as box:
        proc = subprocess.Popen([sys.executable, "-m", "labctl", "trace", str(box.pid), "--syscalls",
                                 "--duration", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert "attached" in proc.stderr.readline()
        box.run("dd if=/dev/zero of=/dev/null bs=1 count=300 2>/dev/null")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    counts = json.loads(out)
    assert counts["read"] >= 300 and counts["write"] >= 300


def test_a_program_that_does_not_compile_is_one_line_without_the_compiler_dump(capfd):
    with pytest.raises(LabError, match="did not compile") as info:
        tracing.load_bpf("int lab_broken( { this is not C")
    assert "--debug" in str(info.value)
    captured = capfd.readouterr()
    assert "error:" not in captured.err and "main.c" not in captured.err


def test_diagnose_reports_tracefs_headers_and_bcc():
    rows = {name: status for name, status, _detail, _fix in tracing.diagnose()}
    assert set(rows) == {"tracefs", "kernel headers", "bcc"}
    assert rows["tracefs"] == "pass" and rows["bcc"] == "pass" and rows["kernel headers"] in ("pass", "warn")


@pytest.mark.root(False)
def test_resolver_accepts_pid_and_pluggable_names():
    assert tracing.resolve_container("1234") == 1234
    tracing.register_resolver(lambda name: 4321 if name == "lab-named" else None)
    assert tracing.resolve_container("lab-named") == 4321
    with pytest.raises(LabError, match="no container named"):
        tracing.resolve_container("lab-unknown-name")


def test_check_8_fails_on_the_skeleton_with_a_hint():
    result = run_labctl("check", "8")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "attached to no tracepoint (bpftool perf show)" in result.stdout and "TODO 4" in result.stdout


def test_check_8_passes_on_the_reference():
    result = run_labctl("check", "8", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


def _solve(skeleton: str, isolate: bool = True) -> str:
    solved = skeleton.replace('cflags = ["-DPIDNS_DEV=0", "-DPIDNS_INO=0"]',
                              'cflags = [f"-DPIDNS_DEV={st.st_dev}", f"-DPIDNS_INO={st.st_ino}"]')
    solved = solved.replace("    print(\"ready\", flush=True)",
                            "    b.attach_tracepoint(tp=\"sched:sched_process_exec\", fn_name=\"count_exec\")\n"
                            "    print(\"ready\", flush=True)")
    solved = solved.replace("    int zero = 0;\n", "    int zero = 0;\n    execs.increment(zero);\n")
    if isolate:
        solved = solved.replace("    struct bpf_pidns_info ns = {};\n",
                                "    struct bpf_pidns_info ns = {};\n"
                                "    if (bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, &ns, sizeof(ns)) != 0)\n"
                                "        return 0;\n")
    assert solved != skeleton
    return solved


def test_check_8_passes_on_a_completed_exercise_and_catches_a_missing_namespace_test(tmp_path):
    from pathlib import Path
    skeleton = (Path(__file__).parent.parent / "lab/08-ebpf/exercise.py").read_text()
    (tmp_path / "solved.py").write_text(_solve(skeleton))
    result = run_labctl("check", "8", "--file", str(tmp_path / "solved.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "leaky.py").write_text(_solve(skeleton, isolate=False))
    result = run_labctl("check", "8", "--file", str(tmp_path / "leaky.py"))
    assert result.returncode == 1 and "TODO 1" in result.stdout, result.stdout + result.stderr


def test_step_8_demo_runs():
    result = run_labctl("step", "8", "--no-explain")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pivot_root" in result.stdout and "container A" in result.stdout


def test_oom_tracer_reports_the_victim_in_its_container_only(two_containers):
    from labctl.tracing.oomkill import OomTracer
    from labctl.demos.workload import in_cgroup
    a, b = two_containers
    limit = 32 << 20
    with in_cgroup(a.pid, f"trace-oom-a-{os.getpid()}", limit) as cg_a, \
            in_cgroup(b.pid, f"trace-oom-b-{os.getpid()}", limit) as cg_b:
        with OomTracer(Scope.of_pid(a.pid)) as trace_a:
            hog = "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo status=$?"
            assert "status=137" in a.run(hog)     # 128 + SIGKILL: the kernel killed dd
            assert "status=137" in b.run(hog)
            events = trace_a.drain()
            a.run("true")   # the shells survived: dd was the victim
            b.run("true")
            a.close()
            b.close()
        assert cg_a.stats().oom_kills == 1 and cg_b.stats().oom_kills == 1   # the kernel's own count
    assert [(e["event"], e["comm"]) for e in events] == [("oom-kill", "dd")], events
    assert events[0]["nspid"] > 1


def test_cgroup_v2_id_scopes_a_tracer(two_containers):
    """On cgroup v2 (here the unified hierarchy of a hybrid host) the cgroup id alone can scope."""
    from labctl.tracing.execsnoop import ExecTracer
    from labctl.demos.workload import in_cgroup
    a, b = two_containers
    mount = tracing.cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 file system on this machine")
    with in_cgroup(a.pid, f"trace-cg-{os.getpid()}") as cg:
        by_cgroup = Scope.of_pid(a.pid, by_cgroup=True)
        v2_dir = cg.dirs[Path(mount)]
        assert by_cgroup.cgroup_id == os.stat(v2_dir).st_ino   # what bpf_get_current_cgroup_id() returns
        only_cgroup = Scope(a.pid, 0, 0, by_cgroup.cgroup_id)
        wrong_cgroup = Scope(a.pid, by_cgroup.pidns_dev, by_cgroup.pidns_ino, by_cgroup.cgroup_id + 1)
        with ExecTracer([only_cgroup, wrong_cgroup]) as tracer:
            a.run("/bin/true")
            b.run("/bin/true")
            host_run("/bin/true")
            events = [e for e in tracer.drain() if e["event"] == "exec"]
        assert [(e["slot"], e["argv"]) for e in events] == [(0, ["/bin/true"])], events


def test_tcp_tracer_adopts_connections_accepted_on_a_container_port(two_containers):
    from labctl.tracing.tcpstates import TcpStateTracer
    a, _b = two_containers
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with TcpStateTracer(Scope.of_pid(a.pid)) as trace_a:
        a.run(f"nc -l -p {port} >/dev/null & sleep 0.3")
        client = socket.create_connection(("127.0.0.1", port), timeout=5)   # the host connects in
        client.sendall(b"hello\n")
        client.close()
        time.sleep(0.3)
        events = trace_a.drain()
    a.run("kill %1 2>/dev/null; wait 2>/dev/null; true")
    transitions = [(e["old"], e["new"], e["lport"]) for e in events]
    assert ("CLOSE", "LISTEN", port) in transitions, transitions
    assert ("SYN_RECV", "ESTABLISHED", port) in transitions, transitions
    # the host's client socket is not the container's: no event has the client's port as local port
    assert all(e["lport"] == port for e in events), transitions


def test_trace_ends_when_the_container_exits():
    box = ShellContainer("lab-trace-exit")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "labctl", "trace", str(box.pid), "--exec"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "attached" in proc.stderr.readline()
        ids = tracing.program_ids_held_by(proc.pid)
    finally:
        box.close()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "container is gone" in err, err
    assert not set(ids) & set(tracing.loaded_program_ids())
