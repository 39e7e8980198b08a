"""PID 1 of every container, from its fork to execve (runc's init, standard_init_linux.go): `labctl run`,
the daemon's containers and `labctl-runtime create` all hand it a Config read from a config.json
(runtime/oci.py), and it carries the spec out in the spec's order.

  1. "0" into `tasks` of each v1 hierarchy: it was born in the container's v2 cgroup (clone3 with
     CLONE_INTO_CGROUP), so from here on every process it forks is inside too (cgroup.py); join the
     namespaces given by path (setns(2)); unshare the new ones, the cgroup namespace with them (PID 1
     is in its cgroup already: the namespace is rooted there); sethostname; bring `lo` up (a new
     network namespace starts with it down)
  2. the config's mounts (ocimounts.py), in its private mount namespace, before pivot_root: labctl
     run's are /proc, /dev, /sys, /etc/hosts & co, volumes, tmpfs mounts and tini for --init
  3. READY to the caller, then its GO. `labctl-runtime create` runs the prestart and createRuntime hooks
     in between (in the runtime's namespaces), `labctl run` attaches the network by PID 1's PID. After
     GO, PID 1 runs the createContainer hooks (in the container's namespaces, host paths)
  4. pivot_root; rootfsPropagation; the working directory (made if missing, as Docker does); sysctl
     (through the container's own /proc/sys: the namespaced knobs are this container's); step 9's
     read-only and masked paths, and --read-only
  5. rlimits (setrlimit(2): raising a hard limit needs CAP_SYS_RESOURCE, so before it goes),
     oom_score_adj; --userns remap: setns(2) into the container's user namespace, last (every namespace
     made before stays the host user namespace's: security/userns.py), and become its root. What PID 1
     created in the upper layer before (mount points, the working directory) belongs to that root
  6. stdio or the terminal (--console-socket); CREATED to `create`, which records the state and exits
  7. block in open(exec.fifo, O_WRONLY) until `start` opens it for reading; write "0"
  8. startContainer hooks; the security profile and the user (confine.py's order, the capability sets
     as given); execve

`labctl run` has no create/start split: its GO is the start. So it has steps 4 to 6 done before READY
(a wrong working directory is an error of the create, as in Docker) and goes from GO straight to step 8;
an execve that fails crosses the handshake, and the caller exits 126 or 127 as Docker does.

Why a FIFO, and why block there: `create` must return with the container fully made but its program
not started, so that the caller can act in between (containerd sets up the network, CNI plugins add
interfaces into PID 1's network namespace, a debugger attaches) and `start` may come from another
process, minutes later, or never. A FIFO is the one file that makes open(2) itself wait for the other
side: PID 1 sleeps in the kernel, needing no process of the runtime to stay alive, and `start` needs
nothing but the path. PID 1 opened it with O_PATH before pivot_root (the state directory is out of
reach after it) and reopens /proc/self/fd/N for writing, as runc does.
"""
from __future__ import annotations

import fcntl
import os
import resource
import shutil
import struct
from pathlib import Path

from labctl.errors import LabError
from labctl.kernel import handshake, rootfs
from labctl.kernel.syscalls import CLONE_NEWCGROUP, CLONE_NEWUSER, NAMESPACE_FLAGS, sethostname, setns, unshare
from labctl.runtime import cgroup as cgroups, confine, hooks, ocimounts
from labctl.runtime.config import Config
from labctl.runtime.stdio import Stdio
from labctl.runtime.user import ResolvedUser, resolve_user
from labctl.security.userns import host_root

CREATED = "created"
PR_SET_DUMPABLE = 4   # the handshake message after which `create` may exit (handshake.py's READY/GO before it)


