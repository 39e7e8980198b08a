"""Step 11: client and daemon. The demo, the check, and the reference solution of lab/11-client-server."""
from __future__ import annotations

import grp
import os
import pwd
import random
import stat
import subprocess
import sys
import time

from labctl import ui
from labctl.errors import CheckFailed, require_root
from labctl.steps import checking

EXPLANATION = """
`docker` makes no containers. It is an HTTP client: `docker run` turns into REST requests (the Docker
Engine API) sent over the Unix socket `/var/run/docker.sock` to **dockerd**, which does the work
(through containerd and runc, step 10). labctl has the same split: `labctl daemon` serves a subset of
Engine API v1.41 on `/run/labctl/labctl.sock`, and `docker` (with `DOCKER_HOST`) or `labctl --host` talk to it.

| request | what the daemon does | step |
|---|---|---|
| `POST /containers/create` `{"Image", "Cmd", "HostConfig"}` | image layers → OverlayFS rootfs; the record | 4, 5, 7 |
| `POST /containers/{id}/start` | cgroup, namespaces, veth, pivot_root, capabilities, seccomp, execve | 1-3, 6, 9 |
| `POST /containers/{id}/wait` | answers when PID 1 exits (a pidfd turns readable): `{"StatusCode": N}` | 7 |
| `DELETE /containers/{id}` | unmount the overlay, remove the cgroup and the record | 3, 4 |

It is plain HTTP/1.1: a request line, headers, a blank line, a body framed by `Content-Length`; an
answer whose length is not known in advance (`wait`) comes in `Transfer-Encoding: chunked` pieces.

**The socket is root-equivalent.** The daemon runs as root and does what any client asks:
`docker run -v /:/host busybox` gives the caller the host's whole filesystem, as root. So the socket is
mode 0660, owner root, group `docker` (here `labctl`): being in that group is being root. The daemon
knows who connected without trusting them: `getsockopt(SO_PEERCRED)` returns the client's PID, UID and
GID, filled in by the kernel at `connect(2)`.

**From `connect()` to `execve()`.** Traced in the kernel (step 8's tracepoints, bcc), one `docker run`
crosses four processes: the client connects and sends its requests; the daemon accepts, reads them,
mounts the overlay (create) and, at start, forks a helper; the helper forks the supervisor and exits; the
supervisor unshares the PID namespace and forks PID 1; PID 1 joins its cgroups, makes its namespaces
and mounts, pivots into the root and ends in `execve()` of the command.

**Live restore.** A container's parent is not the daemon but a small supervisor (containerd's shim;
labctl's `containers/supervisor.py`) in its own session. Stop the daemon and the containers run on;
start it again and it finds them in its state directory.
"""


def demo() -> None:
    from labctl.demos import daemonrun
    require_root("the daemon demo")
    with daemonrun.private_daemon() as daemon:
        st = os.stat(daemon.socket)
        ui.say(f"\n[bold]1. A private daemon listens on {daemon.socket}[/bold] "
               f"({stat.filemode(st.st_mode)} {pwd.getpwuid(st.st_uid).pw_name} {grp.getgrgid(st.st_gid).gr_name})")
        client, pid = _client_run(daemon.socket, ["run", "--rm", "busybox", "echo", "hello from busybox"])
        ui.say(f"\n[bold]2. `{client} run --rm busybox echo ...` (PID {pid}): the requests that crossed the "
               "socket[/bold], as the daemon logged them when each answer ended; the PID is SO_PEERCRED's")
        ui.table(["client PID", "method", "path", "status", "ms"],
                 [[r.pid, r.method, _short(r.path), r.status, f"{r.ms:.1f}"] for r in daemon.requests(pid)])
        ui.say("\n[bold]3. The socket is root-equivalent: `run -v /:/host:ro busybox wc -l /host/etc/shadow`[/bold]")
        _client_run(daemon.socket, ["run", "--rm", "-v", "/:/host:ro", "busybox", "wc", "-l", "/host/etc/shadow"],
                    show=True)
        ui.say("  /etc/shadow is readable by root only (mode "
               f"{stat.filemode(os.stat('/etc/shadow').st_mode)}): whoever may connect reads it.")
        _live_restore(daemon.socket)
        ui.say("\n[bold]5. One container's life, request by request (stdlib HTTP/1.1, labctl.demos.daemonrun):[/bold]")
        rows = []
        for i in range(3):
            times, code, cid = daemonrun.timed_run(daemon.socket, "busybox", ["true"])
            rows.append([i + 1, cid[:12]] + [f"{times[p] * 1000:.1f}" for p in ("create", "start", "wait", "delete")])
        ui.table(["run", "container", "create ms", "start ms", "wait ms", "delete ms"], rows)
        ui.say("The first create is the slowest: it resolves the image and may unpack its layers.")
        _timeline(daemon.socket)


