"""The life of a container: build its spec, create, start, wait, stop, kill, remove (Docker's daemon
and containerd do this part; the runtime below, labctl/runtime, makes the process).

    labctl run ─ build_spec: the command line + the image's config (spec.py)
               ─ create:     the record (journaled first), the overlay root and the cgroup side by side,
                             /etc/hosts & co; a runtime Config for PID 1
               ─ start:      the Config written as <container>/bundle/config.json and read back (as
                             Docker's daemon hands runc a bundle); runtime.create forks the
                             supervisor S, which makes the namespaces and forks
                             PID 1 into the cgroup; PID 1 sets itself up and says READY
                             → attach the network by PID 1's PID (bridge), record "running"
                             → Created.start(): GO, and PID 1 execs the command
               ─ wait:       (foreground) for S, passing signals on to PID 1; (-d) return at once
    S waits for PID 1, records the exit code and tears down (supervisor.py, teardown.py): the cgroup,
    the network, the overlay, and for --rm all of it; if S was killed, `ps`, `stop`, `kill` and the
    next bridge `run` do it (reconcile.py)

The supervisor, not labctl, owns the end of the container: kill labctl and the container runs on, its exit
is still recorded. Kill the supervisor too and `ps` still tells the truth, from PID 1's PID and start time.
Every container is journaled before anything is created, so `labctl cleanup` removes it all.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from labctl import state
from labctl.containers import images, networking, resources, spec as specs, store, supervisor, volumes
from labctl.containers.reconcile import reconcile, reconcile_all
from labctl.containers.spec import ContainerSpec
from labctl.containers.store import Container
from labctl.containers.teardown import remove_files, teardown, undo_container
from labctl.errors import LabError
from labctl.kernel.namespaces import read_all
from labctl.kernel.signals import forwarding_to
from labctl.runtime import create as runtime   # runtime.create(): an OCI runtime's `create`
from labctl.runtime.config import NAMESPACES, Config, Mount
from labctl.runtime.stdio import Stdio
from labctl.security import userns
from labctl.security.profile import SecurityProfile, from_flags

TINI = ("/usr/bin/tini-static", "/usr/bin/tini")


def build_spec(image_ref: str, command: list[str], *, name: str = "", env: list[str] = (),
               workdir: str | None = None, user: str | None = None, hostname: str | None = None,
               tty: bool = False, interactive: bool = False, detach: bool = False, auto_remove: bool = False,
               init: bool = False, network: str = "none", memory: str | None = None, cpus: float | None = None,
               pids_limit: int | None = None, volumes_: list[str] = (), tmpfs: list[str] = (),
               ports: list[str] = (), entrypoint: list[str] | None = None,
               security: SecurityProfile | None = None, runtime: str = "labctl") -> tuple[ContainerSpec, images.RunnableImage]:
    """The command line plus the image's config -> a ContainerSpec (Docker's rules, see spec.py)."""
    from labctl.kernel.cgroups.limits import parse_limits
    if name:
        specs.check_name(name)
    if hostname:
        specs.check_hostname(hostname)
    if user:
        specs.check_user(user)
    if workdir is not None and not workdir.startswith("/"):
        raise LabError(f"the working directory {workdir!r} is not an absolute path",
                       "give it as Docker wants it, from the container's root: e.g. -w /tmp")
    image = images.open_image(image_ref)
    networking.needs_namespace(network)
    if ports and not networking.bridged(network):
        raise LabError("published ports need --network bridge", "add --network bridge, or drop -p")
    if network == "host" and not hostname:
        import socket
        hostname = socket.gethostname()   # as Docker does: the host's network, the host's name
    config = image.config
    argv = specs.command_line(config, list(command), entrypoint)
    limits = parse_limits(memory=memory, cpus=cpus, pids_limit=pids_limit)
    specs.check_memory(limits.memory_bytes, memory)
    mounts = [specs.parse_volume(v) for v in volumes_] + [specs.parse_tmpfs(t) for t in tmpfs]
    spec = ContainerSpec(
        image=image.reference, argv=argv,
        env=specs.merge_env(config.get("Env") or [], list(env), hostname or "", tty),
        workdir=workdir or config.get("WorkingDir") or "/", user=user or config.get("User") or "root",
        hostname=hostname or "", name=name, tty=tty, interactive=interactive, detach=detach,
        auto_remove=auto_remove, init=init, network=network, limits=limits, mounts=mounts,
        ports=[specs.parse_port(p) for p in ports], security=security or from_flags(), runtime=runtime)
    networking.check_ports(spec.ports)   # before anything exists: "port is already allocated"
    if tty and detach:
        raise LabError("-d with -t is not supported by the lab", "run detached without -t, and use `labctl logs`")
    if runtime != "labctl" and (tty or security and security.userns != "host"):
        raise LabError(f"--runtime {runtime} is given the bundle without -t or --userns remap here",
                       "drop -t/--userns, or use --runtime labctl")
    return spec, image


def _tini() -> str:
    for path in TINI:
        if os.path.exists(path):
            return path
    raise LabError("--init needs tini (Docker's init)", "`apt-get install tini`")


# ---------------------------------------------------------------------------------------------
# Creating and starting


def create(spec: ContainerSpec, image: images.RunnableImage) -> tuple[Container, Config]:
    """Reserve the record, journal it, create the cgroup and the files; nothing runs yet. Returns the
    container and the runtime's Config for it."""
    container_id = store.new_id()
    rec = state.record("container", undo_container, container_id=container_id, name=spec.name)
    try:
        container = store.create_record(spec, container_id, journal=str(rec.path))
    except BaseException:
        rec.forget()
        raise
    root = cg = None
    owner = userns.host_root(spec.security.uid_map, spec.security.gid_map)   # --userns remap: root inside
    userns_fd = -1
    try:
        if owner:   # the container's user namespace: the layers are idmapped with it, PID 1 joins it
            userns_fd = userns.new_user_namespace(spec.security.uid_map, spec.security.gid_map)
        root, cg = _root_and_cgroup(container, image, userns_fd, owner)
        container.update(cgroup=cg, root=str(root.merged))
        config = _config(container, str(root.merged), cg, userns_fd, owner)
    except BaseException:
        if userns_fd >= 0:
            os.close(userns_fd)
        resources.remove(cg)
        if root is not None:
            root.remove()
        undo_container(container.id)
        raise
    return container, config


