"""A bundle's mounts, done by PID 1 the way runc's rootfs_linux.go does them (step 10).

A config.json lists every mount (`labctl run`'s: /proc, /dev, /sys, /etc/hosts & co, its volumes and
tmpfs mounts: oci.labctl_mounts), and the runtime carries the list out in order, in the container's
mount namespace, before pivot_root:

  1. mount("", "/", MS_REC | (rootfsPropagation or MS_SLAVE))   the host's mount events may reach us
     (slave) or not (private), ours never reach it
  2. mount(root, root, MS_BIND|MS_REC)                pivot_root needs the root to be a mount point
  3. for each mount: the destination resolved *inside* the root (a symlink in the image may not lead
     out of it: secure_join), created (a directory, or an empty file for a file bind), then
         bind/rbind    mount(source, dest, MS_BIND[|MS_REC]); other flags (ro, nosuid, ...) need a
                       second call: mount(dest, MS_BIND|MS_REMOUNT|flags); "rro" mount_setattr(2)
         anything else mount(source, dest, type, flags, data): the flags from the options
                       below, the options that are no flag (mode=755, size=64k) as `data`
         then the option's propagation (rprivate, shared, ...), a mount(2) call of its own
  4. /dev, if it is a fresh tmpfs: the six devices of kernel/rootfs.DEVICES plus linux.devices
     (mknod(2)), and the symlinks /dev/fd, /dev/std{in,out,err}, /dev/ptmx -> pts/ptmx
  5. after pivot_root: rootfsPropagation again, on the new "/" (its mount is new, its peers too)
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from labctl.errors import LabError
from labctl.kernel.rootfs import DEVICES
from labctl.kernel.syscalls import (MOUNT_ATTR_RDONLY, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
                                    MS_REC, MS_REMOUNT, MS_SHARED, MS_SLAVE, mount, mount_setattr)

MS_UNBINDABLE, MS_SYNCHRONOUS, MS_MANDLOCK, MS_DIRSYNC = 1 << 17, 0x10, 0x40, 0x80
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 0x400, 0x800, 1 << 21, 1 << 24

#: option -> (flags to clear, flags to set), as runc's parseMountOptions.
FLAGS = {
    "defaults": (0, 0), "ro": (0, MS_RDONLY), "rw": (MS_RDONLY, 0), "suid": (MS_NOSUID, 0),
    "nosuid": (0, MS_NOSUID), "dev": (MS_NODEV, 0), "nodev": (0, MS_NODEV), "exec": (MS_NOEXEC, 0),
    "noexec": (0, MS_NOEXEC), "sync": (0, MS_SYNCHRONOUS), "async": (MS_SYNCHRONOUS, 0),
    "dirsync": (0, MS_DIRSYNC), "remount": (0, MS_REMOUNT), "mand": (0, MS_MANDLOCK), "nomand": (MS_MANDLOCK, 0),
    "atime": (MS_NOATIME, 0), "noatime": (0, MS_NOATIME), "diratime": (MS_NODIRATIME, 0),
    "nodiratime": (0, MS_NODIRATIME), "bind": (0, MS_BIND), "rbind": (0, MS_BIND | MS_REC),
    "relatime": (0, MS_RELATIME), "norelatime": (MS_RELATIME, 0), "strictatime": (0, MS_STRICTATIME),
    "nostrictatime": (MS_STRICTATIME, 0),
}
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC, "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


def parse_options(options: list[str]) -> tuple[int, list[int], str, bool]:
    """A mount's options -> (mount flags, propagation calls, data string, recursive read-only)."""
    flags, propagation, data, rro = 0, [], [], False
    for option in options:
        if option in FLAGS:
            clear, add = FLAGS[option]
            flags = (flags & ~clear) | add
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        elif option == "rro":
            rro = True
        elif option.startswith("r") and option[1:] in ("w", "nosuid", "nodev", "noexec", "suid", "dev", "exec"):
            continue   # the other recursive attributes (mount_setattr): not carried out, as runc 1.1
        else:
            data.append(option)
    return flags, propagation, ",".join(data), rro