def _timeline(socket_path: str) -> None:
    """6. One `run --rm busybox true`, traced by bcc from the client's connect() to PID 1's execve()."""
    from labctl.demos import daemonrun
    from labctl.errors import LabError
    from labctl.tracing.daemontimeline import format_timeline
    ui.say("\n[bold]6. One `run --rm busybox true`, from the client's connect() on the socket to the container's "
           "execve(), as the kernel's tracepoints saw it (bcc: labctl/tracing/daemontrace.py)[/bold]")
    try:
        traced, steps, phases = daemonrun.traced_run(socket_path, ["run", "--rm", "busybox", "true"])
    except LabError as exc:    # no bcc, headers or tracefs here: the rest of the demo stands
        ui.say(f"  (not traced: {exc}; `labctl doctor` says what tracing needs)")
        return
    shown = [s for s in steps if s.kind != "mount" or s.role != "PID 1" or "/proc/" not in s.event]
    ui.say("  " + "\n  ".join(format_timeline(shown)))
    ui.say(f"  ({len(steps) - len(shown)} more mounts of PID 1 over /proc/... left out: the masked paths)")
    ui.table(["phase", "ms"], [[name, f"{ms:.1f}"] for name, ms in phases])
    ui.say("The daemon never runs the command itself: it forks a helper that forks the supervisor and exits "
           "(the supervisor is no child of the daemon, so it outlives it); the supervisor unshares the PID "
           "namespace and forks PID 1, which builds the container from inside and ends in execve().")


def _client_run(socket_path: str, args: list[str], show: bool = False) -> tuple[str, int]:
    """Run docker's CLI (labctl's own client if there is none) against the socket: (its name, its PID)."""
    from labctl.demos.daemonrun import client
    name, argv, env = client(socket_path, args)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=120)
    if show or proc.returncode:
        ui.say("  " + (out.strip().replace("\n", "\n  ") or f"(exit {proc.returncode})"))
    return name, proc.pid


def _live_restore(socket_path: str) -> None:
    from labctl.containers import store
    from labctl.daemon import control
    from labctl.demos.daemonrun import request
    from labctl.errors import LabError
    ui.say("\n[bold]4. Live restore: a container started, then the daemon stopped[/bold]")
    status, answer = request(socket_path, "POST", "/v1.41/containers/create",
                             {"Image": "busybox", "Cmd": ["sleep", "60"]})
    if status != 201:
        raise LabError(f"the daemon refused to create a container ({status}: {answer})",
                       f"read its log: {control.log_file()}")
    cid = answer["Id"]
    try:
        request(socket_path, "POST", f"/v1.41/containers/{cid}/start")
        pid = store.load(cid).pid
        control.stop(socket_path)
        sup = _ppid(pid)
        ui.say(f"  daemon stopped; the container's PID 1 ({pid}) is "
               f"{'still running' if os.path.exists(f'/proc/{pid}') else 'gone'} "
               f"(its parent: PID {sup}, {_comm(sup)}, whose parent is PID {_ppid(sup)}: double-forked, "
               "no child of the daemon)")
        control.start(socket_path)
        status, answer = request(socket_path, "GET", f"/v1.41/containers/{cid}/json")
        ui.say(f"  daemon started again: GET /containers/{cid[:12]}/json → {status}, "
               f"State.Status {answer['State']['Status']!r}, State.Pid {answer['State']['Pid']}")
    finally:
        request(socket_path, "DELETE", f"/v1.41/containers/{cid}?force=1")


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _comm(pid: int) -> str:
    """The program a process runs: its script's name for an interpreter (supervisor.py), else argv[0]."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    return os.path.basename(next((a for a in argv if a.endswith(".py")), argv[0]))


def _short(path: str) -> str:
    """/v1.41/containers/<64 hex>/start -> /v1.41/containers/<12 hex>/start"""
    parts = path.split("/")
    return "/".join(p[:12] if len(p) == 64 else p for p in parts)


def check(command: list[str]) -> list[str]:
    """Judge the exercise by what the daemon saw: the requests its process made (SO_PEERCRED's PID in the
    daemon's log), the events of the container those made (create, start, die with the marker exit code,
    destroy), and the container's record, which must be gone."""
    from labctl.demos import daemonrun
    verified: list[str] = []
    code = random.randint(3, 120)
    argv = ["sh", "-c", f"exit {code}"]
    with daemonrun.private_daemon() as daemon:
        since = time.time() - 1
        with checking.running(command + [daemon.socket, "busybox", *argv]) as run:
            status = checking.exit_status(run, 30)
            pid = run.popen.pid
        made = [e["id"] for e in daemonrun.events(daemon.socket, since) if e.get("Action") == "create"]
        try:
            _judge(daemon, pid, status, code, made, verified)
        finally:
            for cid in made:
                daemonrun.exchange(daemon.socket, "DELETE", f"/v1.41/containers/{cid}?force=1")
    return verified


