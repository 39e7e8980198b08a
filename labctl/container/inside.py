"""What the container's PID 1 does to itself before it execs the command (runc's "init" stage).

It runs in the new UTS, IPC, mount, PID, network and time namespaces the supervisor made, in this order:

  1. join the container's cgroups (write 0 to cgroup.procs: "the writing process"), THEN
     unshare(CLONE_NEWCGROUP), so the cgroup namespace is rooted at the container's own cgroup and
     /proc/self/cgroup reads "/" inside
  2. bring the loopback interface up (a new network namespace starts with lo down)
  3. mounts, all in the private mount namespace (the host never sees them, and they vanish with it),
     on the overlay root labctl mounted (step 4): /proc, /dev, /sys (read-only), /etc/hosts, /etc/resolv.conf, /etc/hostname,
     volumes and bind mounts, tmpfs mounts, and tini for --init
  4. pivot_root into it (step 2)
  5. working directory (created if missing, as Docker does), then the user: setgroups, setgid, setuid
     with the ids looked up in the image's own /etc/passwd
Every step is a plain function of step 1 to 3's modules; the order is the lesson.
"""
from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from labctl import rootfs
from labctl.container.spec import Mount, resolve_user
from labctl.syscalls import (CLONE_NEWCGROUP, MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT,
                             mount, unshare)

INIT_PATH = "/sbin/labctl-init"   # where --init's tini appears inside (Docker uses /sbin/docker-init)


@dataclass
class InsidePlan:
    """Everything PID 1 needs, computed by labctl before the fork (so PID 1 only executes it)."""
    root: str                         # the container's overlay root, mounted by overlay.ContainerRoot
    cgroup_procs: list[str]           # cgroup.procs files of the container's cgroups
    new_cgroup_namespace: bool = True
    loopback_up: bool = True
    files: dict[str, str] = field(default_factory=dict)     # inside path -> host file to bind (hosts, ...)
    mounts: list[Mount] = field(default_factory=list)       # binds/volumes (source resolved) and tmpfs
    init_binary: str | None = None
    workdir_inside: str = "/"
    user: str = "root"
    env: list[str] = field(default_factory=list)


def join_cgroups(procs_files: list[str]) -> None:
    """write("0") to each cgroup.procs: moves the calling process (PID 1 here) into that cgroup."""
    for path in procs_files:
        with open(path, "w") as f:
            f.write("0")


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


def switch_user(user: str) -> dict:
    """setgroups, setgid, setuid (in that order: after setuid we could no longer change groups)."""
    who = resolve_user(user)
    os.setgroups(who.groups)
    os.setgid(who.gid)
    os.setuid(who.uid)
    return {"HOME": who.home}


def prepare(plan: InsidePlan) -> dict[str, str]:
    """Steps 1 to 5 above. Returns the environment to exec with."""
    join_cgroups(plan.cgroup_procs)
    if plan.new_cgroup_namespace:
        unshare(CLONE_NEWCGROUP)
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
    home = switch_user(plan.user)
    env.setdefault("HOME", home["HOME"])
    os.chdir(plan.workdir_inside)
    return env
