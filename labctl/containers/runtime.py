"""The life of a container: create, start, wait, stop, exec, remove.

    labctl ──fork──▶ S (supervisor) ──unshare(PID|TIME)──clone3──▶ PID 1, born in the cgroup (v2);
      │                 │                                         │ "0" > tasks (v1), unshare(UTS|IPC|
      │◀── "pid N S" ───┘                                         │ NS|NET), hostname, inside.prepare():
      │                                                           │ lo up, mounts, pivot_root, the user
      │◀──────────────────────────────────────── "ready" ─────────┘
      │ attaches the network by PID (bridge), records "running"
      │───────────────────────────────────────── "go" ───────────▶ unshare(CGROUP), setuid, chdir,
      │                                                            execve(the command)
      │ (foreground) waits for S, forwarding signals to PID 1     S waits for PID 1, records the exit
      │ (-d) returns at once                                       code, removes the cgroup, the
      │                                                            network, the overlay (--rm: all)

The supervisor, not labctl, owns the end of the container: kill labctl and the container runs on, its exit
is still recorded. Kill the supervisor too and `ps` still tells the truth, from PID 1's PID and start time.
Every container is journaled before anything is created, so `labctl cleanup` removes it all.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labctl import state
from labctl.containers import images, inside, networking, resources, spec as specs, store, volumes
from labctl.containers.spec import ContainerSpec, Limits
from labctl.containers.store import Container
from labctl.errors import LabError
from labctl.kernel.namespaces import read_all, read_line

TINI = ("/usr/bin/tini-static", "/usr/bin/tini")
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class CommandFailed(LabError):
    """The command could not be started inside the container (Docker's exit codes 126/127)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message, "check the command and that the image contains it")
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------
# Building the spec


def build_spec(image_ref: str, command: list[str], *, name: str = "", env: list[str] = (),
               workdir: str | None = None, user: str | None = None, hostname: str | None = None,
               tty: bool = False, interactive: bool = False, detach: bool = False, auto_remove: bool = False,
               init: bool = False, network: str = "none", memory: str | None = None, cpus: float | None = None,
               pids_limit: int | None = None, volumes_: list[str] = (), tmpfs: list[str] = (),
               ports: list[str] = (), entrypoint: list[str] | None = None) -> tuple[ContainerSpec, images.RunnableImage]:
    """The command line plus the image's config -> a ContainerSpec (Docker's rules, see spec.py)."""
    if name:
        specs.check_name(name)
    if workdir is not None and not workdir.startswith("/"):
        raise LabError(f"the working directory {workdir!r} is not an absolute path",
                       "give it as Docker wants it, from the container's root: e.g. -w /tmp")
    image = images.open_image(image_ref)
    networking.needs_namespace(network)
    if ports and network != "bridge":
        raise LabError("published ports need --network bridge", "add --network bridge, or drop -p")
    if network == "host" and not hostname:
        import socket
        hostname = socket.gethostname()   # as Docker does: the host's network, the host's name
    config = image.config
    argv = specs.command_line(config, list(command), entrypoint)
    limits = Limits(specs.parse_size(memory) if memory else None, cpus, pids_limit)
    mounts = [specs.parse_volume(v) for v in volumes_] + [specs.parse_tmpfs(t) for t in tmpfs]
    spec = ContainerSpec(
        image=image.reference, argv=argv,
        env=specs.merge_env(config.get("Env") or [], list(env), hostname or "", tty),
        workdir=workdir or config.get("WorkingDir") or "/", user=user or config.get("User") or "root",
        hostname=hostname or "", name=name, tty=tty, interactive=interactive, detach=detach,
        auto_remove=auto_remove, init=init, network=network, limits=limits, mounts=mounts,
        ports=[specs.parse_port(p) for p in ports])
    if tty and detach:
        raise LabError("-d with -t is not supported by the lab", "run detached without -t, and use `labctl logs`")
    return spec, image


def _tini() -> str:
    for path in TINI:
        if os.path.exists(path):
            return path
    raise LabError("--init needs tini (Docker's init)", "`apt-get install tini`")


# ---------------------------------------------------------------------------------------------
# Creating and starting


@dataclass
class Stdio:
    stdin: int | None = None     # None: inherit labctl's
    stdout: int | None = None
    stderr: int | None = None
    console: int | None = None   # -t: our end of the socket the container sends its pty master on


def create(spec: ContainerSpec, image: images.RunnableImage) -> tuple[Container, inside.InsidePlan]:
    """Reserve the record, journal it, create the cgroup and the files; nothing runs yet."""
    container_id = store.new_id()
    rec = state.record("container", undo_container, container_id=container_id, name=spec.name)
    try:
        container = store.create_record(spec, container_id, journal=str(rec.path))
    except BaseException:
        rec.forget()
        raise
    root = cg = None
    try:
        root, cg = _root_and_cgroup(container, image)
        container.update(cgroup=cg, root=str(root.merged))
        d = container.dir
        files = {}
        for inside_path, content in networking.etc_files(spec.network, spec.hostname).items():
            host_file = d / Path(inside_path).name
            host_file.write_text(content)
            files[inside_path] = str(host_file)
        mounts = [specs.Mount(m.kind, volumes.resolve_source(m.kind, m.source) if m.kind != "tmpfs" else "",
                              m.target, m.readonly) for m in spec.mounts]
        plan = inside.InsidePlan(
            root=str(root.merged),
            loopback_up=spec.network != "host", files=files,
            mounts=mounts, init_binary=_tini() if spec.init else None, workdir_inside=spec.workdir,
            user=spec.user, env=spec.env)
    except BaseException:
        resources.remove(cg)
        if root is not None:
            root.remove()
        undo_container(container.id)
        raise
    return container, plan


def _root_and_cgroup(container: Container, image: images.RunnableImage):
    """overlay.ContainerRoot.create and resources.create side by side, in two threads: each is mostly
    waiting on the kernel (mkdir in cgroupfs, mount, fsync of its journal record), so they overlap."""
    import threading
    from labctl.kernel.overlay import ContainerRoot
    made: dict = {}

    def make_cgroup() -> None:
        try:
            made["cgroup"] = resources.create(f"labctl-{container.short_id}", container.spec.limits)
        except BaseException as exc:
            made["error"] = exc
    worker = threading.Thread(target=make_cgroup, name="cgroup")
    worker.start()
    root = None
    try:
        root = ContainerRoot.create(image_store(), image.digest, container.id,
                                    volatile=container.spec.auto_remove)   # see ContainerRoot.create
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


def namespace_flags(kinds) -> int:
    """The CLONE_NEW* flags for these namespace kinds (labctl.kernel.syscalls.NAMESPACE_FLAGS)."""
    from labctl.kernel.syscalls import NAMESPACE_FLAGS
    flags = 0
    for kind in kinds:
        flags |= NAMESPACE_FLAGS[kind]
    return flags


def namespace_kinds(spec: ContainerSpec) -> tuple[str, ...]:
    """uts, ipc, mnt, pid and time always; net unless --network host. (cgroup: PID 1 unshares it itself,
    after joining its cgroup, so the namespace is rooted there.)"""
    kinds = ("uts", "ipc", "mnt", "pid", "time")
    return kinds + (("net",) if networking.needs_namespace(spec.network) else ())


#: Made by the supervisor: these take effect for its *next child*, which becomes PID 1.
FOR_CHILDREN = ("pid", "time")


def start(container: Container, plan: inside.InsidePlan, stdio: Stdio) -> int:
    """Fork the supervisor, which makes the namespaces and forks PID 1; let it exec once all is set.
    Returns the supervisor's PID if it is our child (foreground), else 0."""
    spec = container.spec
    kinds = namespace_kinds(spec)
    flags = namespace_flags(k for k in kinds if k in FOR_CHILDREN)       # the supervisor's unshare
    own_flags = namespace_flags(k for k in kinds if k not in FOR_CHILDREN)  # PID 1's own unshare
    argv = ([inside.INIT_PATH, "--"] if spec.init else []) + spec.argv
    status_r, status_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(status_r)
            os.close(go_w)
            _supervisor(container, plan, stdio, flags, own_flags, argv, status_w, go_r)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(status_w, f"error {exc}\n".encode())
        os._exit(127)
    os.close(status_w)
    os.close(go_r)
    try:
        line = read_line(status_r)
        if not line.startswith("pid "):
            os.waitpid(child, 0)
            raise LabError(f"could not start the container: {line.removeprefix('error ') or 'no reason given'}",
                           "run as root; `labctl doctor` checks the kernel features")
        _, pid, supervisor_pid = line.split()
        pid, supervisor_pid = int(pid), int(supervisor_pid)
        if spec.detach:
            os.waitpid(child, 0)   # the intermediate process, which exited once S was forked
        line = read_line(status_r)
        if line != "ready":
            message = (line + " " + read_all(status_r)).strip()
            _wait_recorded(container, supervisor_pid, child)
            cause, _, fix = message.partition("\tfix\t")
            raise LabError(f"setting up the container failed: {cause}",
                           fix or "see the message above; `labctl doctor` checks the kernel features")
        network = networking.attach(spec.network, spec.name, spec.hostname, pid, spec.ports, plan.files)
        container.update(status="running", pid=pid, pid_start=state.process_start_time(pid),
                         supervisor_pid=supervisor_pid, supervisor_start=state.process_start_time(supervisor_pid),
                         started_at=time.time(), network=network)
        os.write(go_w, b"go\n")
        os.close(go_w)
        go_w = -1
        message = read_all(status_r)     # EOF when the command was exec'd (the pipe is O_CLOEXEC)
        if message:
            code = 126 if "ermission" in message else 127
            _wait_recorded(container, supervisor_pid, child)
            raise CommandFailed(f"could not run {spec.argv[0]!r} in the container: {message.strip()}", code)
    finally:
        for fd in (status_r, go_w):
            with contextlib.suppress(OSError):
                if fd >= 0:
                    os.close(fd)
    return 0 if spec.detach else child


def _wait_recorded(container: Container, supervisor_pid: int, child: int) -> None:
    if not container.spec.detach:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)
    else:
        deadline = time.monotonic() + 10
        while state.process_start_time(supervisor_pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)


