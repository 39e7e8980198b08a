"""Unpacking image layers safely, and turning OCI whiteouts into OverlayFS whiteouts.

A layer is a tar archive written by someone else. `tarfile.extractall` trusts it: an entry named
`../../etc/cron.d/x`, or a symlink `lib -> /` followed by an entry `lib/etc/shadow`, writes wherever
the archive says. Python 3.12 added extraction filters; Debian 12's Python 3.11 has none, so the lab
extracts entry by entry, with these rules:

  names       relative only; no `..` component; `.` and empty components are dropped
  walking     every directory on the way is opened with openat(O_DIRECTORY|O_NOFOLLOW) from the layer's
              root descriptor, and the entry is created relative to its parent's descriptor, so a
              symlink planted earlier in the same layer can never redirect a later write
  symlinks    kept as data (the container resolves them inside its own root), except a relative target
              that climbs above the layer root (`../../..`), which is refused; absolute targets are
              fine: inside the container `/usr/lib` is the container's /usr/lib
  hardlinks   the target must be a file already unpacked from this layer, named by a safe path
  devices     refused (a container gets its /dev from the runtime, step 2), except a character
              device 0/0, which is OverlayFS's whiteout and opens nothing (some tools export whiteouts
              that way). FIFOs are allowed: a named pipe reaches nothing outside the layer
  xattrs      PAX `SCHILY.xattr.*` records are kept, except `trusted.overlay.*`, which would forge
              OverlayFS's own metadata
  metadata    mode (after chown, which clears set-id bits), owner, mtime; directory mtimes last

OCI whiteouts become what OverlayFS understands:
  `DIR/.wh.NAME`        -> a character device 0/0 named DIR/NAME (NAME is deleted from lower layers)
  `DIR/.wh..wh..opq`    -> xattr trusted.overlay.opaque=y on DIR (lower layers' DIR contents hidden)

The sha256 of the uncompressed stream must equal the layer's diff_id from the image config. Any
violation raises LayerRejected; the caller unpacks into a temporary directory and renames it into place
only on success (see ImageStore.ensure_layer), so a rejected layer leaves nothing.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

from labctl.errors import LabError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerRejected(LabError):
    """A layer that breaks a safety rule (or its diff_id): nothing of it is kept."""

    def __init__(self, entry: str, reason: str):
        super().__init__(f"layer rejected: entry {entry!r} {reason}",
                         "the image is malformed or malicious: do not use it; rebuild it from a trusted source")
        self.entry, self.reason = entry, reason


@dataclass
class UnpackResult:
    diff_id: str
    entries: int = 0
    whiteouts: list[str] = field(default_factory=list)
    opaque_dirs: list[str] = field(default_factory=list)


class _HashingReader:
    """A read-only stream that hashes whatever passes through it (the uncompressed tar: the diff_id)."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def open_uncompressed(blob: BinaryIO) -> BinaryIO:
    """The blob as an uncompressed tar stream: gzip and zstd are recognised by their magic bytes."""
    head = blob.read(4)
    blob.seek(0)
    if head[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=blob, mode="rb")
    if head == ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise LabError("this layer is zstd-compressed and the zstandard module is not installed",
                           "`pip install zstandard` in labctl's environment, or use a gzip image") from None
        return zstandard.ZstdDecompressor().stream_reader(blob)
    return blob


