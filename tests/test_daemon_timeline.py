"""Step 11's timeline: one `docker run --rm busybox true` (the real docker CLI, Debian's docker.io) and one
`labctl run --rm busybox true` as a client, through labctl's daemon, traced by bcc on the kernel's
tracepoints from the client's connect() on the daemon's socket to the container's execve().

Ground truth is not the tracer's: the client's PID is the one the daemon learnt from SO_PEERCRED and
logged with its requests; the daemon's PID is in its PID file and /proc; PID 1's and the supervisor's
PIDs are those the daemon reported in its start event (from fork()'s return in the runtime)."""
from __future__ import annotations

import os
import time

import pytest

from labctl.daemon import control
from labctl.demos import daemonrun

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def daemon():
    with daemonrun.private_daemon() as d:
        yield d


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


@pytest.mark.parametrize("which", ["docker", "labctl"])
def test_timeline_from_connect_to_execve_across_four_processes(daemon, which):
    if which == "docker" and not os.path.exists("/usr/bin/docker"):
        pytest.skip("needs Debian's docker CLI (apt-get install docker.io)")
    since = time.time() - 1
    traced, steps, phases = daemonrun.traced_run(daemon.socket, ["run", "--rm", "busybox", "true"], which)
    assert traced.status == 0, traced.output
    # the client: the PID whose requests the daemon logged (SO_PEERCRED, the kernel's word, not ours)
    first, last = steps[0], steps[-1]
    assert first.kind == "connect" and first.pid == traced.client_pid and daemon.socket in first.event
    starts = [r.path for r in daemon.requests(traced.client_pid) if r.path.endswith("/start")]
    assert len(starts) == 1, starts
    cid = starts[0].split("/")[-2]
    # the daemon: the process of its PID file, `labctl daemon`
    daemon_pid = control.running(daemon.socket)["pid"]
    assert "labctl daemon" in _cmdline(daemon_pid)
    by_daemon = [s for s in steps if s.role == "daemon"]
    assert by_daemon and {s.pid for s in by_daemon} == {daemon_pid}
    assert {"accept4", "recvfrom", "mount", "fork"} <= {s.kind for s in by_daemon}
    # PID 1 and the supervisor: as the daemon reported them when it started the container
    started = [e for e in daemonrun.events(daemon.socket, since) if e.get("Action") == "start" and e["id"] == cid]
    assert len(started) == 1, started
    reported = started[0]["Actor"]["Attributes"]
    pid1, supervisor = int(reported["pid"]), int(reported["supervisorPid"])
    assert {s.pid for s in steps if s.role == "PID 1"} == {pid1}
    assert {s.pid for s in steps if s.role == "supervisor"} == {supervisor}
    assert any(s.kind == "unshare" and "CLONE_NEWPID" in s.event for s in steps if s.pid == supervisor)
    assert any(s.kind == "fork" and s.event.startswith(f"fork() = {pid1} ") for s in steps if s.pid == supervisor)
    helper = [s for s in steps if s.role == "helper"]       # the double fork: daemon -> helper -> supervisor
    assert any(s.kind == "fork" and s.event.startswith(f"fork() = {supervisor} ") for s in helper)
    assert any(s.kind == "fork" and s.event.startswith(f"fork() = {helper[0].pid} ") for s in by_daemon)
    # the end: PID 1's execve of the container's command, and nothing after it
    assert last.kind == "execve" and last.pid == pid1 and last.event == 'execve("/bin/true")'
    assert all(a.ms <= b.ms for a, b in zip(steps, steps[1:]))
    assert [name for name, _ in phases][0].startswith("client") and len(phases) == 6
    assert all(ms >= 0 for _, ms in phases)
    assert abs(sum(ms for _, ms in phases) - last.ms) < 0.01


def test_timeline_figure_has_a_lane_per_role_with_its_pid(daemon):
    """The notebook's figure, from a run traced now: one lane per role, labelled with the PID seen."""
    import matplotlib
    matplotlib.use("Agg")
    from labctl.plots.daemon import timeline
    traced, steps, phases = daemonrun.traced_run(daemon.socket, ["run", "--rm", "busybox", "true"], "labctl")
    fig = timeline(steps, phases)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    pid1 = next(s.pid for s in steps if s.role == "PID 1")
    assert labels == ["client (%d)" % traced.client_pid, "daemon (%d)" % traced.daemon_pid,
                      labels[2], labels[3], f"PID 1 ({pid1})"]
    assert labels[2].startswith("helper (") and labels[3].startswith("supervisor (")
    assert "connect()" in fig.axes[1].get_xlabel()

