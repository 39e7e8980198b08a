"""Step 1: namespaces. The demo, the check, and the reference solution of lab/01-namespaces/exercise.py."""
from __future__ import annotations

import os
import socket
import sys

from labctl.steps import checking
from labctl.kernel import namespaces
from labctl import ui
from labctl.errors import CheckFailed, require_root

EXPLANATION = """
A **namespace** wraps one kind of global resource so that the processes inside see their own copy.
A container is, first of all, a process in a set of new namespaces:

| namespace | flag | the process gets its own... |
|---|---|---|
| UTS   | `CLONE_NEWUTS` | hostname (`sethostname(2)`) |
| PID   | `CLONE_NEWPID` | process numbers: the first process is **PID 1** |
| IPC   | `CLONE_NEWIPC` | System V IPC objects and POSIX message queues |
| mount | `CLONE_NEWNS`  | mount table (step 2 builds a root filesystem in it) |

`unshare(2)` moves the caller into new namespaces, except for PID: after `unshare(CLONE_NEWPID)` the
caller stays where it is and its *next child* becomes PID 1 of the new namespace. `setns(2)` joins an
existing namespace through a file descriptor of `/proc/<pid>/ns/<kind>`. Two processes share a
namespace exactly when the inode numbers of those files are equal: that is what the lab checks.
"""


def demo() -> None:
    require_root("the namespaces demo")
    host_name = socket.gethostname()
    ui.say("Starting `sleep 30` with unshare(CLONE_NEWUTS|CLONE_NEWPID|CLONE_NEWIPC|CLONE_NEWNS), "
           "then fork, then sethostname(\"lab-container\"):")
    with namespaces.spawn(["sleep", "30"], hostname="lab-container", what="step 1 demo") as proc:
        ui.kernel(f"hostname outside: {host_name!r}; inside (gethostname after setns into its UTS namespace): "
                  f"{namespaces.hostname_of(proc.pid)!r}")
        nspid = namespaces.pid_inside(proc.pid)
        ui.kernel(f"/proc/{proc.pid}/status NSpid: {' '.join(map(str, nspid))}  "
                  f"→ PID {nspid[0]} on the host is PID {nspid[-1]} inside")
        rows = [(kind, mine, theirs, "[green]shared[/green]" if shared else "[yellow]new[/yellow]")
                for kind, mine, theirs, shared in namespaces.describe_namespaces(proc.pid)]
        ui.table(("namespace", "labctl's inode", f"/proc/{proc.pid}/ns inode", ""), rows,
                 title="Which namespaces the container shares with the host")
        ui.say("net, user, cgroup and time are still shared: steps 6, 7 and 9 make those new.")
        from labctl.plots.namespaces import namespace_sharing
        from labctl.steps import save_figure
        save_figure(namespace_sharing({"labctl (the host's)": namespaces.namespace_inodes("self"),
                                       "the container": namespaces.namespace_inodes(proc.pid)},
                                      reference="labctl (the host's)"), "01-namespaces")
        seen = namespaces.run_in_namespaces_of(proc.pid, lambda: os.getpid(), kinds=("pid",))
        ui.kernel(f"a process that setns()-joins its PID namespace (and forks) gets PID {seen} there: "
                  "PID 1 is taken by `sleep`")
    ui.ok("the container was killed and reaped: SIGKILL to PID 1 ends its whole PID namespace")


def check(command: list[str]) -> list[str]:
    """Judge `command HOSTNAME sleep N`: new namespaces, its own hostname, PID 1, exit status passed on."""
    verified: list[str] = []
    want_host = checking.unique_name("lab-check")
    host_before = socket.gethostname()
    marker = ["sleep", "1001"]
    try:
        with checking.running(command + [want_host] + marker) as run:
            pid = checking.process_with_argv(run, marker)
            verified.append(f"the exercise started `{' '.join(marker)}` (host PID {pid})")
            for kind, mine, theirs, shared in namespaces.describe_namespaces(pid, namespaces.STEP1_NAMESPACES):
                flag = {"uts": "CLONE_NEWUTS", "pid": "CLONE_NEWPID", "ipc": "CLONE_NEWIPC",
                        "mnt": "CLONE_NEWNS"}[kind]
                checking.expect(not shared, f"the command shares the host's {kind} namespace "
                                f"(/proc/{pid}/ns/{kind} is inode {theirs}, the same as the host's)",
                                f"call unshare({flag} | ...) before you fork (TODO 1)", verified,
                                f"{kind} namespace is new (inode {theirs}, host {mine})")
            seen = namespaces.hostname_of(pid)
            checking.expect(seen == want_host, f"the command sees hostname {seen!r}, not {want_host!r}",
                            _hostname_fix(seen, want_host), verified, f"the command sees hostname {seen!r}")
            nspid = namespaces.pid_inside(pid)
            checking.expect(nspid[-1] == 1 and len(nspid) > 1,
                            f"the command is PID {nspid[-1]} inside its PID namespace, not PID 1",
                            "unshare(CLONE_NEWPID) affects the next child: fork after unshare and exec in the child",
                            verified, f"the command is PID 1 inside (NSpid {' '.join(map(str, nspid))})")
    finally:
        if socket.gethostname() != host_before:
            from labctl.kernel.syscalls import sethostname
            sethostname(host_before)
            raise CheckFailed("the exercise changed the host's hostname",
                              "call sethostname only after unshare(CLONE_NEWUTS), in the new namespace")
    status, _ = checking.run_to_end(command + [want_host, "sh", "-c", "exit 7"], timeout=10)
    checking.expect(status == 7, f"the command exited with 7 but the exercise exited with {status}",
                    "wait for the child and exit with its status (os.waitstatus_to_exitcode)", verified,
                    "the command's exit status is passed on")
    verified.append("the host's hostname is unchanged")
    return verified


def _hostname_fix(seen: str, want: str) -> str:
    """A hostname cut to its first letters is a str given where C wants bytes: ctypes passes a Python
    str as wchar_t (4 bytes a character, 'l' is 6c 00 00 00), and the kernel's name ends at the first 0."""
    if seen and seen != want and want.startswith(seen):
        return ("sethostname takes bytes and a length: a Python str reaches C as wide characters, whose "
                "zero bytes end the name; pass hostname.encode() and len(hostname.encode()) (TODO 2)")
    return "call sethostname(HOSTNAME) in the child, inside the new UTS namespace (TODO 2)"


def reference(argv: list[str]) -> int:
    """Reference solution: `HOSTNAME COMMAND [ARGS...]`, same contract as the exercise."""
    if len(argv) < 2:
        print("usage: python -m labctl.steps.s01_namespaces HOSTNAME COMMAND [ARGS...]", file=sys.stderr)
        return 2
    proc = namespaces.spawn(argv[1:], hostname=argv[0], what="step 1 reference")
    status = proc.wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