def split_member_name(name: str) -> list[str]:
    """The components of a tar entry name, refusing absolute names and `..`. [] means the layer root."""
    if name.startswith("/"):
        raise LayerRejected(name, "has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerRejected(name, "has a `..` component (path traversal)")
    if "\0" in name:
        raise LayerRejected(name, "contains a NUL byte")
    return parts


def symlink_escapes(parts: list[str], target: str) -> bool:
    """Does a relative symlink target, read from the link's own directory, climb above the layer root?"""
    if target.startswith("/"):
        return False  # resolved inside the container's root at run time
    depth = len(parts) - 1
    for comp in target.split("/"):
        if comp == "..":
            depth -= 1
            if depth < 0:
                return True
        elif comp not in ("", "."):
            depth += 1
    return False


class _Tree:
    """Directory descriptors under one root, opened without following symlinks."""

    def __init__(self, root: str | os.PathLike):
        self.root_fd = os.open(root, _DIR_FLAGS)

    def close(self) -> None:
        os.close(self.root_fd)

    @contextlib.contextmanager
    def parent(self, entry: str, dirs: list[str], create: bool = True):
        """An fd for the directory `dirs` (components from the root): openat(O_NOFOLLOW) one by one,
        creating missing directories (mode 0755, as containerd and umoci do)."""
        fd = os.dup(self.root_fd)
        try:
            for comp in dirs:
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise LayerRejected(entry, f"refers to {'/'.join(dirs)!r}, which this layer does not have")
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    os.chmod(f"/proc/self/fd/{fd}/{comp}", 0o755)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except (NotADirectoryError, OSError) as exc:
                    if isinstance(exc, NotADirectoryError) or exc.errno == 40:  # ELOOP: a symlink
                        kind = "a symlink" if _is_symlink(fd, comp) else "not a directory"
                        raise LayerRejected(entry, f"goes through {comp!r}, which is {kind} in this layer "
                                                   "(writing through it could land outside the layer)") from None
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _remove_existing(dir_fd: int, name: str, keep_dir: bool) -> None:
    """A later tar entry replaces an earlier one of the same name (tar semantics)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not keep_dir:
            shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _set_xattrs(member: tarfile.TarInfo, dir_fd: int, name: str) -> None:
    for key, value in member.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        attr = key[len("SCHILY.xattr."):]
        if attr.startswith("trusted.overlay."):
            raise LayerRejected(member.name, f"sets {attr}, which would forge OverlayFS metadata")
        raw = value.encode("utf-8", "surrogateescape")
        # /proc/self/fd/N pins the parent directory; follow_symlinks=False keeps the last component
        os.setxattr(f"/proc/self/fd/{dir_fd}/{name}", attr, raw, follow_symlinks=False)


def _set_metadata(member: tarfile.TarInfo, dir_fd: int, name: str, set_mtime: bool = True) -> None:
    link = member.issym()
    os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
    if not link:
        os.chmod(f"/proc/self/fd/{dir_fd}/{name}", stat.S_IMODE(member.mode))  # after chown: set-id bits stay
    _set_xattrs(member, dir_fd, name)
    if set_mtime:
        os.utime(name, ns=(int(member.mtime * 1e9),) * 2, dir_fd=dir_fd, follow_symlinks=False)


def unpack_layer(blob: BinaryIO, dest: str | os.PathLike, diff_id: str | None = None) -> UnpackResult:
    """Unpack one layer (gzip, zstd or plain tar) into the existing empty directory `dest`, following the
    rules in this module's docstring, and check the uncompressed sha256 against `diff_id`.

    Raises LayerRejected on the first violation; `dest` then holds a partial tree the caller removes."""
    stream = _HashingReader(open_uncompressed(blob))
    tree = _Tree(dest)
    result = UnpackResult(diff_id="")
    dir_times: list[tuple[list[str], tarfile.TarInfo]] = []
    try:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|")
        except tarfile.ReadError as exc:
            raise LayerRejected("(archive)", f"is not a tar archive: {exc}") from None
        try:
            for member in tar:
                result.entries += 1
                try:
                    _unpack_member(tar, member, tree, result, dir_times)
                except OSError as exc:  # e.g. a hardlink to itself, a name too long: still one clear line
                    raise LayerRejected(member.name, f"could not be unpacked: {exc.strerror or exc}") from None
        except tarfile.TarError as exc:
            raise LayerRejected("(archive)", f"is a damaged tar archive: {exc}") from None
        # directory mtimes last: creating their entries changed them
        for parts, member in reversed(dir_times):
            if parts:
                with tree.parent(member.name, parts[:-1], create=False) as fd:
                    os.utime(parts[-1], ns=(int(member.mtime * 1e9),) * 2, dir_fd=fd, follow_symlinks=False)
            else:
                os.utime(tree.root_fd, ns=(int(member.mtime * 1e9),) * 2)
        stream.drain()  # the zero blocks after the last entry count for the diff_id too
    finally:
        tree.close()
    result.diff_id = "sha256:" + stream.hash.hexdigest()
    if diff_id and result.diff_id != diff_id:
        raise LayerRejected("(archive)", f"has uncompressed sha256 {result.diff_id}, but the image config "
                                         f"says its diff_id is {diff_id}")
    return result


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, tree: _Tree, result: UnpackResult,
                   dir_times: list) -> None:
    parts = split_member_name(member.name)
    if not parts:  # the layer root itself ("./")
        if not member.isdir():
            raise LayerRejected(member.name, "names the layer root but is not a directory")
        os.chown(tree.root_fd, member.uid, member.gid)
        os.chmod(tree.root_fd, stat.S_IMODE(member.mode))
        dir_times.append((parts, member))
        return
    *dirs, name = parts
    if name == OPAQUE_MARKER or name.startswith(WHITEOUT_PREFIX):
        _unpack_whiteout(member, tree, dirs, name, result)
        return
    with tree.parent(member.name, dirs) as fd:
        if member.isdir():
            _remove_existing(fd, name, keep_dir=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=fd)
            _set_metadata(member, fd, name, set_mtime=False)
            dir_times.append((parts, member))
        elif member.isfile():
            _remove_existing(fd, name, keep_dir=False)
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=fd)
            with os.fdopen(out, "wb") as f:
                src = tar.extractfile(member)
                shutil.copyfileobj(src, f, 1 << 20)
            _set_metadata(member, fd, name)
        elif member.issym():
            if symlink_escapes(parts, member.linkname):
                raise LayerRejected(member.name, f"is a symlink to {member.linkname!r}, which climbs above "
                                                 "the layer root")
            _remove_existing(fd, name, keep_dir=False)
            os.symlink(member.linkname, name, dir_fd=fd)
            _set_metadata(member, fd, name)
        elif member.islnk():
            _hardlink(member, tree, fd, name)
        elif member.isfifo():
            _remove_existing(fd, name, keep_dir=False)
            os.mkfifo(name, 0o600, dir_fd=fd)
            _set_metadata(member, fd, name)
        elif member.ischr() and (member.devmajor, member.devminor) == (0, 0):
            # OverlayFS's own whiteout form, as some tools export it: the same as `.wh.NAME`
            _remove_existing(fd, name, keep_dir=False)
            _make_whiteout(fd, name, member.mtime)
            result.whiteouts.append("/".join(parts))
        elif member.ischr() or member.isblk():
            kind = "character" if member.ischr() else "block"
            raise LayerRejected(member.name, f"is a {kind} device {member.devmajor}:{member.devminor}; "
                                             "images may not carry device nodes")
        else:
            raise LayerRejected(member.name, f"has tar type {member.type!r}, which the lab does not unpack")


def _unpack_whiteout(member: tarfile.TarInfo, tree: _Tree, dirs: list[str], name: str,
                     result: UnpackResult) -> None:
    """OCI's `.wh.` entries become OverlayFS's whiteouts: an opaque xattr, or a character device 0/0."""
    if name == OPAQUE_MARKER:
        with tree.parent(member.name, dirs) as fd:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        result.opaque_dirs.append("/".join(dirs) or "/")
        return
    hidden = name[len(WHITEOUT_PREFIX):]
    if hidden in ("", ".", "..") or hidden.startswith(WHITEOUT_PREFIX):
        raise LayerRejected(member.name, f"is a whiteout for {hidden!r}, which points outside its directory")
    with tree.parent(member.name, dirs) as fd:
        _remove_existing(fd, hidden, keep_dir=False)
        _make_whiteout(fd, hidden, member.mtime)
    result.whiteouts.append("/".join(dirs + [hidden]))


def _make_whiteout(dir_fd: int, name: str, mtime: float) -> None:
    """mknod(2) S_IFCHR 0/0: the file OverlayFS reads as "deleted from the layers below"."""
    os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dir_fd)
    os.utime(name, ns=(int(mtime * 1e9),) * 2, dir_fd=dir_fd, follow_symlinks=False)


def _hardlink(member: tarfile.TarInfo, tree: _Tree, fd: int, name: str) -> None:
    """link(2) to a file this layer already unpacked: never to a directory, a device or a whiteout."""
    target = split_member_name(member.linkname)
    if not target:
        raise LayerRejected(member.name, "is a hardlink to the layer root")
    with tree.parent(member.name, target[:-1], create=False) as tfd:
        try:
            st = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
        except FileNotFoundError:
            raise LayerRejected(member.name, f"is a hardlink to {member.linkname!r}, which is not "
                                             "in this layer") from None
        if stat.S_ISDIR(st.st_mode):
            raise LayerRejected(member.name, "is a hardlink to a directory")
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            raise LayerRejected(member.name, "is a hardlink to a device node or whiteout")
        _remove_existing(fd, name, keep_dir=False)
        os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)