def secure_join(root: Path, path: str) -> Path:
    """root/path, with every symlink on the way resolved as if root were "/" (what the container will
    see), so that a link in the image (etc -> /, or ../../..) never leads a mount outside the root."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise LabError(f"too many symlinks under {path}", "fix the image's links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def make_target(dest: Path, is_dir: bool, owner: tuple[int, int] | None = None) -> None:
    """The mount point, made if missing (a directory, or an empty file for a file's bind); what is
    made belongs to `owner` if given (root inside a user namespace PID 1 joins later: ociinit.owner)."""
    missing = [p for p in (dest, *dest.parents) if not os.path.lexists(p)] if owner else []
    if is_dir:
        dest.mkdir(parents=True, exist_ok=True)
    elif not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.touch()
    for p in missing:
        os.lchown(p, *owner)


def mount_one(root: Path, m: dict, cgroup: dict | None = None, owner: tuple[int, int] | None = None) -> None:
    """Step 3 of the module docstring for one entry of the mounts list. `owner`: see make_target; a
    tmpfs's root is given to it too (uid=, gid=), unless the options say whose it is."""
    options = list(m.get("options") or [])
    kind = m.get("type") or ""
    if kind == "cgroup":
        return mount_cgroup(root, m, cgroup)
    if kind in ("bind", "rbind") and not {"bind", "rbind"} & set(options):
        options.insert(0, "rbind" if kind == "rbind" else "bind")
    flags, propagation, data, rro = parse_options(options)
    dest = secure_join(root, m["destination"])
    source = m.get("source") or kind or "none"
    try:
        if flags & MS_BIND:
            if not os.path.exists(source):
                raise LabError(f"mount source {source} does not exist", "give an existing path as its source")
            make_target(dest, os.path.isdir(source), owner)
            mount(source, str(dest), None, flags & (MS_BIND | MS_REC))
            if flags & ~(MS_BIND | MS_REC):
                mount(None, str(dest), None, flags | MS_REMOUNT | MS_BIND)
        else:
            make_target(dest, True, owner)
            if owner and kind == "tmpfs" and "uid=" not in data:
                data = ",".join(filter(None, (data, "uid=%d,gid=%d" % owner)))
            mount(source, str(dest), kind, flags, data or None)
        if rro:
            mount_setattr(str(dest), MOUNT_ATTR_RDONLY)
        for p in propagation:
            mount(None, str(dest), None, p)
    except OSError as exc:
        raise LabError(f"mounting {m['destination']} ({kind or 'bind'} from {source}) failed: {exc.strerror}",
                       "check the mount's type, source and options in config.json") from None


def mount_cgroup(root: Path, m: dict, cgroup: dict | None) -> None:
    """A "cgroup" mount, as runc makes it: on a cgroup v2 host the container's own cgroup2 (a cgroup
    namespace shows it as the root); on v1 (or hybrid), a tmpfs with each hierarchy's directory of the
    container's cgroup bound under its name, then all read-only. Never the host's whole tree."""
    flags, _, _, _ = parse_options(list(m.get("options") or []))
    dest = secure_join(root, m["destination"])
    make_target(dest, True)
    hierarchies = (cgroup or {}).get("hierarchies", [])
    safe = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if hierarchies and all(h["version"] == 2 for h in hierarchies):
        mount("cgroup2", str(dest), "cgroup2", (flags & MS_RDONLY) | safe)
        return
    mount("tmpfs", str(dest), "tmpfs", safe, "mode=755")
    for mountpoint, directory in (cgroup or {}).get("dirs", {}).items():
        target = dest / Path(mountpoint).name
        target.mkdir(exist_ok=True)
        mount(directory, str(target), None, MS_BIND | MS_REC)
        mount(None, str(target), None, MS_BIND | MS_REMOUNT | MS_RDONLY | safe)
    if flags & MS_RDONLY:
        mount(None, str(dest), None, MS_REMOUNT | MS_RDONLY | safe)


def prepare_root(root: Path, propagation: str) -> None:
    """Steps 1 and 2 of the module docstring; the mount the root sits on made private, as runc's
    rootfsParentMountPrivate: pivot_root(2) refuses a new root whose parent mount is shared."""
    mount(None, "/", None, (PROPAGATION.get(propagation) or MS_SLAVE) | MS_REC)
    mount(None, parent_mount(root), None, MS_PRIVATE)
    mount(str(root), str(root), None, MS_BIND | MS_REC)


def parent_mount(path: Path) -> str:
    """The mount point `path` is on: the longest mount point that is a prefix of it (mountinfo)."""
    best = "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best = point
    return best


def mount_all(root: Path, mounts: list[dict], devices: list[dict], cgroup: dict | None = None,
              owner: tuple[int, int] | None = None) -> None:
    """Steps 3 and 4: every mount in order, then /dev's nodes if /dev is the runtime's own tmpfs."""
    for m in mounts:
        mount_one(root, m, cgroup, owner)
    dev = next((m for m in mounts if m["destination"].rstrip("/") == "/dev"), None)
    if dev is not None and "bind" not in (dev.get("type"), *(dev.get("options") or [])) \
            and "rbind" not in (dev.get("options") or []):
        make_dev(root / "dev", devices)
    else:
        make_nodes(root / "dev", devices)


def make_dev(dev: Path, devices: list[dict]) -> None:
    """The default devices (kernel/rootfs.DEVICES), linux.devices, and /dev's symlinks."""
    defaults = [{"path": f"/dev/{name}", "type": "c", "major": major, "minor": minor, "fileMode": 0o666}
                for name, (major, minor) in DEVICES.items()]
    make_nodes(dev, defaults + list(devices))
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
        if not os.path.lexists(dev / link):
            os.symlink(target, dev / link)
    if os.path.exists("/proc/kcore") and not os.path.lexists(dev / "core"):
        os.symlink("/proc/kcore", dev / "core")


def make_nodes(dev: Path, devices: list[dict]) -> None:
    """mknod(2) each device (c, b, u: character unbuffered, p: FIFO), then its mode and owner."""
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    for d in devices:
        path = secure_join(dev.parent, d["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        mode = d.get("fileMode", 0o666) & 0o7777
        os.mknod(path, mode | kinds[d["type"]], os.makedev(d.get("major", 0), d.get("minor", 0)))
        os.chmod(path, mode)   # mknod's mode went through the umask
        os.chown(path, d.get("uid", 0), d.get("gid", 0))


def after_pivot_root(propagation: str) -> None:
    """Step 5: the new root's propagation, as rootfsPropagation asks (rshared: a mount made inside
    later shows in the bundle's peers)."""
    if propagation:
        mount(None, "/", None, PROPAGATION[propagation])