def _supervisor(container: Container, plan: inside.InsidePlan, stdio: Stdio, flags: int, own_flags: int,
                argv: list[str], status_w: int, go_r: int) -> None:
    """Runs in the forked child: becomes the supervisor S (see the module docstring).

    S itself unshares only the PID and time namespaces (they apply to its next child, PID 1): had it
    unshared the mount namespace, PID 1's pivot_root would move S's root into the container too, and
    S could no longer reach the state directory to record the exit. PID 1 unshares the rest itself."""
    from labctl.kernel.syscalls import CLONE_NEWPID, CLONE_NEWTIME, setns, unshare
    spec = container.spec
    os.setsid()   # its own session: a Ctrl-C or hangup at labctl's terminal does not reach it
    if spec.detach and os.fork():
        os._exit(0)   # the double fork: S is no child of labctl, and labctl need not wait for it
    own_namespaces = {flag: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                      for kind, flag in (("pid", CLONE_NEWPID), ("time", CLONE_NEWTIME)) if flags & flag}
    unshare(flags)
    said_pid_r, said_pid_w = os.pipe()   # PID 1 speaks on the status pipe only after our "pid" line
    cgroup = container.state.get("cgroup")
    pid1 = resources.fork_into(cgroup)   # os.fork(), the child born in the container's cgroup (v2)
    if pid1 == 0:
        os.close(said_pid_w)
        _pid1(spec, plan, stdio, own_flags, argv, status_w, go_r, said_pid_r, cgroup)
    # unshare(CLONE_NEWPID|CLONE_NEWTIME) holds for every later child of S, not only PID 1; once PID 1
    # has died, fork() into its dead PID namespace fails (ENOMEM), and the teardown starts programs
    # (nft, for a bridge network). setns(2) back to S's own namespaces: later children are host processes.
    for flag, fd in own_namespaces.items():
        setns(fd, flag)
        os.close(fd)
    os.close(said_pid_r)
    os.write(status_w, f"pid {pid1} {os.getpid()}\n".encode())
    os.close(said_pid_w)
    os.close(status_w)
    os.close(go_r)
    for fd in (stdio.stdin, stdio.stdout, stdio.stderr, stdio.console):
        if fd is not None and fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)
    if spec.detach:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        here = os.path.join(PACKAGE_ROOT, "labctl", "containers", "supervisor.py")
        os.execv(sys.executable, [sys.executable, "-I", "-S", here, PACKAGE_ROOT, container.id, str(pid1)])
    from labctl.containers.supervisor import wait_for
    code = wait_for(pid1)
    try:
        finish(container.id, code)
    except BaseException as exc:   # the exit code still goes out; `labctl rm` or `cleanup` finish the job
        print(f"labctl: tearing down container {container.name} failed: {exc}", file=sys.stderr)
    os._exit(code)


