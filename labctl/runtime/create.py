"""Create a container's process, then start it: the OCI runtime's `create` and `start` (what runc does
for `runc create` and `runc start`), over the handshake of labctl/kernel/handshake.py.

    caller ──fork──▶ S ──setsid, unshare(PID|TIME)──clone3 into the cgroup──▶ PID 1 (ociinit.py)
      │              │ (-d: S forks once more and the middle process exits,   │ joins its v1 cgroups,
      │              │  so that S is no child of the caller)                   │ unshare(UTS|IPC|NS|NET|
      │◀──── PID ────┘ S then becomes the supervisor: supervise(PID 1)         │ CGROUP), hostname, the
      │                (containers/supervisor.py: waits, records, tears down)  │ mounts, pivot_root, the
      │                                                                          │ workdir; --userns remap:
      │                                                                          │ setns into its user ns
      │◀──────────────────────────────── READY ─────────────────────────────────┘
      │ create() returns: the caller attaches the network, records "running"
      │───────────────────────────────── GO ───────────────────────────────────▶ the profile, setuid,
      │ Created.start() returns at EOF: the command runs                          chdir, execve(the command)
    (`labctl-runtime create` instead: after GO, PID 1 pivots, says CREATED and waits on exec.fifo for
    `start`: ociinit.py)

The Config comes from a config.json (oci.from_oci): `labctl run` writes one for every container
(containers/ociconfig.py), as Docker's daemon does for runc, and reads it back.

Before the fork the caller also gets the seccomp filter's BPF program (confine.filter_program), which
PID 1 loads just before execve: compiling it inside would add its time to every start.

S itself unshares only the PID and time namespaces (they apply to its next child, PID 1): had it
unshared the mount namespace, PID 1's pivot_root would move S's root into the container too, and S
could no longer reach the state directory to record the exit. PID 1 unshares the rest itself.

The user namespace (--userns remap) is not made here but handed in open (Config.userns_fd): the
caller made it to idmap the image's layers with (security/userns.py), and closes it once PID 1 is
READY. PID 1 joins that same namespace after its last mount, having been the host's root for all the
rest: every other namespace is owned by the host's user namespace, and root inside holds no capability
over them (runc's order is the reverse: the user namespace first, the others inside it).
"""
from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable   # not typing: ~2 ms on every `labctl run`
from dataclasses import dataclass

from labctl import state
from labctl.errors import CommandFailed, LabError
from labctl.kernel import handshake
from labctl.kernel.namespaces import namespace_flags
from labctl.kernel.syscalls import NAMESPACE_FLAGS, setns, unshare
from labctl.runtime import cgroup as cgroups, confine, ociinit
from labctl.runtime.config import Config
from labctl.runtime.stdio import Stdio

#: Made by S: these take effect for its *next child*, which becomes PID 1.
FOR_CHILDREN = ("pid", "time")
DOCTOR_FIX = "see the message above; `labctl doctor` checks the kernel features"


@dataclass
class Created:
    """A container whose PID 1 is set up and waits for GO (an OCI runtime's "created" state)."""
    pid: int               # PID 1, on the host
    supervisor_pid: int
    child: int             # our child: S itself, or with detach the middle process (already reaped)
    detach: bool
    command: str           # argv[0], for the error if it cannot be executed
    _end: handshake.ParentEnd

    def start(self) -> None:
        """GO: let PID 1 exec the command. Returns once it has; CommandFailed if it could not."""
        try:
            self._end.send_go()
            message = self._end.receive()   # None: EOF, the command was exec'd (the pipe is O_CLOEXEC)
        finally:
            self._end.close()
        if message is not None:
            self.wait_supervisor()
            code = 126 if message.errno in (errno.EACCES, errno.EPERM) else 127   # Docker's codes
            raise CommandFailed(f"could not run {self.command!r} in the container: {message.cause}", code)

    def close(self) -> None:
        """Give up before start() (again is harmless): PID 1 reads EOF, not GO, and exits 125."""
        self._end.close()

    def wait_supervisor(self) -> None:
        """Wait until S has ended: it has recorded PID 1's exit and torn the container down."""
        if not self.detach:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.child, 0)
            return
        deadline = time.monotonic() + 10
        while state.process_start_time(self.supervisor_pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)


def create(config: Config, stdio: Stdio, supervise: Callable[[int], None], detach: bool = False) -> Created:
    """Fork S, which makes the namespaces and forks PID 1 (the module docstring); return once PID 1 is
    READY, or raise what went wrong inside. `supervise(pid1)` is what S goes on to do: it never returns."""
    flags = namespace_flags(k for k in config.namespaces if k in FOR_CHILDREN)         # S's unshare
    own_flags = namespace_flags(k for k in config.namespaces if k not in FOR_CHILDREN)  # PID 1's own
    program = confine.filter_program(config.security)   # the seccomp filter, compiled (or kept) before the fork
    pipes = handshake.Pipes()
    child = os.fork()
    if child == 0:
        end = pipes.child()
        try:
            _supervisor(config, stdio, flags, own_flags, end, detach, supervise, program)
        except BaseException as exc:
            end.send_error(exc)
        os._exit(127)
    end = pipes.parent()
    try:
        message = end.expect(handshake.PID, "could not start the container",
                             "run as root; `labctl doctor` checks the kernel features")
    except BaseException as exc:
        end.close()
        if isinstance(exc, LabError):
            os.waitpid(child, 0)
        raise
    created = Created(message.pid, message.supervisor, child, detach, config.argv[0], end)
    if detach:
        os.waitpid(child, 0)   # the middle process, which exited once S was forked
    try:
        end.expect(handshake.READY, "setting up the container failed", DOCTOR_FIX)
    except BaseException as exc:
        end.close()
        if isinstance(exc, LabError):
            created.wait_supervisor()
        raise
    return created


def _supervisor(config: Config, stdio: Stdio, flags: int, own_flags: int, end: handshake.ChildEnd,
                detach: bool, supervise: Callable[[int], None], program: bytes | None) -> None:
    """Runs in the forked child: becomes S (see the module docstring)."""
    os.setsid()   # its own session: a Ctrl-C or hangup at labctl's terminal does not reach it
    if detach and os.fork():
        os._exit(0)   # the double fork: S is no child of labctl, and labctl need not wait for it
    joined = [k for k in FOR_CHILDREN if k in config.oci.namespace_paths]
    own_namespaces = {NAMESPACE_FLAGS[kind]: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                      for kind in FOR_CHILDREN if flags & NAMESPACE_FLAGS[kind] or kind in joined}
    if joined:   # a bundle's linux.namespaces[].path for pid or time: setns(2) too applies to children only
        ociinit.join_namespaces({k: config.oci.namespace_paths[k] for k in joined})
    unshare(flags)
    pid = end.fork(lambda: cgroups.fork_into(config.cgroup))   # born in the container's cgroup (v2)
    if pid == 0:
        ociinit.run(config, stdio, own_flags, end, program)   # never returns
    if config.userns_fd >= 0:
        os.close(config.userns_fd)   # PID 1 has its copy: S keeps no reference to the container's user namespace
    # unshare(CLONE_NEWPID|CLONE_NEWTIME) holds for every later child of S, not only PID 1; once PID 1
    # has died, fork() into its dead PID namespace fails (ENOMEM), and the teardown starts programs
    # (nft, for a bridge network). setns(2) back to S's own namespaces: later children are host processes.
    for flag, fd in own_namespaces.items():
        setns(fd, flag)
        os.close(fd)
    end.send_pid(pid, supervisor=os.getpid())
    end.close()
    stdio.close()   # PID 1 has its copies
    supervise(pid)
