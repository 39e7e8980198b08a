"""OverlayFS: a container's root filesystem as read-only image layers plus one writable layer.

    mount -t overlay overlay -o lowerdir=TOP:...:BOTTOM,upperdir=UPPER,workdir=WORK MERGED

mount(2) with fstype "overlay". The merged view shows, for each path, the topmost layer that has it.
  copy-up   the first write to a file from a lower layer copies the whole file into upperdir first
  whiteout  deleting a lower file leaves a character device 0/0 of that name in upperdir
  opaque    a directory replaced (rm -r, then mkdir) gets xattr trusted.overlay.opaque=y in upperdir:
            nothing of the lower layers' directory shows through any more
The lower layers are the image store's unpacked layers (ImageStore.layer_path), shared by every
container of every image that uses them; a container adds only its upperdir to the disk.

The mount options are one page at most (4096 bytes, the data argument of mount(2)). With absolute
paths under /var/lib/labctl that is about 40 layers; beyond that the lab mounts from inside the
layers directory with relative lowerdirs (what Docker's overlay2 driver does with its short links).

Step 4's measurements (what copy-up costs, what sharing layers saves on disk) are in
labctl/demos/overlay.py; this module is what the runtime needs.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from labctl import state
from labctl.errors import LabError
from labctl.kernel.syscalls import MOUNT_ATTR_IDMAP, mount, mount_setattr, move_mount, open_tree

OVERLAY_DIR = "overlay"     # <state>/overlay/<container id>/{upper,work,merged,image.json}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def page_size() -> int:
    return resource.getpagesize()


def overlay_options(lowerdirs: list[str], upperdir: str | None = None, workdir: str | None = None,
                    volatile: bool = False) -> str:
    """The data string for mount(2): lowerdirs are given top first, as OverlayFS wants them.
    volatile (Linux 5.10+): the overlay never syncs its upper layer, not even when it is unmounted."""
    opts = "lowerdir=" + ":".join(lowerdirs)
    if upperdir:
        opts += f",upperdir={upperdir},workdir={workdir}" + (",volatile" if volatile else "")
    return opts


def mount_overlay(lowerdirs: list[str | os.PathLike], target: str | os.PathLike,
                  upperdir: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None,
                  volatile: bool = False) -> str:
    """mount(2) "overlay" on `target`; `lowerdirs` top first. Without upperdir the mount is read-only.
    Returns the options used. Falls back to relative lowerdirs when absolute ones pass one page.
    volatile: see overlay_options (a kernel without it, before 5.10, gets a normal mount)."""
    lowers = [str(p) for p in lowerdirs]
    up = str(upperdir) if upperdir else None
    work = str(workdir) if workdir else None
    if volatile and up:
        try:
            return _mount_overlay(lowers, str(target), up, work, volatile=True)
        except OSError as exc:
            if exc.errno != errno.EINVAL:   # EINVAL: a kernel before 5.10, which has no "volatile"
                raise
    return _mount_overlay(lowers, str(target), up, work, volatile=False)


def _mount_overlay(lowers: list[str], target: str, up: str | None, work: str | None, volatile: bool) -> str:
    opts = overlay_options(lowers, up, work, volatile)
    if len(opts) < page_size():
        mount("overlay", target, "overlay", 0, opts)
        return opts
    base = os.path.commonpath(lowers)
    rel = overlay_options([os.path.relpath(p, base) for p in lowers], up, work, volatile)
    if len(rel) >= page_size():
        raise LabError(f"{len(lowers)} layers do not fit in one page of overlay mount options",
                       "flatten the image into fewer layers")
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(base)  # the kernel resolves relative lowerdirs from the mounting process's cwd
        mount("overlay", str(target), "overlay", 0, rel)
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    return rel


def overlays_dir() -> Path:
    return state.subdir(OVERLAY_DIR)


@dataclass
class ContainerRoot:
    """One container's root filesystem: an overlay of its image's layers, mounted at `merged`."""
    container_id: str
    path: Path                  # <state>/overlay/<id>
    reference: str
    manifest_digest: str
    diff_ids: list[str]         # bottom first

    @property
    def merged(self) -> Path:
        return self.path / "merged"

    @property
    def upper(self) -> Path:
        return self.path / "upper"

    @property
    def work(self) -> Path:
        return self.path / "work"

    @classmethod
    def create(cls, store, reference: str, container_id: str, volatile: bool = False,
               userns_fd: int | None = None, owner: tuple[int, int] | None = None) -> "ContainerRoot":
        """Mount a new root filesystem for `container_id` from the image `reference` in `store` (an
        ImageStore): unpack its layers if needed, make upper/work/merged, mount the overlay. The
        directory and the mount are recorded in the journal first, so `labctl cleanup` removes them.

        userns_fd (--userns remap): the lower layers are seen through idmapped mounts of that user
        namespace (idmapped_layers), and upper and work belong to `owner`, the host's ids of root inside.

        volatile=True for a root that is thrown away with its container (`run --rm`): unmounting a
        normal overlay syncs the whole filesystem under its upper layer (syncfs of the disk holding the
        state directory: 2 ms when it is quiet, tens of ms when other programs write), a volatile one
        does not; its writes are not durable across a crash, which a throw-away root never needs."""
        if not _ID_RE.match(container_id):
            raise LabError(f"bad container id {container_id!r}",
                           "use letters, digits, '.', '_' and '-' (at most 64)")
        path = overlays_dir() / container_id
        with state.locked("image-store", shared=True):  # garbage collection waits until we are recorded
            digest = store.resolve(reference)
            lowers = store.ensure_layers(digest)
            diff_ids = [diff_id for _, diff_id in store.image_layers(digest)]
            path_rec = state.record_path(str(path), f"container {container_id} root filesystem")
            try:
                path.mkdir()
            except FileExistsError:
                path_rec.forget()
                raise LabError(f"a root filesystem for container {container_id!r} exists already",
                               "remove it first, or `labctl cleanup`") from None
            root = cls(container_id, path, reference, digest, diff_ids)
            try:
                for d in (root.upper, root.work, root.merged):
                    d.mkdir()
                # not fsynced, like the container's upper layer beside it (and the journal record above)
                state.atomic_write_json(path / "image.json", {"reference": reference, "manifest": digest,
                                                              "diff_ids": diff_ids}, durable=False)
                if owner:
                    for d in (root.upper, root.work):
                        os.chown(d, *owner)
                mount_rec = state.record_mount(str(root.merged), f"container {container_id} overlay")
                try:
                    with idmapped_layers(lowers, path / "idmapped", userns_fd) as shown:
                        mount_overlay(list(reversed(shown)), root.merged, root.upper, root.work, volatile=volatile)
                except BaseException as exc:
                    mount_rec.forget()
                    if isinstance(exc, OSError) and userns_fd is not None and exc.errno == errno.EINVAL:
                        raise _idmap_error(exc) from None   # an overlay that takes no idmapped layer (< 5.19)
                    if isinstance(exc, OSError):
                        raise LabError(f"mounting the overlay for {container_id} failed: {exc}",
                                       "is the overlay module loaded (`modprobe overlay`)?") from None
                    raise
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                path_rec.forget()
                raise
        return root

    @classmethod
    def open(cls, container_id: str) -> "ContainerRoot":
        """An existing root filesystem (made by create, maybe by another labctl process)."""
        path = overlays_dir() / container_id
        try:
            info = json.loads((path / "image.json").read_text())
        except FileNotFoundError:
            raise LabError(f"no root filesystem for container {container_id!r}",
                           "`labctl ps` lists the containers") from None
        return cls(container_id, path, info["reference"], info["manifest"], info["diff_ids"])

    def mount_again(self, store, userns_fd: int | None = None) -> None:
        """Mount an exited container's root again, over the upper layer it kept (`docker start` or
        `restart` of a stopped container): what it wrote is there, the image's layers below it again.
        The kernel takes the old work directory back (overlayfs empties its work/work itself)."""
        if self.mounted:
            return
        with state.locked("image-store", shared=True):
            lowers = store.ensure_layers(self.manifest_digest)
            mount_rec = state.record_mount(str(self.merged), f"container {self.container_id} overlay")
            try:
                with idmapped_layers(lowers, self.path / "idmapped", userns_fd) as shown:
                    mount_overlay(list(reversed(shown)), self.merged, self.upper, self.work)
            except BaseException:
                mount_rec.forget()
                raise

    @property
    def mounted(self) -> bool:
        return state.is_mountpoint(str(self.merged))

    def remove(self) -> None:
        """Unmount the overlay and delete upper, work and merged; drop the journal records."""
        state.unmount(str(self.merged))
        state.remove_path(str(self.path))
        for rec in state.records():
            if rec.data.get("target") == str(self.merged) or rec.data.get("path") == str(self.path):
                rec.forget()


@contextlib.contextmanager
def idmapped_layers(lowers: list[str], into: Path, userns_fd: int | None):
    """The layer directories as the overlay should take them: themselves, or with a user namespace,
    each through an idmapped mount (security/userns.py tells why) at into/N, for as long as the overlay
    is being mounted:

        open_tree(layer, OPEN_TREE_CLONE)                a bind mount of the layer, attached nowhere
        mount_setattr(fd, MOUNT_ATTR_IDMAP, userns_fd)   owners shown through the namespace's maps
        move_mount(fd, into/N)                           where overlay's lowerdir= can name it

    OverlayFS takes a private clone of each layer's mount when it is mounted, so once it is, the idmapped
    mounts are detached (umount2 MNT_DETACH) and `into` removed: only the overlay stays mounted. The
    journal names `into` first, so a labctl killed halfway leaves nothing `labctl cleanup` misses."""
    if userns_fd is None:
        yield lowers
        return
    rec = state.record("idmapped-layers", remove_idmapped, path=str(into))
    into.mkdir()
    try:
        shown = []
        for n, layer in enumerate(lowers):
            target = into / str(n)
            target.mkdir()
            fd = open_tree(str(layer))
            try:
                mount_setattr("", MOUNT_ATTR_IDMAP, recursive=False, fd=fd, userns_fd=userns_fd)
                move_mount(fd, str(target))
            except OSError as exc:
                raise _idmap_error(exc) from None
            finally:
                os.close(fd)
            shown.append(str(target))
        yield shown
    finally:
        remove_idmapped(str(into))
        rec.forget()


def _idmap_error(exc: OSError) -> LabError:
    if exc.errno in (errno.ENOSYS, errno.EINVAL):
        return LabError(f"--userns remap needs idmapped mounts of the image layers ({exc})",
                        "a kernel of 5.19 or later with the state directory on a filesystem that supports "
                        "them (ext4, xfs, btrfs; tmpfs since 6.3)")
    return LabError(f"idmapping an image layer failed: {exc}", "see `labctl doctor`")


def remove_idmapped(path: str) -> None:
    """Detach every mount at or below `path` (deepest first), then remove it (the journal's undo)."""
    prefix = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        points = [_unescape(line.split()[4]) for line in f]
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), reverse=True):
        state.unmount(point)
    state.remove_path(path)


