"""Step 7: a whole container. The demo, the check, and the reference solution of lab/07-container/exercise.py."""
from __future__ import annotations

import os
import sys
import time
import urllib.request
from pathlib import Path

from labctl.steps import checking
from labctl.kernel import namespaces
from labctl import state, ui
from labctl.errors import require_root


EXPLANATION = """
`labctl run IMAGE` puts every earlier step together, in the order runc does:

| what | from step | how |
|---|---|---|
| the image's config: Entrypoint + Cmd, Env, WorkingDir, User | 4, 5 | Docker's merge rules; the user looked up in the *image's* /etc/passwd |
| the root filesystem | 2, 4 | an overlay of the image's layers and a writable layer, then `pivot_root` |
| namespaces: UTS, IPC, mount, PID, network, cgroup, time | 1, 6 | `unshare`, `fork` for PID 1; PID 1 is in its cgroup *before* it calls `unshare(CLONE_NEWCGROUP)` |
| into the cgroup, at birth | 3 | `clone3(CLONE_INTO_CGROUP)` (v2) and `"0"` into `tasks` (v1): no RCU grace period, unlike writing a PID into `cgroup.procs` (runc's way, 10-20 ms) |
| limits: `-m`, `--cpus`, `--pids-limit` | 3 | the container's own cgroup |
| `--network bridge -p 8080:80` | 6 | veth to the lab bridge, DNAT for the published port |
| volumes, bind mounts, tmpfs | 2 | bind mounts into the new root before `pivot_root` |
| `--init` | | tini as PID 1: reaps zombies, forwards signals |

A small **supervisor** process is the parent of PID 1: it outlives `labctl`, waits for PID 1, records its
exit code (128+N for signal N) and removes the cgroup and the network. `labctl ps` trusts the kernel,
not the record: a container whose PID 1 (PID *and* start time) is gone shows as exited.
`labctl exec` joins the cgroup the same way, then `setns(2)`s into each namespace of PID 1 (mount last) and forks.
"""

DEMO_VOLUME = "step7-demo-data"
DEMO_PORT = 18707


def _exec(container, argv: list[str]) -> str:
    from labctl.containers import enter
    return enter.exec_capture(container, argv)[1]