def _config(container: Container, root: str, cg: dict, userns_fd: int, owner) -> Config:
    """The runtime's Config for PID 1: the spec, the mounted root, the cgroup, /etc/hosts & co."""
    spec = container.spec
    files = {}
    for inside_path, content in networking.etc_files(spec.network, spec.hostname).items():
        host_file = container.dir / Path(inside_path).name
        host_file.write_text(content)
        if owner:
            os.chown(host_file, *owner)   # root inside may edit /etc/hosts, as Docker lets it
        files[inside_path] = str(host_file)
    mounts = [Mount(m.kind, volumes.resolve_source(m.kind, m.source, owner) if m.kind != "tmpfs" else "",
                    m.target, m.readonly) for m in spec.mounts]
    return Config(
        root=root, argv=spec.argv, env=spec.env, workdir=spec.workdir, user=spec.user,
        hostname=spec.hostname, files=files, mounts=mounts, cgroup=cg,
        namespaces=NAMESPACES + (("net",) if networking.needs_namespace(spec.network) else ()),
        loopback_up=spec.network != "host", init_binary=_tini() if spec.init else None,
        security=spec.security, userns_fd=userns_fd)


def create_again(container: Container) -> Config:
    """An exited container made ready to start again (`docker start`, `docker restart`): its overlay
    mounted again over the upper layer it kept, a new cgroup (the supervisor removed the old one), a new
    Config. What the container wrote survives; its processes, cgroup and network are new. It is
    "created" again, by this process, first: reconcile (`ps` in another process) leaves it alone."""
    from labctl.kernel.overlay import ContainerRoot
    spec = container.spec
    if container.status == "running":
        raise LabError(f"container {container.name} is running", f"stop it first, or `docker restart {container.name}`")
    ended = {k: container.state.get(k) for k in ("status", "exit_code")}
    container.update(status="created", exit_code=None, creator_pid=os.getpid(),
                     creator_start=state.process_start_time(os.getpid()))
    owner = userns.host_root(spec.security.uid_map, spec.security.gid_map)
    userns_fd = -1
    try:
        if owner:
            userns_fd = userns.new_user_namespace(spec.security.uid_map, spec.security.gid_map)
        root = ContainerRoot.open(container.id)
        root.mount_again(image_store(), userns_fd if userns_fd >= 0 else None)
        container.update(root=str(root.merged))
        container.update(cgroup=resources.create(resources.cgroup_name(container.short_id), spec.limits,
                                                 spec.security.privileged))
        return _config(container, str(root.merged), container.state["cgroup"], userns_fd, owner)
    except BaseException:
        if userns_fd >= 0:
            os.close(userns_fd)
        container.update(**ended)
        teardown(container)   # the cgroup and the overlay mount go again: as it was, exited
        raise