def run(config: Config, stdio: Stdio, own_flags: int, end: handshake.ChildEnd, program: bytes | None) -> None:
    """PID 1, from its fork to execve; never returns. `program`: the seccomp filter, compiled before the
    fork (confine.filter_program)."""
    oci = config.oci
    split = oci.start_fifo >= 0   # `labctl-runtime create`: started later, by `start`; else GO starts it
    try:
        cgroups.join_self(config.cgroup)
        join_namespaces(oci.namespace_paths, skip=("pid", "time", "user"))
        unshare(own_flags | (CLONE_NEWCGROUP if config.new_cgroup_namespace else 0))   # in its cgroup already
        if config.hostname:
            sethostname(config.hostname)
        oci.state = dict(oci.state, pid=int(os.readlink("/proc/self")))   # the host's /proc still: our host PID
        root = Path(config.root)
        if config.loopback_up:
            loopback_up()
        ocimounts.prepare_root(root, oci.rootfs_propagation)
        ocimounts.mount_all(root, oci.mounts, oci.devices, config.cgroup, owner(config))
        if stdio.console is not None:   # the terminal is opened inside, after pivot_root: its modules now
            import fcntl, socket, termios  # noqa: F401,E401
        if not split:
            env, who, program_path = inside(config, look_up=False)
            stdio.install()
        end.send_ready()
        if not end.wait_for_go():
            os._exit(125)
        if split:
            hooks.run("createContainer", oci.hooks.get("createContainer"), oci.state)
            env, who, program_path = inside(config)
            stdio.install()
            end.send_created()
            end.close()
    except BaseException as exc:
        try:
            end.send_error(exc)
        finally:
            os._exit(127)   # whatever happens: PID 1 never returns into the runtime's own code
    if not split:
        _exec(config, who, program, program_path, env, end)
    try:
        wait_for_start(oci.start_fifo)
        hooks.run("startContainer", oci.hooks.get("startContainer"), dict(oci.state, status="created"))
        become(who, config, program)
        os.execve(program_path, config.argv, env)
    except BaseException as exc:   # `create` has gone: the container's stderr is all there is
        os.write(2, f"labctl-runtime: {getattr(exc, 'cause', None) or exc}\n".encode())
    os._exit(127)


def _exec(config: Config, who: ResolvedUser, program: bytes | None, name: str, env: dict, end) -> None:
    """`labctl run` after GO: step 8, the command looked up in PATH as execvp(3) does; what fails crosses
    the handshake (the errno tells 126, cannot execute, from 127, not found). Never returns."""
    try:
        become(who, config, program)
        os.execvpe(name, config.argv, env)
    except OSError as exc:
        end.send_error(exc, f"{exc.strerror}: {name}")
        os._exit(126 if isinstance(exc, PermissionError) else 127)
    except BaseException as exc:
        end.send_error(exc)
    os._exit(127)


def owner(config: Config) -> tuple[int, int] | None:
    """With a user namespace to join last: the host's ids of root inside, whom what PID 1 creates before
    (mount points, tmpfs roots, the working directory) must belong to; else None (PID 1's own)."""
    return host_root(config.security.uid_map, config.security.gid_map) if config.userns_fd >= 0 else None


def join_namespaces(paths: dict[str, str], skip: tuple[str, ...] = ()) -> None:
    """setns(2) into each namespace given by path (linux.namespaces[].path)."""
    for kind, path in paths.items():
        if kind in skip:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise LabError(f"cannot open the {kind} namespace {path}: {exc.strerror}",
                           "give the path of a live namespace, e.g. /proc/PID/ns/" + kind) from None
        try:
            setns(fd, NAMESPACE_FLAGS[kind])
        except OSError as exc:
            raise LabError(f"cannot join the {kind} namespace {path}: {exc.strerror}",
                           f"is {path} a {kind} namespace?") from None
        finally:
            os.close(fd)