def pull_demo_image() -> str:
    """Step 5's way in: serve the lab's busybox from a registry of our own on 127.0.0.1 (started for
    the demo and stopped again), and pull it into the store. Returns the reference it is stored as."""
    import shutil
    from labctl.images import labregistry, distribution as registry
    work = state.new_tmpdir("step7-registry-")
    try:
        with labregistry.RegistryServer(work / "registry") as server:
            layout = labregistry.write_lab_layout(work / "layout")
            labregistry.seed(server.host, layout, ["busybox"])
            reference = f"{server.host}/lab/busybox:latest"
            result = registry.pull(reference, progress=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ui.shown("registry", f"pulled {reference} from the lab registry: manifest {result.digest[:19]}…, "
             f"stored as {result.reference}")
    return result.reference


def demo() -> None:
    from labctl.containers import lifecycle, store, volumes
    require_root("the step 7 demo")
    image = pull_demo_image()
    ui.say(f"`labctl run -d --init --name step7-web -m 32m --cpus 0.5 --pids-limit 16 --network bridge "
           f"-p {DEMO_PORT}:80 -v {DEMO_VOLUME}:/www {image} httpd -f -p 80 -h /www`")
    spec, img = lifecycle.build_spec(
        image, ["sh", "-c", "echo 'hello from a volume' > /www/index.html; exec httpd -f -p 80 -h /www"],
        name=f"step7-web-{os.getpid()}", detach=True, init=True, memory="32m", cpus=0.5, pids_limit=16,
        network="bridge", ports=[f"{DEMO_PORT}:80"], volumes_=[f"{DEMO_VOLUME}:/www"])
    container, _ = lifecycle.run(spec, img)
    try:
        pid = container.pid
        ui.kernel(f"PID 1 is host PID {pid}; NSpid {' '.join(map(str, namespaces.pid_inside(pid)))}; "
                  f"hostname {namespaces.hostname_of(pid)!r}")
        new = [k for k, _, _, shared in namespaces.describe_namespaces(pid) if not shared]
        ui.kernel(f"namespaces of its own: {', '.join(new)}")
        for d in container.state["cgroup"]["dirs"].values():
            if "memory" in d or "unified" not in d and Path(d, "memory.max").exists():
                limit_file = "memory.limit_in_bytes" if Path(d, "memory.limit_in_bytes").exists() else "memory.max"
                ui.kernel(f"{d}/{limit_file} = {Path(d, limit_file).read_text().strip()}")
        body = _get(f"http://127.0.0.1:{DEMO_PORT}/")
        ui.shown("http", f"GET http://127.0.0.1:{DEMO_PORT}/ (DNAT to {container.state['network']['address']}:80) → {body!r}")
        ui.say("`labctl exec` into it: the same PID namespace (tini is PID 1, httpd its child), the cgroup namespace rooted at its cgroup:")
        ps_out = _exec(container, ["ps", "-o", "pid,comm"])
        for line in ps_out.splitlines():
            ui.shown("ps", line)
        for line in _exec(container, ["head", "-3", "/proc/self/cgroup"]).splitlines():
            ui.kernel(f"/proc/self/cgroup inside: {line}")
        lifecycle.stop(container, timeout=2)
        ui.ok(f"`labctl stop`: SIGTERM to PID 1 (tini passes it to httpd), exit code {store.load(container.id).state.get('exit_code')}")
        spec2, img2 = lifecycle.build_spec(image, ["cat", "/www/index.html"], auto_remove=True,
                                           volumes_=[f"{DEMO_VOLUME}:/www:ro"])
        _, out = lifecycle.run_capture(spec2, img2)
        ui.shown("cat", f"a new container reading the volume {DEMO_VOLUME}: {out.strip()!r}: the data outlived its container")
    finally:
        lifecycle.remove(store.load(container.id), force=True)
        volumes.remove(DEMO_VOLUME, force=True)
        from labctl.images.store import remove_image
        remove_image(lifecycle.image_store(), image)
    ui.ok("container removed; its cgroup, veth, DNAT rule and overlay are gone")


def _get(url: str) -> str:
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode().strip()
        except OSError:
            time.sleep(0.1)
    return "(no answer)"


# ---------------------------------------------------------------------------------------------
# The check


def check(command: list[str]) -> list[str]:
    """Judge `command NAME MEMORY sleep N`: an overlay root it pivoted into, new namespaces incl. net, the
    hostname, a memory-limited cgroup, PID 1, the exit status passed on, and its cgroup removed after."""
    from labctl.containers import images
    images.open_image("busybox")       # the exercise mounts localhost/busybox:latest
    verified: list[str] = []
    name = checking.unique_name("lab-c7")
    marker = ["sleep", "1007"]
    before = {r.path for r in state.records()}
    try:
        return _judge(command, name, marker, verified)
    finally:
        # the exercise was SIGKILLed mid-run: undo what it journaled (the reference solution) or left
        # under its name (a student's runtime: its cgroup, its overlay's directories)
        for rec in reversed(state.records()):
            if rec.path not in before:
                state.undo_record(rec)
        _remove_leftovers(name)


def _judge(command: list[str], name: str, marker: list[str], verified: list[str]) -> list[str]:
    with checking.running(command + [name, "48m"] + marker) as run:
        pid = checking.process_with_argv(run, marker)
        verified.append(f"the exercise started `{' '.join(marker)}` (host PID {pid})")
        root = next((m for m in _mounts(pid) if m[0] == "/"), None)
        checking.expect(root is not None and root[1] == "overlay",
                        f"the command's root filesystem is {root[1] if root else 'unknown'}, not an overlay",
                        "mount the image's layers with your step 4 part in the child, then enter that root with "
                        "your step 2 part (lab/mycontainer/container.py, TODO 3)", verified,
                        "its root (/) is an overlay of the image's layers")
        checking.expect(_pivoted(pid), "its root is a chroot, not the root of its mount namespace: a process that "
                        "joins that namespace (as `labctl exec` does) lands on the host's /, with every host mount",
                        "your step 2 part must pivot_root into the new root and detach the old one "
                        "(lab/mycontainer/rootfs.py, switch_root), not chroot", verified,
                        "the root of its mount namespace is that overlay (pivot_root, not chroot)")
        shared = [k for k, _, _, s in namespaces.describe_namespaces(pid, ("uts", "pid", "ipc", "mnt", "net")) if s]
        checking.expect(not shared, f"the command shares the host's {', '.join(shared)} namespace(s)",
                        "spawn it with step 1's namespaces plus CLONE_NEWNET (lab/mycontainer/container.py, TODO 4)",
                        verified, "uts, pid, ipc, mnt and net namespaces are its own")
        checking.expect(namespaces.hostname_of(pid) == name, f"its hostname is {namespaces.hostname_of(pid)!r}",
                        "give the container the hostname NAME (TODO 4)", verified, f"its hostname is {name!r}")
        limit = _memory_limit(pid)
        checking.expect(limit == 48 << 20, f"the command's memory cgroup limit is {limit}, not 48 MiB",
                        "create a cgroup NAME with the memory limit (TODO 1) and join it in the child before "
                        "anything else (TODO 2), with your step 3 part", verified,
                        "it runs in a cgroup limited to 48 MiB")
        nspid = namespaces.pid_inside(pid)
        checking.expect(nspid[-1] == 1, f"the command is PID {nspid[-1]} inside", "exec the command as PID 1",
                        verified, "it is PID 1 inside")
        cgroup = _memory_cgroup_dir(pid)
        _end_gently(run, pid)
    checking.expect(cgroup is None or not cgroup.exists(), f"the container ended, and its cgroup {cgroup} is still there",
                    "remove the cgroup once the command has ended (your step 3 part's remove)", verified,
                    "its cgroup was removed when it ended")
    status, _ = checking.run_to_end(command + [name + "x", "32m", "sh", "-c", "exit 7"], timeout=20)
    checking.expect(status == 7, f"the command exited with 7 but the exercise exited with {status}",
                    "exit with the container's status", verified, "the exit status is passed on")
    return verified


def _pivoted(pid: int) -> bool:
    """Is the process's root the root of its mount namespace? Compares /proc/<pid>/root with the / that a
    process joining that namespace (setns(2), which sets the root to the namespace's root) sees."""
    own = os.stat(f"/proc/{pid}/root/")
    seen = namespaces.run_in_namespaces_of(pid, lambda: f"{os.stat('/').st_dev}:{os.stat('/').st_ino}", kinds=("mnt",))
    return seen == f"{own.st_dev}:{own.st_ino}"


def _end_gently(run: checking.Run, pid: int) -> None:
    """Kill the container's PID 1 only, so the exercise sees it end and tidies up as it should."""
    import signal
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    checking.exit_status(run, timeout=10)


def _remove_leftovers(name: str) -> None:
    """What a student's runtime killed mid-run leaves under the container's names: cgroups, and the
    overlay's directories in the temporary folder (mycontainer-NAME-*)."""
    import glob
    import shutil
    import tempfile
    from labctl.kernel import cgroups
    described = [cgroups.describe_hierarchy(h) for h in cgroups.detect().hierarchies()]
    for n in (name, name + "x"):
        cgroups.remove_cgroup(n, described)
        for leftover in glob.glob(os.path.join(tempfile.gettempdir(), f"mycontainer-{n}-*")):
            shutil.rmtree(leftover, ignore_errors=True)


def _mounts(pid: int) -> list[tuple[str, str]]:
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            out.append((left.split()[4], right.split()[0]))
    return out


def _memory_limit(pid: int) -> int | None:
    """The memory limit of the cgroup the process is in, read from the cgroup filesystem (v1 or v2)."""
    directory = _memory_cgroup_dir(pid)
    for candidate in ([directory / "memory.limit_in_bytes", directory / "memory.max"] if directory else []):
        if candidate.exists():
            text = candidate.read_text().strip()
            if text.isdigit() and int(text) < 1 << 50:
                return int(text)
    return None


def _memory_cgroup_dir(pid: int) -> Path | None:
    """The directory of the cgroup that holds the process's memory controller (v1 or v2)."""
    v2 = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path(f"/sys/fs/cgroup/memory{path}")
        if hid == "0":
            v2 = next((Path(d) for d in (f"/sys/fs/cgroup{path}", f"/sys/fs/cgroup/unified{path}")
                       if os.path.exists(f"{d}/memory.max")), None)
    return v2


def reference(argv: list[str]) -> int:
    """Reference solution: `NAME MEMORY COMMAND [ARGS...]`, same contract as the exercise."""
    from labctl.kernel import cgroups, overlay, rootfs
    from labctl.images.store import ImageStore
    if len(argv) < 3:
        print("usage: python -m labctl.steps.s07_container NAME MEMORY COMMAND [ARGS...]", file=sys.stderr)
        return 2
    name, memory, command = argv[0], argv[1], argv[2:]
    cgroup = cgroups.Cgroup.create(name, cgroups.parse_limits(memory=memory))
    root = None
    try:
        root = overlay.ContainerRoot.create(ImageStore(), "localhost/busybox:latest", name)
        proc = namespaces.spawn(command, namespaces=("uts", "pid", "ipc", "mnt", "net"), hostname=name,
                                setup=lambda: rootfs.setup_container_root(root.merged, readonly=False),
                                start=False, what="step 7 reference")
        cgroup.add(proc.pid)
        proc.start()
        status = proc.wait()
    finally:
        cgroup.remove()
        if root:
            root.remove()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