def _root_and_cgroup(container: Container, image: images.RunnableImage, userns_fd: int, owner):
    """overlay.ContainerRoot.create and resources.create side by side, in two threads: each is mostly
    waiting on the kernel (mkdir in cgroupfs, mount, fsync of its journal record), so they overlap."""
    import threading
    from labctl.kernel.overlay import ContainerRoot
    made: dict = {}

    def make_cgroup() -> None:
        try:
            made["cgroup"] = resources.create(resources.cgroup_name(container.short_id), container.spec.limits,
                                              container.spec.security.privileged)
        except BaseException as exc:
            made["error"] = exc
    worker = threading.Thread(target=make_cgroup, name="cgroup")
    worker.start()
    root = None
    try:
        root = ContainerRoot.create(image_store(), image.digest, container.id,   # see ContainerRoot.create
                                    volatile=container.spec.auto_remove,
                                    userns_fd=userns_fd if userns_fd >= 0 else None, owner=owner)
    finally:
        worker.join()
        if "error" in made or root is None:
            resources.remove(made.get("cgroup"))
    if "error" in made:
        root.remove()
        raise made["error"]
    return root, made["cgroup"]


def image_store():
    from labctl.images.store import ImageStore
    return ImageStore()


def start(container: Container, config: Config, stdio: Stdio, output: int | None = None,
          notify: int | None = None) -> int:
    """The runtime creates PID 1 (through the supervisor); while it waits for GO, attach the network and
    record "running"; then let it exec. Returns the supervisor's PID if it is our child (foreground),
    else 0. `output`: the read end of a pipe that is PID 1's stdout, for the supervisor to copy into the
    log with times (containers/logs.py; the daemon's containers). `notify`: the supervisor's end of the
    daemon's exit socket (supervisor.hand_over)."""
    spec = container.spec
    try:
        if spec.runtime != "labctl":   # another OCI runtime, given the bundle (shim.py)
            from labctl.containers import shim
            created = shim.create(container, config, stdio, spec.runtime,
                                  lambda pid1: supervisor.supervise(container, pid1, output, notify))
        else:
            created = runtime.create(through_config_json(container, config), stdio, detach=spec.detach,
                                     supervise=lambda pid1: supervisor.supervise(container, pid1, output, notify))
    finally:
        if config.userns_fd >= 0:   # PID 1 is in the user namespace now (or gone): our reference goes
            os.close(config.userns_fd)
            config.userns_fd = -1
    try:
        if networking.bridged(spec.network):
            reconcile_all()   # the dead containers' addresses and ports go before this one takes its own
        network = networking.attach(spec.network, spec.name, spec.hostname, created.pid, spec.ports, config.files)
        container.update(status="running", pid=created.pid, pid_start=state.process_start_time(created.pid),
                         supervisor_pid=created.supervisor_pid,
                         supervisor_start=state.process_start_time(created.supervisor_pid),
                         started_at=time.time(), network=network)
        created.start()
    finally:
        created.close()   # after a failure above: PID 1 reads EOF instead of GO, exits, S tears down
    return 0 if spec.detach else created.child


def through_config_json(container: Container, config: Config) -> Config:
    """Flags -> config.json -> runtime, as Docker hands runc a bundle: `config` written as
    <container>/bundle/config.json (ociconfig.write_config) and the runtime's Config read back from that
    file (oci.from_oci, which checks it first), so the file says exactly what the container gets. What
    create made for it rides along by reference: the cgroup (linux.cgroupsPath names it) and the
    user namespace its layers are idmapped with (linux.uidMappings describe it)."""
    from labctl.containers.ociconfig import write_config
    from labctl.runtime import oci
    bundle = write_config(container, config, (config.cgroup or {}).get("name", ""), labctl=True)
    read = oci.from_oci(bundle)
    read.cgroup, read.userns_fd = config.cgroup, config.userns_fd
    return read


