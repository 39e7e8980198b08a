"""What the container's PID 1 does to itself before it execs the command (runc's "init" stage).

It runs as PID 1 of the new PID and time namespaces the supervisor made, in this order:

  1. unshare its own UTS, IPC, mount and network namespaces (runtime._pid1 does this)
  2. bring the loopback interface up (a new network namespace starts with lo down)
  3. mounts, all in the private mount namespace (the host never sees them, and they vanish with it),
     on the overlay root labctl mounted (step 4): /proc, /dev, /sys (read-only), /etc/hosts, /etc/resolv.conf, /etc/hostname,
     volumes and bind mounts, tmpfs mounts, and tini for --init
  4. pivot_root into it (step 2)
  5. create the working directory (as Docker does), look the user up in the image's own /etc/passwd
  6. after labctl's "go": unshare(CLONE_NEWCGROUP). PID 1 is in the container's cgroup by then: born
     in its v2 directory (clone3 with CLONE_INTO_CGROUP) and moved into each v1 hierarchy by itself,
     first thing ("0" into `tasks`), see container/resources.py. So the cgroup namespace is rooted at
     the container's own cgroup and /proc/self/cgroup reads "/" inside. (runc writes PID 1's PID into
     cgroup.procs from outside instead, and that write waits for an RCU grace period, 10-20 ms.)
     Then setgroups, setgid, setuid (unsharing needs root, so the user comes last), and chdir into
     the working directory as that user.
Every step is a plain function of step 1 to 3's modules; the order is the lesson.
"""
from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from labctl.kernel import rootfs
from labctl.containers.spec import Mount, ResolvedUser, resolve_user
from labctl.kernel.syscalls import (CLONE_NEWCGROUP, MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT,
                             mount, unshare)

INIT_PATH = "/sbin/labctl-init"   # where --init's tini appears inside (Docker uses /sbin/docker-init)


@dataclass
class InsidePlan:
    """Everything PID 1 needs, computed by labctl before the fork (so PID 1 only executes it)."""
    root: str                         # the container's overlay root, mounted by overlay.ContainerRoot
    new_cgroup_namespace: bool = True  # done by enter_cgroup_namespace(), after "go"
    loopback_up: bool = True
    files: dict[str, str] = field(default_factory=dict)     # inside path -> host file to bind (hosts, ...)
    mounts: list[Mount] = field(default_factory=list)       # binds/volumes (source resolved) and tmpfs
    init_binary: str | None = None
    workdir_inside: str = "/"
    user: str = "root"
    env: list[str] = field(default_factory=list)


def enter_cgroup_namespace(plan: "InsidePlan") -> None:
    """unshare(CLONE_NEWCGROUP): the new cgroup namespace's root is the cgroup the caller is in now."""
    if plan.new_cgroup_namespace:
        unshare(CLONE_NEWCGROUP)


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


def _mount_point(root: Path, inside: str, is_dir: bool) -> Path:
    """The path of `inside` under root, created (in the overlay's upper layer) if missing."""
    target = root / inside.lstrip("/")
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
    elif not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    return target


def bind(source: str, target: Path, readonly: bool = False) -> None:
    """mount(source, target, MS_BIND|MS_REC), then a remount with MS_RDONLY for :ro."""
    mount(source, str(target), None, MS_BIND | MS_REC)
    if readonly:
        mount(None, str(target), None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def mount_volumes(root: Path, plan: InsidePlan) -> None:
    for m in plan.mounts:
        if m.kind == "tmpfs":
            mount("tmpfs", str(_mount_point(root, m.target, True)), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        else:
            bind(m.source, _mount_point(root, m.target, os.path.isdir(m.source)), m.readonly)


def switch_user(who: ResolvedUser) -> None:
    """setgroups, setgid, setuid (in that order: after setuid we could no longer change groups)."""
    os.setgroups(who.groups)
    os.setgid(who.gid)
    os.setuid(who.uid)


def prepare(plan: InsidePlan) -> tuple[dict[str, str], ResolvedUser]:
    """Steps 2 to 4 above, and the user looked up in the image's /etc/passwd (switched to by finish()).
    Returns the environment to exec with and the user."""
    if plan.loopback_up:
        loopback_up()
    rootfs.make_mounts_private()
    root = Path(plan.root)
    for sub in ("proc", "dev", "sys", "tmp"):
        _mount_point(root, sub, True)
    rootfs.mount_proc(root)
    rootfs.mount_dev(root)
    rootfs.mount_sys_readonly(root)
    for inside, host_file in plan.files.items():
        bind(host_file, _mount_point(root, inside, False))
    mount_volumes(root, plan)
    if plan.init_binary:
        bind(plan.init_binary, _mount_point(root, INIT_PATH, False), readonly=True)
    rootfs.enter_root(root)
    os.makedirs(plan.workdir_inside, exist_ok=True)
    env = dict(e.partition("=")[::2] for e in plan.env)
    who = resolve_user(plan.user)
    env.setdefault("HOME", who.home)
    return env, who


def finish(plan: InsidePlan, who: ResolvedUser) -> None:
    """Steps 5 and 6, once labctl said "go": the cgroup namespace (needs root), then the user, then
    the working directory (as that user)."""
    enter_cgroup_namespace(plan)
    switch_user(who)
    os.chdir(plan.workdir_inside)
