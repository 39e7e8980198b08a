"""COPY, ADD and WORKDIR: files written straight into a fresh upper directory, without a container.

A RUN needs a process, so it needs a container; copying files does not. The builder makes an empty
directory, writes into it exactly what the instruction adds, at the paths it will have in the image,
and diff.py turns it into a layer as it does a RUN's upper directory. Docker's rules:

  COPY dir  /dest     the *contents* of dir go into /dest (created)
  COPY file /dest/    /dest/file;  COPY file /dest: the file is /dest, unless /dest is a directory
  COPY a b  /dest/    several sources (or a glob): the destination must end in `/`
  owners              0:0, or what --chown=USER[:GROUP] says (names looked up in the image's
                      /etc/passwd and /etc/group, numbers as they are); modes as in the context
  ADD x.tar[.gz] /d/  a local tar archive (plain or gzip) is unpacked into /d, with step 4's safe
                      unpacker (labctl/images/layers.py); URLs are refused (the lab has no network)
  parents             directories on the way that the image has keep their mode and owner
                      (looked up in the layers below, top first); new ones are 0755 root

The layers below are only read (the image store's unpacked layers): nothing here changes them.
"""
from __future__ import annotations

import os
import posixpath
import shutil
import stat
from pathlib import Path

from labctl.build.context import Context, Source
from labctl.errors import LabError

GZIP_MAGIC = b"\x1f\x8b"


def lower_entry(lowers: list[Path], rel: str) -> Path | None:
    """The path of `rel` in the topmost layer that has it (lowers bottom first), or None."""
    for layer in reversed(lowers):
        path = layer / rel
        if os.path.lexists(path):
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None   # a whiteout: deleted in that layer
            return path
    return None


def _real_dir(path: Path | None) -> bool:
    """A directory, not a symlink to one: a link in a layer points into the image, never at the host's files."""
    return path is not None and stat.S_ISDIR(os.lstat(path).st_mode)


def _refuse_link(upper: Path, path: Path) -> None:
    if path.is_symlink():
        raise LabError(f"COPY would write through the symlink /{path.relative_to(upper)} it just copied",
                       "copy the directory the link points to, or give the destination without the link")


def make_parents(upper: Path, rel_dir: str, lowers: list[Path]) -> Path:
    """upper/rel_dir and its parents, each with the mode and owner the image gives it (or 0755 root).
    A symlink on the way (one this COPY made) is refused: on the host it would lead out of the layer."""
    path = upper
    for part in [p for p in rel_dir.split("/") if p]:
        path = path / part
        _refuse_link(upper, path)
        if path.is_dir():
            continue
        path.mkdir()
        below = lower_entry(lowers, str(path.relative_to(upper)))
        if _real_dir(below):
            st = os.lstat(below)
            os.chown(path, st.st_uid, st.st_gid)
            os.chmod(path, stat.S_IMODE(st.st_mode))
        else:
            os.chmod(path, 0o755)
    return path


def _lookup(lowers: list[Path], file: str, name: str) -> int | None:
    found = lower_entry(lowers, f"etc/{file}")
    if found is None or not found.is_file():
        return None
    for line in found.read_text(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def parse_chown(spec: str | None, lowers: list[Path], where: str) -> tuple[int, int]:
    """--chown=USER[:GROUP] -> (uid, gid). A user without a group gets the uid as gid, as Docker does."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")
    uid = int(user) if user.isdigit() else _lookup(lowers, "passwd", user)
    if uid is None:
        raise LabError(f"{where}: --chown user {user!r} is not in the image's /etc/passwd",
                       "use a numeric uid, or a user the image has")
    if not group:
        return uid, uid
    gid = int(group) if group.isdigit() else _lookup(lowers, "group", group)
    if gid is None:
        raise LabError(f"{where}: --chown group {group!r} is not in the image's /etc/group",
                       "use a numeric gid, or a group the image has")
    return uid, gid


def _copy_entry(src: Path, dest: Path, owner: tuple[int, int]) -> None:
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dest)
    elif stat.S_ISDIR(st.st_mode):
        dest.mkdir(exist_ok=True)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    elif stat.S_ISREG(st.st_mode):
        if os.path.lexists(dest):
            os.unlink(dest)
        shutil.copyfile(src, dest)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    else:
        return   # sockets, FIFOs and devices are not copied (Docker's context tar would not carry them)
    os.chown(dest, *owner, follow_symlinks=False)
    os.utime(dest, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)


def _is_local_tar(path: Path) -> bool:
    import tarfile
    with open(path, "rb") as f:
        if f.read(2) == GZIP_MAGIC:
            return True
    return tarfile.is_tarfile(path)


def copy_sources(ctx: Context, sources: list[Source], dest: str, workdir: str, upper: Path, lowers: list[Path],
                 owner: tuple[int, int], add: bool, where: str) -> None:
    """Write what COPY/ADD `sources` -> `dest` adds into `upper` (the rules of the module docstring)."""
    target = posixpath.normpath(posixpath.join(workdir or "/", dest)).lstrip("/")
    to_dir = dest.endswith("/") or len(sources) > 1 or sources[0].path.is_dir()
    if len(sources) > 1 and not dest.endswith("/"):
        raise LabError(f"{where}: several sources need a destination directory ending in '/'",
                       f"write the destination as {dest}/")
    if target and _real_dir(lower_entry(lowers, target)):
        to_dir = True
    for source in sources:
        if add and source.path.is_file() and _is_local_tar(source.path):
            from labctl.images import layers
            root = make_parents(upper, target, lowers)
            with open(source.path, "rb") as f:
                layers.unpack_layer(f, root)
            continue
        if to_dir:
            base = make_parents(upper, target, lowers)
            if not source.path.is_dir():
                base = base / posixpath.basename(source.relpath)
        else:
            parent = make_parents(upper, posixpath.dirname(target), lowers)
            base = parent / posixpath.basename(target)
        for name, path in ctx.walk(source):
            entry = base / name if name else base
            for parent in reversed(entry.relative_to(upper).parents[:-1] if entry != upper else []):
                _refuse_link(upper, upper / parent)
            _copy_entry(path, entry, owner)


def make_workdir(upper: Path, workdir: str, lowers: list[Path]) -> bool:
    """WORKDIR: the directory made in `upper` if the image lacks it; False if it is there already."""
    rel = posixpath.normpath(workdir).lstrip("/")
    below = lower_entry(lowers, rel) if rel else lowers[0] if lowers else None
    if _real_dir(below):
        return False
    make_parents(upper, rel, lowers)
    return True
