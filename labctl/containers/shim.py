"""`labctl run --runtime runc|crun|labctl-oci`: the container made by another OCI runtime, from the
bundle labctl writes, with labctl's supervisor in containerd-shim's place.

    labctl run ──fork──▶ S (setsid; prctl(PR_SET_CHILD_SUBREAPER): orphans of its children become its own)
      │                  │ RUNTIME --root <container>/oci create --bundle <container>/bundle --pid-file P ID
      │◀─── PID ─────────┤ (the runtime's create exits: PID 1 is reparented to S, the subreaper)
      │ attach the network by PID, record "running"     (what containerd's CNI step does there too)
      │──── GO ─────────▶│ RUNTIME start ID
      │◀─── EOF ─────────┤ then supervise: waitpid(PID 1) (S is its parent now), teardown.finish
The bundle is what `labctl bundle` writes, on the container's own overlay root (root.path absolute), with
linux.cgroupsPath relative, "labctl/<name>": runc and crun place a relative path under their own cgroup,
which is where labctl made the container's cgroup (resources.py), so stats and exec find it as ever.
The handshake is labctl's own (kernel/handshake.py), so lifecycle.start treats both alike.
"""
from __future__ import annotations

import contextlib
import os
import subprocess

from labctl.errors import LabError
from labctl.kernel import handshake
from labctl.runtime.config import Config
from labctl.runtime.create import Created
from labctl.runtime.stdio import Stdio

RUNTIMES = ("labctl", "runc", "crun", "labctl-oci")
PR_SET_CHILD_SUBREAPER = 36


def runtime_binary(name: str) -> list[str]:
    from labctl.runtime import peers
    return peers.command(name)


def write_config(container, config: Config) -> str:
    """<container>/bundle/config.json for `config` (ociconfig.write_config), with the cgroup path this
    runtime wants."""
    from labctl.containers.ociconfig import write_config
    name = container.state["cgroup"]["name"] if container.state.get("cgroup") else ""
    # relative to the runtime's own cgroup: runc and crun add labctl/ themselves, labctl-runtime's lab node is it
    path = name if container.spec.runtime == "labctl-oci" else f"labctl/{name}"
    return str(write_config(container, config, path if name else ""))


def delete(container) -> None:
    """RUNTIME delete --force ID, once the container has ended (teardown.py): runc and crun remove the
    cgroups they made in the hierarchies labctl does not use (cpuset, devices, freezer, name=systemd, ...).
    When the runtime cannot (a crash left it no state: killed between its create and the record), what it
    made there is removed by path, as it would have: leftover_cgroups()."""
    if (container.dir / "oci").is_dir():
        subprocess.run(runtime_binary(container.spec.runtime) + ["--root", str(container.dir / "oci"), "delete",
                                                                 "--force", container.id],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    name = (container.state.get("cgroup") or {}).get("name")
    if name and container.spec.runtime in ("runc", "crun"):
        remove_leftover_cgroups(name)


def remove_leftover_cgroups(name: str) -> None:
    """rmdir what runc or crun left of labctl/<name> (leftover_cgroups), and the labctl/ it made above it in
    the hierarchies labctl itself does not use, once empty. A cgroup with a process left is not empty
    and stays, for `cleanup` to kill first; labctl's own labctl/ directories are pruned by labctl, under
    its lock (kernel/cgroups)."""
    from labctl.kernel import cgroups
    ours = {str(h.lab_dir) for h in cgroups.detect().hierarchies()}
    for directory in leftover_cgroups(name):
        with contextlib.suppress(OSError):
            directory.rmdir()
    for parent in leftover_cgroups(""):
        if str(parent) not in ours:
            with contextlib.suppress(OSError):
                parent.rmdir()


def leftover_cgroups(name: str) -> list:
    """<hierarchy>/<our own cgroup>/labctl/<name> in every cgroup hierarchy mounted: where runc puts the
    relative cgroupsPath "labctl/<name>" that write_config gives it (relative to its own cgroup, which is
    the supervisor's, as ours); crun 1.8 takes it from the hierarchy's root instead, so that too."""
    from pathlib import Path
    from labctl.kernel.cgroups.hierarchy import _own_cgroups
    own_v1, own_v2 = _own_cgroups()
    found = []
    with open("/proc/self/mountinfo") as f:
        for fields in (line.split() for line in f):
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2" and own_v2 is not None:
                own = own_v2
            elif fields[sep + 1] == "cgroup":
                own = next((own_v1[o] for o in fields[sep + 3].split(",") if o in own_v1), None)
            else:
                continue
            for base in {own, "/"} - {None}:
                directory = Path(fields[4]) / base.lstrip("/") / "labctl" / name   # name "": labctl/ itself
                if directory.is_dir():
                    found.append(directory)
    return found


def create(container, config: Config, stdio: Stdio, runtime: str, supervise) -> Created:
    """Fork S (the module docstring); returns once the runtime's `create` has made PID 1."""
    bundle = write_config(container, config)
    argv = runtime_binary(runtime) + ["--root", str(container.dir / "oci")]
    pipes = handshake.Pipes()
    child = os.fork()
    if child == 0:
        end = pipes.child()
        try:
            _shim(container, argv, bundle, stdio, end, supervise)
        except BaseException as exc:
            end.send_error(exc)
        os._exit(127)
    end = pipes.parent()
    try:
        message = end.expect(handshake.PID, f"{runtime} could not create the container", f"see {runtime}'s message")
    except BaseException:
        end.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)
        raise
    created = Created(message.pid, message.supervisor, child, container.spec.detach, config.argv[0], end)
    if container.spec.detach:
        os.waitpid(child, 0)
    end.expect(handshake.READY, f"{runtime} could not create the container", f"see {runtime}'s message")
    return created


def _shim(container, argv: list[str], bundle: str, stdio: Stdio, end: handshake.ChildEnd, supervise) -> None:
    """S: the runtime's create, PID, READY; at GO its start; then wait, delete, supervise's teardown."""
    from labctl.kernel.syscalls import prctl
    os.setsid()
    if container.spec.detach and os.fork():
        os._exit(0)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    pid_file = container.dir / "oci.pid"
    io = {k: v for k, v in (("stdin", stdio.stdin), ("stdout", stdio.stdout), ("stderr", stdio.stderr)) if v is not None}
    log = container.dir / "oci.log"   # the runtime's own errors (the container's stderr is the caller's)
    done = subprocess.run(argv + ["--log", str(log), "create", "--bundle", bundle, "--pid-file", str(pid_file),
                                  container.id], **io)
    if done.returncode != 0:
        said = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        raise LabError(f"{argv[0]} create failed: {said[-1] if said else 'exit %d' % done.returncode}",
                       "see the runtime's message; `labctl run --runtime labctl` is the reference")
    pid = int(pid_file.read_text())
    stdio.close()
    end.send_pid(pid, supervisor=os.getpid())
    end.send_ready()
    if not end.wait_for_go():
        subprocess.run(argv + ["delete", "--force", container.id], capture_output=True)
        os._exit(125)
    started = subprocess.run(argv + ["start", container.id], capture_output=True)
    if started.returncode != 0:
        subprocess.run(argv + ["delete", "--force", container.id], capture_output=True)
        raise LabError(f"{argv[0]} start failed: {started.stderr.decode(errors='replace').strip()}",
                       "see the runtime's message")
    end.close()   # EOF: the command runs
    supervise(pid)   # the runtime's state stays in <container>/oci, removed with the container
