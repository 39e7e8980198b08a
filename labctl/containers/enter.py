"""`labctl exec`: run one more process inside a running container.

The process must end up exactly where PID 1 is: in its cgroup and in each of its namespaces.
  1. into the container's cgroup: born in its v2 directory (clone3 with CLONE_INTO_CGROUP) and moved
     into each v1 hierarchy by ourselves (labctl/runtime/cgroup.py)
  2. setns(2) into every namespace PID 1 does not share with us (namespaces.join_namespaces_of, which
     opens all of /proc/<PID 1>/ns/<kind> first): cgroup (its view is rooted at the container's
     cgroup), ipc, uts, net, pid, time, then mnt (after it, /proc is the container's, and the root
     and working directory are the container's root) and, with --userns remap, user: last, because
     joining it leaves us capabilities in the container's user namespace only, and the others belong to
     the host's (runc joins it first, as its namespaces are made inside it; setns(2), NOTES)
  3. fork: PID and time namespaces take effect for children only, so the child is the one inside; its
     parent stays outside, waits for it and passes signals on (kernel/signals.py), as labctl does
  4. in the child: the container's security profile, the user (from the container's /etc/passwd) and the
     working directory, in PID 1's order (runtime/confine.py), then the terminal, exec. As with
     `docker exec`, the process gets the container's capabilities, seccomp filter and no_new_privs
A failure in the child crosses back as an ERROR message (kernel/handshake.py); EOF means it exec'd.
"""
from __future__ import annotations

import os

from labctl.containers.store import Container
from labctl.containers.supervisor import wait_for
from labctl.errors import CommandFailed, LabError
from labctl.kernel import handshake
from labctl.kernel.namespaces import join_namespaces_of, namespace_inodes, read_all
from labctl.kernel.signals import forwarding_to
from labctl.runtime import cgroup as cgroups, confine
from labctl.runtime.stdio import Stdio
from labctl.runtime.user import resolve_user
from labctl.security.profile import SecurityProfile

#: The namespaces an exec'd process joins, those PID 1 does not share with us (mount, then user, last).
KINDS = ("cgroup", "ipc", "uts", "net", "pid", "time", "mnt", "user")


def exec_in(container: Container, argv: list[str], stdio: Stdio | None = None, user: str | None = None,
            workdir: str | None = None, env: list[str] = ()) -> int:
    """Run a command in a running container (the steps in the module docstring). Returns the PID of our
    child, which exits with the command's exit code: wait for it with wait()."""
    if container.status != "running":
        raise LabError(f"container {container.name} is not running", "start a new one with `labctl run`")
    stdio = stdio or Stdio()
    pid = container.pid
    cgroup = container.state.get("cgroup")
    theirs, ours = namespace_inodes(pid, KINDS), namespace_inodes("self", KINDS)
    kinds = [kind for kind in KINDS if theirs[kind] != ours[kind]]
    environment = dict(e.partition("=")[::2] for e in container.spec.env)
    environment.update(dict(e.partition("=")[::2] for e in env))
    program = confine.filter_program(container.spec.security)   # compiled (or kept) before the fork
    pipes = handshake.Pipes(with_go=False)
    child = cgroups.fork_into(cgroup)   # os.fork(), the child born in the container's cgroup (v2)
    if child == 0:
        end = pipes.child()
        try:
            _exec_child(pid, kinds, cgroup, argv, environment, user or container.spec.user,
                        workdir or container.spec.workdir, container.spec.security, program, stdio, end)
        except BaseException as exc:
            end.send_error(exc)
        os._exit(127)
    end = pipes.parent()
    message = end.receive()   # None: EOF, the command was exec'd
    end.close()
    for fd in (stdio.console, stdio.stdin):
        if fd is not None and fd > 2:
            os.close(fd)
    if message is not None:
        os.waitpid(child, 0)
        raise CommandFailed(f"exec in {container.name} failed: {message.cause}", 126, message.fix)
    return child


def wait(child: int) -> int:
    """Wait for exec_in's child, passing on the signals we get as `labctl run` does; its exit code."""
    with forwarding_to(child):
        return wait_for(child)


def exec_capture(container: Container, argv: list[str]) -> tuple[int, str]:
    """exec_in with stdout and stderr captured: (exit code, output)."""
    r, w = os.pipe()
    try:
        child = exec_in(container, argv, Stdio(os.open(os.devnull, os.O_RDONLY), w, w))
    finally:
        os.close(w)
    out = read_all(r)
    os.close(r)
    return wait_for(child), out


def exec_foreground(container: Container, argv: list[str], *, tty: bool = False, interactive: bool = False,
                    user: str | None = None, workdir: str | None = None, env: list[str] = ()) -> int:
    """`labctl exec` at the user's terminal: with `tty` the command gets a pty of its own (relayed here, as
    `labctl run -t` does), with `interactive` our stdin, else /dev/null. Waits for it, passing on the
    signals `labctl run` passes on, and returns its exit code."""
    stdio, console = Stdio(), None
    if tty:
        from labctl.containers.terminal import console_socket
        console, theirs = console_socket()     # our end, until the container sends its pty master over it
        stdio = Stdio(console=theirs)
    elif not interactive:
        stdio = Stdio(stdin=os.open(os.devnull, os.O_RDONLY))
    child = exec_in(container, argv, stdio, user=user, workdir=workdir, env=env)
    if console is not None:
        from labctl.containers.terminal import receive_master, relay
        relay(receive_master(console), done=lambda: False)   # (receive_master closes the socket)
    return wait(child)


def _exec_child(pid, kinds, cgroup, argv, environment, user, workdir, security: SecurityProfile,
                program: bytes | None, stdio: Stdio, end: handshake.ChildEnd) -> None:
    cgroups.join_self(cgroup)
    join_namespaces_of(pid, kinds)
    inner = os.fork()
    if inner:
        # the waiting parent holds no descriptor but 0-2: had it kept the caller's (a daemon's end of this
        # or another process's stdin pipe), that pipe would never reach EOF while it waits (close_range(2))
        end.close()
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os._exit(wait(inner))
    os.chdir("/")
    who = resolve_user(user)
    environment.setdefault("HOME", who.home)
    confine.become(who, workdir, security, program)
    stdio.install()
    try:
        os.execvpe(argv[0], argv, environment)
    except OSError as exc:
        end.send_error(exc, f"{exc.strerror}: {argv[0]}")
        os._exit(127)
