"""`labctl-runtime exec --process process.json ID`: one more process in a running container, as
`runc exec` (containerd's `ctr task exec`, `docker exec`) makes it.

    runtime ──clone3 into the cgroup──▶ E ──setns(2) into PID 1's namespaces──fork──▶ P
                                         (pid and time namespaces apply to children only, hence P)
    P: the user namespace last, chdir(cwd), the profile (capabilities, no_new_privs, the container's
       seccomp filter from config.json, as PID 1 got it: confine.py), the user, execve(args)
    E: with --detach exits at once (P is left to the caller's subreaper, as PID 1 is); without, waits
       for P and exits with its status, which the runtime passes on.
P's host PID goes to --pid-file; an error before execve comes back over a CLOEXEC pipe (EOF: it ran).

A terminal (--tty, or "terminal": true in process.json) is made as `create` makes PID 1's (stdio.py):
the runtime connects to --console-socket, E and P inherit the connection, and P, inside every namespace
(the container's /dev/ptmx: its own devpts), opens the pty, sends the master back with SCM_RIGHTS and
makes the slave its controlling terminal and its fds 0, 1 and 2, before the profile and the user.
"""
from __future__ import annotations

import json
import os

from labctl.errors import LabError
from labctl.kernel.syscalls import NAMESPACE_FLAGS, setns
from labctl.runtime import cgroup as cgroups, confine, oci, ocistate
from labctl.runtime.user import ResolvedUser
from labctl.security.profile import SecurityProfile

ORDER = ("ipc", "uts", "net", "pid", "time", "cgroup", "mnt")   # the user namespace last, in P


def main(root: str, args) -> int:
    data = ocistate.load(root, args.id)
    if ocistate.status(data) != "running":
        raise LabError(f"cannot exec in container {args.id!r}: it is {ocistate.status(data)}",
                       "exec needs a running container (`start` it)")
    process = read_process(args)
    doc = oci.read_config(data["bundle"])
    from labctl.runtime.ocicheck import check_process
    check_process(process)
    profile = _profile(process, doc)
    program = confine.filter_program(profile)   # here: libseccomp is the host's, PID 1's root is not
    sock = None
    if process.get("terminal"):
        # imported here: P opens the terminal in the container's mount namespace, out of the host's modules' reach
        import fcntl, termios  # noqa: F401,E401
        from labctl.runtime.stdio import Stdio, connect_console_socket  # noqa: F401
        sock = connect_console_socket(args.console_socket)
    r, w = os.pipe()
    child = cgroups.fork_into(data.get("cgroup"))
    if child == 0:
        os.close(r)
        try:
            _enter(data["pid"], data.get("cgroup"), process, (profile, program), w, args.detach,
                   sock.fileno() if sock else None)
        except BaseException as exc:
            os.write(w, json.dumps({"error": getattr(exc, "cause", None) or str(exc)}).encode())
        os._exit(127)
    os.close(w)
    if sock is not None:
        sock.close()   # P holds its copy; the caller's end sees EOF once P has sent the master
    reply = b"".join(iter(lambda: os.read(r, 4096), b""))
    os.close(r)
    messages = [json.loads(line) for line in reply.decode().splitlines() if line.strip()]
    error = next((m["error"] for m in messages if "error" in m), None)
    pid = next((m["pid"] for m in messages if "pid" in m), 0)
    if error:
        os.waitpid(child, 0)
        raise LabError(f"exec failed: {error}", "check process.args, cwd and user")
    if args.pid_file and pid:
        with open(args.pid_file, "w") as f:
            f.write(str(pid))
    _, status = os.waitpid(child, 0)
    if args.detach:
        return 0
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def read_process(args) -> dict:
    """The process to run: process.json, or ARGS; --tty sets its "terminal", which needs --console-socket
    (the one way the master reaches the caller: `labctl-runtime` does not copy a terminal itself)."""
    if args.process:
        with open(args.process) as f:
            process = json.load(f)
    elif args.args:
        process = {"args": args.args, "cwd": "/", "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    else:
        raise LabError("exec needs --process FILE or a command", "e.g. `exec ID ps`")
    if args.tty:
        process["terminal"] = True
    if process.get("terminal") and not args.console_socket:
        raise LabError("a terminal (--tty, or process.terminal) but no --console-socket was given",
                       "give --console-socket PATH (a Unix socket that receives the terminal's master)")
    if args.console_socket and not process.get("terminal"):
        raise LabError("--console-socket was given but the process has no terminal",
                       'add --tty (or "terminal": true in process.json), or drop --console-socket')
    return process


def _profile(process: dict, doc: dict) -> SecurityProfile:
    caps = process.get("capabilities") or {}
    return SecurityProfile(capabilities=list(caps.get("bounding") or caps.get("permitted") or []),
                           seccomp=(doc.get("linux") or {}).get("seccomp"),
                           no_new_privileges=bool(process.get("noNewPrivileges")))


def _enter(pid1: int, cgroup: dict | None, process: dict, confined: tuple, w: int, detach: bool,
           console: int | None) -> None:
    """In E: join, fork P, and wait for it (or not). `confined`: the profile and its compiled filter."""
    cgroups.join_self(cgroup)
    user_fd = _open_if_other(pid1, "user")
    for kind in ORDER:
        fd = _open_if_other(pid1, kind)
        if fd is not None:
            setns(fd, NAMESPACE_FLAGS[kind])
            os.close(fd)
    p = os.fork()
    if p == 0:
        try:
            _become(process, *confined, user_fd, console)
        except BaseException as exc:
            os.write(w, (json.dumps({"error": getattr(exc, "cause", None) or str(exc)}) + "\n").encode())
        os._exit(127)
    if console is not None:
        os.close(console)
    os.write(w, (json.dumps({"pid": p}) + "\n").encode())   # the host PID: E itself is still in the host PID namespace
    os.close(w)
    if detach:
        os._exit(0)
    _, status = os.waitpid(p, 0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _open_if_other(pid: int, kind: str) -> int | None:
    """/proc/PID/ns/KIND opened, if it differs from ours (joining one's own namespace is pointless, and
    for the user namespace refused: EINVAL)."""
    if os.stat(f"/proc/{pid}/ns/{kind}").st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino:
        return None
    return os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)


def _become(process: dict, profile: SecurityProfile, program, user_fd: int | None, console: int | None) -> None:
    """In P, inside: the user namespace, the terminal, the environment, the profile and the user, execve."""
    if user_fd is not None:
        from labctl.kernel.syscalls import CLONE_NEWUSER
        setns(user_fd, CLONE_NEWUSER)
        os.close(user_fd)
    if console is not None:   # inside every namespace now: the container's own /dev/ptmx
        from labctl.runtime.stdio import Stdio
        Stdio(console=console).install()
    user = process.get("user") or {}
    env = dict(e.partition("=")[::2] for e in process.get("env") or [])
    who = ResolvedUser(user.get("uid", 0), user.get("gid", 0), sorted(set(user.get("additionalGids") or [])),
                       env.get("HOME", "/"))
    import shutil
    argv = process["args"]
    found = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", "/usr/bin:/bin"))
    if not found:
        raise LabError(f"exec: {argv[0]!r}: executable file not found in $PATH", "")
    confine.become(who, process.get("cwd") or "/", profile, program)
    os.execve(found, argv, env)