def _pid1(spec: ContainerSpec, plan: inside.InsidePlan, stdio: Stdio, own_flags: int, argv: list[str],
          status_w: int, go_r: int, said_pid_r: int, cgroup: dict | None) -> None:
    """Runs as PID 1 of the new PID namespace: join the cgroup's v1 hierarchies, unshare UTS, IPC, mount
    (and network), prepare the inside, wait for "go", exec the command."""
    from labctl.kernel.syscalls import sethostname, unshare

    def tell(message: bytes) -> None:
        """Write to labctl, after the supervisor's "pid" line (EOF on said_pid_r: it has been written)."""
        if said_pid_r >= 0:
            os.read(said_pid_r, 1)
        os.write(status_w, message)
    try:
        resources.join_self(cgroup)   # first: every process PID 1 forks from here on is inside too
        unshare(own_flags)
        sethostname(spec.hostname)
        env, who = inside.prepare(plan)
        if stdio.console is not None:
            from labctl.containers import terminal
            terminal.make_controlling_terminal(terminal.open_inside_and_send(stdio.console))
        else:
            for fd, target in ((stdio.stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)):
                if fd is not None:
                    os.dup2(fd, target)
        tell(b"ready\n")
        if read_line(go_r) != "go":
            os._exit(125)
        inside.finish(plan, who)
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            tell(f"{exc.strerror}: {argv[0]}\n".encode())
            os._exit(126 if isinstance(exc, PermissionError) else 127)
    except LabError as exc:   # a mistake the user can fix (an unknown user, say): cause and fix, as given
        with contextlib.suppress(OSError):
            tell(f"{exc.cause}\tfix\t{exc.fix}\n".encode())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tell(f"{exc}\n".encode())
    os._exit(127)


