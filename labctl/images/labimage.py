"""The lab's embedded image: a busybox root filesystem built locally from Debian's busybox-static.

No internet needed: one static binary, a symlink per applet, and the few files a Unix userland expects
(/etc/passwd, /etc/group, mount points). Built once into the state directory, atomically: it is made
in a temporary directory and renamed into place, so a half-built root filesystem is never used.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from labctl import state
from labctl.errors import MissingRequirementError

BUSYBOX = "/bin/busybox"
ROOTFS_VERSION = "1"   # bump when the layout below changes, so old builds are replaced

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
student:x:1000:1000:lab student:/home/student:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
student:x:1000:
nogroup:x:65534:
"""


def busybox_rootfs_path() -> Path:
    return state.state_dir() / "rootfs" / f"busybox-v{ROOTFS_VERSION}"


def find_static_busybox() -> str:
    path = os.environ.get("LABCTL_BUSYBOX", BUSYBOX)
    if not os.path.exists(path):
        raise MissingRequirementError(f"{path} not found: the lab image is built from busybox-static",
                                      "run vagrant/provision.sh, or `apt-get install busybox-static`")
    with open(path, "rb") as f:
        head = f.read(4096)
    if b"ld-linux" in head:
        raise MissingRequirementError(f"{path} is dynamically linked and would not run inside a bare root",
                                      "`apt-get install busybox-static`")
    return path


def build_busybox_rootfs(dest: Path) -> None:
    """Lay out a busybox root filesystem in `dest` (which must not exist)."""
    busybox = find_static_busybox()
    dest.mkdir(parents=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
              "home/student", "var/log", "run", "mnt"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    os.chmod(dest / "root", 0o700)
    os.chown(dest / "home/student", 1000, 1000)
    shutil.copy2(busybox, dest / "bin/busybox")
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        link = dest / applet
        if link.name == "busybox" or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(dest / "bin/busybox", link.parent))
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    (dest / "etc/hostname").write_text("lab\n")
    (dest / "etc/os-release").write_text('NAME="labctl busybox"\nID=labctl-busybox\n')


def ensure_busybox_rootfs() -> Path:
    """The embedded root filesystem, built if it is not there yet (safe when two commands race)."""
    final = busybox_rootfs_path()
    if (final / "bin/busybox").exists():
        return final
    with state.locked("rootfs-build"):
        if (final / "bin/busybox").exists():
            return final
        tmp = state.new_tmpdir("rootfs-")
        try:
            build_busybox_rootfs(tmp / "rootfs")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp / "rootfs", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