def wait_foreground(container: Container, supervisor_pid: int) -> int:
    """Wait for the supervisor (our child), passing the signals we get on to PID 1 (kernel/signals.py).
    Returns the container's exit code (the supervisor exits with it)."""
    with forwarding_to(container.pid):
        return supervisor.wait_for(supervisor_pid)


# ---------------------------------------------------------------------------------------------
# The whole `labctl run`


def run(spec: ContainerSpec, image: images.RunnableImage) -> tuple[Container, int]:
    """Create and start; in the foreground wait and return the exit code, detached return (container, 0)."""
    container, config = create(spec, image)
    master = console = output = None
    try:
        stdio = Stdio()
        if spec.detach:   # a pipe the supervisor copies into the log, noting when each chunk came (logs -t)
            for path in (container.dir / "log", container.dir / "log.times"):
                path.touch(0o640)
            output, written = os.pipe()
            stdio = Stdio(os.open(os.devnull, os.O_RDONLY), written, written)
        elif spec.tty:
            from labctl.containers.terminal import console_socket
            console, theirs = console_socket()
            stdio = Stdio(console=theirs)
        elif not spec.interactive:
            stdio = Stdio(stdin=os.open(os.devnull, os.O_RDONLY))
        try:
            supervisor_pid = start(container, config, stdio, output)
        finally:
            stdio.close()   # the container's copies are in PID 1 now, the pipe's read end in its supervisor
            if output is not None:
                os.close(output)
        if spec.detach:
            return container, 0
        if console is not None:
            from labctl.containers.terminal import receive_master, relay
            master, console = receive_master(console), None   # (receive_master closes the socket)
            relay(master, done=lambda: not container.is_alive())
        return container, wait_foreground(container, supervisor_pid)
    except BaseException:
        with contextlib.suppress(Exception):
            fresh = store.load(container.id)
            if fresh.status != "running":
                if spec.auto_remove:
                    undo_container(container.id)
                else:
                    teardown(fresh)
        raise
    finally:
        for fd in (master, console):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def run_capture(spec: ContainerSpec, image: images.RunnableImage) -> tuple[int, str]:
    """Run in the foreground with stdout and stderr captured: (exit code, output)."""
    container, config = create(spec, image)
    r, w = os.pipe()
    stdio = Stdio(os.open(os.devnull, os.O_RDONLY), w, w)
    try:
        supervisor_pid = start(container, config, stdio)
    finally:
        stdio.close()   # (start() leaves the caller's descriptors to the caller, as run() closes them)
    out = read_all(r)
    os.close(r)
    return wait_foreground(container, supervisor_pid), out


# ---------------------------------------------------------------------------------------------
# Stop, kill, remove


def kill(container: Container, sig: int = signal.SIGKILL) -> None:
    """Signal PID 1 (SIGKILL to a PID namespace's init ends every process in it) and wait for it to die."""
    if container.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(container.pid, sig)
        if sig == signal.SIGKILL:
            _wait_gone(container, 10)
    reconcile(container)   # a dead supervisor cannot tear down: we do


def _wait_gone(container: Container, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while container.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if container.is_alive():
        return False
    # PID 1 is gone; give its supervisor a moment to record the exit code, or record it ourselves
    deadline = time.monotonic() + 5
    while container.supervisor_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if container.supervisor_alive():
        return True
    fresh = store.load(container.id) if (container.dir / "container.json").exists() else container
    if fresh.state.get("status") != "exited":
        store.record_exited(fresh)
    container.state = fresh.state
    return True


def stop(container: Container, timeout: float = 10.0) -> None:
    """SIGTERM to PID 1, then SIGKILL after `timeout` seconds, as `docker stop` does."""
    if container.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(container.pid, signal.SIGTERM)
        if not _wait_gone(container, timeout):
            kill(container, signal.SIGKILL)
    reconcile(container)   # a dead supervisor cannot tear down: we do


def remove(container: Container, force: bool = False) -> None:
    if container.status == "running":
        if not force:
            raise LabError(f"container {container.name} is running",
                           f"stop it first (`labctl stop {container.name}`) or use `labctl rm -f`")
        kill(container)
    if container.dir.exists():
        try:
            container = store.load(container.id)
        except store.NoSuchContainer:   # --rm: its supervisor removed it between the two lines
            return
        teardown(container)
        remove_files(container)