# ---------------------------------------------------------------------------------------------
# Waiting and finishing


def wait_foreground(container: Container, supervisor_pid: int) -> int:
    """Wait for the supervisor (our child), forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT to PID 1.
    Returns the container's exit code (the supervisor exits with it)."""
    pid1 = container.pid

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid1, signum)
    previous = {sig: signal.signal(sig, forward)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    try:
        from labctl.containers.supervisor import wait_for
        return wait_for(supervisor_pid)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def finish(container_id: str, exit_code: int | None) -> None:
    """PID 1 has ended: record the exit code, tear down the cgroup and the network, and for --rm the rest."""
    with contextlib.suppress(store.NoSuchContainer):
        container = store.load(container_id)
        if container.state.get("status") != "exited" and not container.spec.auto_remove:
            container.update(status="exited", exit_code=exit_code, finished_at=time.time())
        teardown(container)


def teardown(container: Container) -> None:
    """Remove what only a running container needs. Idempotent: the supervisor, `rm` and `cleanup` may all
    call it. (The supervisor may start threads and programs here: it went back to its own PID namespace
    for its children once PID 1 was forked, see _supervisor.)"""
    networking.detach(container.state.get("network"))
    # (Sequential: removing the cgroup in a thread beside the files was measured slower, 10 ms against 7.)
    resources.remove(container.state.get("cgroup"))
    if container.spec.auto_remove:
        remove_files(container)
        return
    if container.state.get("root"):
        unmount_root(container)
    if container.state.get("network") or container.state.get("cgroup"):
        container.update(network=None, cgroup=None)


def unmount_root(container: Container) -> None:
    """Unmount the overlay of an exited container; its upper layer stays until `rm`."""
    merged = container.state["root"]
    state.unmount(merged)
    for rec in state.records():
        if rec.kind == "mount" and rec.data.get("target") == merged:
            rec.forget()


def remove_files(container: Container) -> None:
    from labctl.kernel.overlay import ContainerRoot
    with contextlib.suppress(LabError):
        ContainerRoot.open(container.id).remove()
    store.remove_record(container.id, container.name)
    journal = container.state.get("journal")
    if journal:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal)