def _judge(daemon, pid: int, status: int | None, code: int, made: list[str], verified: list[str]) -> None:
    from labctl.containers import store
    from labctl.demos import daemonrun
    asked = daemon.requests(pid)
    checking.expect(bool(asked), f"no request from your exercise (PID {pid}) reached the daemon",
                    "connect an AF_UNIX stream socket to the path given (TODO 1), then send a request line, "
                    "headers and a blank line (TODO 2)", verified,
                    f"the daemon logged {len(asked)} request(s) from your PID {pid} (SO_PEERCRED)")
    if status is None:
        raise CheckFailed("the exercise did not end within 30 s",
                          "an HTTP/1.1 connection stays open after an answer: read exactly Content-Length bytes, "
                          "or the chunks up to the one of size 0 (TODO 3), or send `Connection: close`")
    created = [r for r in asked if r.method == "POST" and r.path.split("?")[0].endswith("/containers/create")]
    checking.expect(any(r.status == 201 for r in created),
                    "no POST /containers/create from your exercise was answered 201" +
                    (f" (it was answered {created[0].status})" if created else ""),
                    "send a JSON body {\"Image\": ..., \"Cmd\": [...]} with its Content-Length (TODOs 2, 4)",
                    verified, "POST /containers/create → 201")
    events = [e for e in daemonrun.events(daemon.socket, time.time() - 60) if e.get("id") in made]
    actions = [e["Action"] for e in events]
    checking.expect("start" in actions, "the container was created but never started",
                    "POST /containers/{id}/start, with the Id from create's answer (TODO 4)", verified,
                    "the daemon started it (event: start)")
    died = [e["Actor"]["Attributes"].get("exitCode") for e in events if e["Action"] == "die"]
    checking.expect(died == [str(code)], f"the container's PID 1 did not exit {code} (die events: {died})",
                    "create it with the command the exercise was given, as Cmd (TODO 4)", verified,
                    f"its PID 1 ran `sh -c 'exit {code}'` and exited {code} (event: die, exitCode {code})")
    checking.expect(status == code, f"the exercise exited {status}, the container {code}",
                    "POST /containers/{id}/wait answers {\"StatusCode\": N} in chunks (Transfer-Encoding: chunked, "
                    "TODO 3): exit with N (TODO 4)", verified, f"the exercise exited {code}, the container's status")
    checking.expect("destroy" in actions and not any(_exists(store, cid) for cid in made),
                    "the container is still there after the exercise ended",
                    "DELETE /containers/{id} once it has ended (TODO 4)", verified,
                    "DELETE removed it: event destroy, and no record left in the state directory")


def _exists(store, cid: str) -> bool:
    try:
        store.load(cid)
        return True
    except store.NoSuchContainer:
        return False


def reference(argv: list[str]) -> int:
    """Reference solution: `SOCKET IMAGE COMMAND...`; prints the container's ID and exit code, exits with it."""
    from labctl.demos import daemonrun
    if len(argv) < 3:
        print("usage: python -m labctl.steps.s11_daemon SOCKET IMAGE COMMAND [ARGS...]", file=sys.stderr)
        return 2
    _, code, cid = daemonrun.timed_run(argv[0], argv[1], argv[2:])
    print(cid)
    print(code)
    return code


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