def container_roots() -> list[ContainerRoot]:
    out = []
    for path in sorted(overlays_dir().iterdir()):
        with contextlib.suppress(LabError, ValueError, KeyError):
            out.append(ContainerRoot.open(path.name))
    return out


def layers_in_use() -> set[str]:
    """diff_ids of the layers some container root filesystem still uses (garbage collection keeps them)."""
    return {diff_id for root in container_roots() for diff_id in root.diff_ids}


def images_in_use() -> dict[str, list[str]]:
    """{manifest digest: [container ids]} for the container root filesystems that exist."""
    used: dict[str, list[str]] = {}
    for root in container_roots():
        used.setdefault(root.manifest_digest, []).append(root.container_id)
    return used


# ---------------------------------------------------------------------------------------------
# Reading what the kernel and the filesystem say (the demo, the check and the tests use these)


def mount_options(target: str | os.PathLike) -> dict[str, str] | None:
    """The super options of the overlay mounted at `target`, from /proc/self/mountinfo (None if none)."""
    target = os.path.realpath(target)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if _unescape(fields[4]) == target and fields[sep + 1] == "overlay":
                found = {}
                for opt in fields[sep + 3].split(","):
                    key, _, value = opt.partition("=")
                    found[key] = _unescape(value)
    return found


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def is_whiteout(path: str | os.PathLike) -> bool:
    """An OverlayFS whiteout: a character device with device number 0/0."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    import stat
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | os.PathLike) -> bool:
    """getxattr(path, "trusted.overlay.opaque") == "y"."""
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False
