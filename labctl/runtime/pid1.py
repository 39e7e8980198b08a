"""What the container's PID 1 does to itself before it execs the command (runc's "init" stage).

It runs as PID 1 of the new PID and time namespaces the supervisor made (create.py), in this order:

  1. "0" into `tasks` of each v1 hierarchy: it was born in the container's v2 cgroup (clone3 with
     CLONE_INTO_CGROUP), so from here on every process it forks is inside too (cgroup.py)
  2. unshare its own UTS, IPC, mount and network namespaces; sethostname
  3. bring the loopback interface up (a new network namespace starts with lo down)
  4. mounts, all in the private mount namespace (the host never sees them, and they vanish with it),
     on the overlay root labctl mounted (step 4): /proc, /dev, /sys (read-only but for --privileged),
     /etc/hosts, /etc/resolv.conf, /etc/hostname, volumes and bind mounts, tmpfs mounts, and tini for
     --init
  5. pivot_root into it (step 2); create the working directory (as Docker does)
  6. step 9: /proc's and /sys's read-only and masked paths, and with --read-only the root itself made
     read-only (confine.py): mounts, so while PID 1 still has CAP_SYS_ADMIN over its mount namespace
  6b. --userns remap: setns(2) into the container's user namespace, last (every namespace made before
     stays the host user namespace's: security/userns.py), and become its root, uid 100000 on the host.
     What PID 1 created in the upper layer before (mount points, the working directory) was chowned to
     that uid. Then look the user up in the image's own /etc/passwd
  7. stdin, stdout, stderr (or the terminal, stdio.py); READY to labctl, then wait for its GO
  8. after GO: unshare(CLONE_NEWCGROUP). PID 1 is in the container's cgroup by then, so the cgroup
     namespace is rooted at the container's own cgroup and /proc/self/cgroup reads "/" inside.
  9. the security profile and the user (confine.py, runc's order): no_new_privs, the seccomp filter
     (before the capabilities go, unless no_new_privs is set), the bounding set, setgroups, setgid,
     setuid (unsharing and mounting need root, so the user comes late), chdir into the working
     directory as that user, capset, the filter if no_new_privs is set (as late as possible), execve.
     The filter's BPF program was compiled before the fork (create.py, confine.filter_program).
Every step is a plain function of step 1 to 3's and step 9's modules; the order is the lesson.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from labctl.kernel import handshake, rootfs
from labctl.errors import LabError
from labctl.kernel.syscalls import (CLONE_NEWCGROUP, CLONE_NEWUSER, MOUNT_ATTR_RDONLY, MS_BIND, MS_NODEV,
                                    MS_NOSUID, MS_REC, mount, mount_setattr, sethostname, setns, unshare)
from labctl.runtime import cgroup as cgroups, confine
from labctl.runtime.config import Config
from labctl.runtime.stdio import Stdio
from labctl.runtime.user import ResolvedUser, resolve_user
from labctl.security.userns import host_root

INIT_PATH = "/sbin/labctl-init"   # where --init's tini appears inside (Docker uses /sbin/docker-init)


def exec_argv(config: Config) -> list[str]:
    """What PID 1 executes: the command, or with --init tini and the command as its child."""
    return ([INIT_PATH, "--"] if config.init_binary else []) + config.argv


def run(config: Config, stdio: Stdio, own_flags: int, end: handshake.ChildEnd, program: bytes | None) -> None:
    """PID 1, from its fork to execve (the steps in the module docstring); never returns."""
    argv = exec_argv(config)
    try:
        cgroups.join_self(config.cgroup)   # first: every process PID 1 forks from here on is inside too
        unshare(own_flags)
        sethostname(config.hostname)
        env, who = prepare(config)
        stdio.install()
        end.send_ready()
        if not end.wait_for_go():
            os._exit(125)   # labctl went away before GO
        finish(config, who, program)
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as exc:   # the errno tells 126 (cannot execute) from 127 (not found)
            end.send_error(exc, f"{exc.strerror}: {argv[0]}")
            os._exit(126 if isinstance(exc, PermissionError) else 127)
    except BaseException as exc:   # a LabError (an unknown user, say) crosses with its cause and fix
        end.send_error(exc)
    os._exit(127)


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


def _mount_point(root: Path, inside: str, is_dir: bool, owner: tuple[int, int] | None = None) -> Path:
    """The path of `inside` under root, created (in the overlay's upper layer) if missing; what it
    creates belongs to `owner` (the host's ids of root inside, with --userns remap), else to us."""
    target = root / inside.lstrip("/")
    missing = [p for p in (target, *target.parents) if p.is_relative_to(root) and not os.path.lexists(p)]
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
    elif not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    if owner:
        for p in missing:
            os.lchown(p, *owner)
    return target


def bind(source: str, target: Path, readonly: bool = False) -> None:
    """mount(source, target, MS_BIND|MS_REC), then for :ro mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE)."""
    mount(source, str(target), None, MS_BIND | MS_REC)
    if readonly:
        # Not a remount with MS_RDONLY: that changes only the top mount, and the mounts below the source
        # (with -v /:/host:ro, the host's /dev/shm, /run, ...) would stay writable. mount_setattr(2)
        # (Linux 5.12) changes the whole tree, as runc does with rro / Docker with recursive read-only.
        try:
            mount_setattr(str(target), MOUNT_ATTR_RDONLY)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            raise LabError("read-only bind mounts (-v ...:ro) need mount_setattr(2), in Linux 5.12 and later",
                           "use a newer kernel, or mount it read-write") from None


def mount_volumes(root: Path, config: Config, owner: tuple[int, int] | None = None) -> None:
    for m in config.mounts:
        if m.kind == "tmpfs":
            mount("tmpfs", str(_mount_point(root, m.target, True, owner)), "tmpfs", MS_NOSUID | MS_NODEV,
                  "mode=1777" + (",uid=%d,gid=%d" % owner if owner else ""))
        else:
            bind(m.source, _mount_point(root, m.target, os.path.isdir(m.source), owner), m.readonly)


def prepare(config: Config) -> tuple[dict[str, str], ResolvedUser]:
    """Steps 3 to 6 above, and the user looked up in the image's /etc/passwd (switched to by finish()).
    Returns the environment to exec with and the user."""
    if config.loopback_up:
        loopback_up()
    rootfs.make_mounts_private()
    root = Path(config.root)
    owner = host_root(config.security.uid_map, config.security.gid_map) if config.userns_fd >= 0 else None
    for sub in ("proc", "dev", "sys", "tmp"):
        _mount_point(root, sub, True, owner)
    rootfs.mount_proc(root)
    rootfs.mount_dev(root, owner)
    rootfs.mount_sys_readonly(root, readonly=not config.security.privileged)
    for inside, host_file in config.files.items():
        bind(host_file, _mount_point(root, inside, False, owner))
    mount_volumes(root, config, owner)
    if config.init_binary:
        bind(config.init_binary, _mount_point(root, INIT_PATH, False, owner), readonly=True)
    rootfs.enter_root(root)
    make_workdir(config.workdir, owner)   # before --read-only makes the root read-only (Docker makes it at create)
    confine.protect_filesystem(config.security)
    if config.userns_fd >= 0:
        become_root_of(config.userns_fd)
    env = dict(e.partition("=")[::2] for e in config.env)
    who = resolve_user(config.user)
    env.setdefault("HOME", who.home)
    return env, who


def become_root_of(userns_fd: int) -> None:
    """Step 5b: setns(2) into the user namespace, then uid and gid 0 in it (100000 on the host).
    setns gives every capability *in that namespace* and none over the host's, which is why it comes
    after the last mount; setresuid then changes no capability (root of the namespace stays root)."""
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


def finish(config: Config, who: ResolvedUser, program: bytes | None) -> None:
    """Steps 8 and 9, once labctl said GO: the cgroup namespace (needs root), then the security profile,
    the user and the working directory (as that user), in confine.become's order."""
    if config.new_cgroup_namespace:
        unshare(CLONE_NEWCGROUP)   # rooted at the cgroup PID 1 is in now: the container's own
    confine.become(who, config.workdir, config.security, program)