def inside(config: Config, look_up: bool = True) -> tuple[dict[str, str], ResolvedUser, str]:
    """Steps 4 and 5: returns the environment, the user and the program (its path inside, if look_up)."""
    oci = config.oci
    rootfs.enter_root(Path(config.root))
    ocimounts.after_pivot_root(oci.rootfs_propagation)
    make_workdir(config.workdir, owner(config))
    for key, value in oci.sysctl.items():
        write_sysctl(key, value)
    confine.protect_filesystem(config.security)
    for number, soft, hard in oci.rlimits:
        resource.setrlimit(number, (_limit(soft), _limit(hard)))
    if oci.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(oci.oom_score_adj))
    if config.userns_fd >= 0:
        become_root_of(config.userns_fd)
        # root inside is another uid to the kernel now, so it made us non-dumpable: /proc/self/fd would
        # be the host root's and closed to us, exec.fifo with it. execve sets the flag anew anyway.
        from labctl.kernel.syscalls import prctl
        prctl(PR_SET_DUMPABLE, 1)
    os.umask(oci.umask if oci.umask is not None else 0o022)
    env = dict(e.partition("=")[::2] for e in config.env)
    home = resolve_user(str(oci.uid)).home if oci.uid else "/root"
    env.setdefault("HOME", home)
    who = ResolvedUser(oci.uid, oci.gid, sorted(set(oci.additional_gids)), home)
    program = config.argv[0]
    if not look_up:
        return env, who, program
    found = program if "/" in program else shutil.which(program, path=env.get("PATH", "/usr/bin:/bin"))
    if not found or not os.path.exists(found):
        raise LabError(f"exec: {program!r}: executable file not found in $PATH",
                       "give process.args[0] as a program the root filesystem holds")
    return env, who, found


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """ioctl(SIOCSIFFLAGS, lo | IFF_UP): a new network namespace has only `lo`, and it is down."""
    import _socket  # the C module: socket.py's enums cost PID 1 a few milliseconds before exec
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        s.close()


def become_root_of(userns_fd: int) -> None:
    """Step 5's setns(2) into the user namespace, then uid and gid 0 in it (100000 on the host). setns
    gives every capability *in that namespace* and none over the host's, which is why it comes after
    the last mount; setresuid then changes no capability (root of the namespace stays root)."""
    setns(userns_fd, CLONE_NEWUSER)
    os.close(userns_fd)
    os.setgroups([])   # the host's supplementary groups are not mapped: none until switch_user's
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def make_workdir(workdir: str, owner: tuple[int, int] | None = None) -> None:
    """mkdir -p the working directory inside the new root, as Docker does; the image decides whether
    it can be one (-w /etc/passwd names a file), so this is only known here, after pivot_root. What it
    creates belongs to `owner` (root inside, with --userns remap)."""
    path = Path(workdir)
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    try:
        os.makedirs(workdir, exist_ok=True)
        for p in missing if owner else ():
            os.lchown(p, *owner)
    except (FileExistsError, NotADirectoryError):
        raise LabError(f"the working directory {workdir} is not a directory in the image",
                       "give -w a directory, e.g. -w /tmp") from None


def become(who: ResolvedUser, config: Config, program: bytes | None) -> None:
    """confine.become's order (the profile, the user, the working directory), with the spec's five
    capability sets each as given, where labctl run gives one set to all."""
    from labctl.kernel.syscalls import PR_SET_NO_NEW_PRIVS, prctl
    from labctl.runtime.user import switch_user
    from labctl.security import capabilities, seccomp
    profile, sets = config.security, config.oci.capabilities
    if profile.no_new_privileges:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    elif program is not None:
        seccomp.load(program)
    if sets:   # no process.capabilities: root keeps what it has, as runc leaves it
        capabilities.drop_bounding(sets.get("bounding", []))
        capabilities.keep_across_setuid()
    switch_user(who)
    os.chdir(config.workdir)
    if sets:
        capabilities.apply_sets(*(sets.get(k, []) for k in ("effective", "permitted", "inheritable", "ambient")))
    if profile.no_new_privileges and program is not None:
        seccomp.load(program)


def _limit(value: int) -> int:
    return resource.RLIM_INFINITY if value >= 2**63 else value


def write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise LabError(f"sysctl {key}={value}: {exc.strerror}",
                       "only namespaced sysctls (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) "
                       "can be set for a container") from None


def wait_for_start(fifo_fd: int) -> None:
    """Step 7: open(2) blocks until `start` opens the FIFO for reading; then "0" tells it we are off."""
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.close(fifo_fd)
    os.write(fd, b"0")
    os.close(fd)