def undo_container(container_id: str, name: str = "") -> None:
    """The journal's undo: kill the supervisor and PID 1 if they are still the recorded processes, tear
    down, and remove the container's files."""
    try:
        container = store.load(container_id)
    except store.NoSuchContainer:
        store.remove_record(container_id, name)
        return
    # the supervisor first: it would otherwise wake up when PID 1 dies and tear down alongside us
    state.kill_process(container.state.get("supervisor_pid") or 0, container.state.get("supervisor_start"))
    kill(container)
    teardown(container)
    remove_files(container)


# ---------------------------------------------------------------------------------------------
# Stop, kill, remove


def kill(container: Container, sig: int = signal.SIGKILL) -> None:
    """Signal PID 1 (SIGKILL to a PID namespace's init ends every process in it) and wait for it to die."""
    if not container.is_alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(container.pid, sig)
    if sig == signal.SIGKILL:
        _wait_gone(container, 10)


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
        fresh.update(status="exited", exit_code=fresh.state.get("exit_code"), finished_at=time.time())
    container.state = fresh.state
    return True


def stop(container: Container, timeout: float = 10.0) -> None:
    """SIGTERM to PID 1, then SIGKILL after `timeout` seconds, as `docker stop` does."""
    if not container.is_alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(container.pid, signal.SIGTERM)
    if not _wait_gone(container, timeout):
        kill(container, signal.SIGKILL)


def remove(container: Container, force: bool = False) -> None:
    if container.status == "running":
        if not force:
            raise LabError(f"container {container.name} is running",
                           f"stop it first (`labctl stop {container.name}`) or use `labctl rm -f`")
        kill(container)
    if container.dir.exists():
        container = store.load(container.id)
        teardown(container)
        remove_files(container)


# ---------------------------------------------------------------------------------------------
# The whole `labctl run`


def run(spec: ContainerSpec, image: images.RunnableImage) -> tuple[Container, int]:
    """Create and start; in the foreground wait and return the exit code, detached return (container, 0)."""
    container, plan = create(spec, image)
    master = console = None
    try:
        stdio = Stdio()
        if spec.detach:
            log = os.open(container.dir / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            stdio = Stdio(os.open(os.devnull, os.O_RDONLY), log, log)
        elif spec.tty:
            from labctl.containers.terminal import console_socket
            console, theirs = console_socket()
            stdio = Stdio(console=theirs)
        elif not spec.interactive:
            stdio = Stdio(stdin=os.open(os.devnull, os.O_RDONLY))
        try:
            supervisor = start(container, plan, stdio)
        finally:
            for fd in (stdio.stdin, stdio.stdout, stdio.console):
                if fd is not None and fd > 2:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if spec.detach:
            return container, 0
        if console is not None:
            from labctl.containers.terminal import receive_master
            master, console = receive_master(console), None   # (receive_master closes the socket)
            from labctl.containers.terminal import relay
            relay(master, done=lambda: not container.is_alive())
        return container, wait_foreground(container, supervisor)
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
    container, plan = create(spec, image)
    r, w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        supervisor = start(container, plan, Stdio(devnull, w, w))
    finally:
        os.close(w)
        os.close(devnull)   # (start() leaves the caller's descriptors to the caller, as run() closes them)
    out = read_all(r)
    os.close(r)
    return wait_foreground(container, supervisor), out
