"""An OverlayFS upper directory -> a reproducible OCI layer tar: step 4 read backwards.

Step 4 (labctl/images/layers.py) unpacks a layer tar into a directory the overlay stacks as a lower
layer, turning the OCI whiteouts into the kernel's. A build goes the other way: a RUN's container wrote
into its upper directory, and what the kernel left there *is* the difference to the layers below:

  a new or changed file      the file itself (copy-up copied the whole file, then it was written)
  a deleted file             a character device 0/0 of that name (OverlayFS's whiteout)
                             -> an empty tar entry `.wh.NAME` beside where NAME was
  a replaced directory       the directory with xattr trusted.overlay.opaque=y (`rm -rf d && mkdir d`)
                             -> the directory, then an empty entry `d/.wh..wh..opq` inside it
  other trusted.overlay.*    OverlayFS's bookkeeping (origin, impure, ...): never written to the tar
  redirect, metacopy         a renamed directory recorded as a pointer (redirect_dir=on), a file whose
                             data stayed below (metacopy=on): the upper directory alone no longer says
                             what the layer holds, so they are refused; both are off unless the
                             overlay module is told otherwise (/sys/module/overlay/parameters/)

Reproducible: the same upper directory gives the same bytes, hence the same diff_id and digest:
  - entries sorted by name, directories before what they hold (os.walk, sorted)
  - mtimes clamped to `epoch` (SOURCE_DATE_EPOCH, as Docker's and BuildKit's --source-date-epoch do;
    0 if unset): what a build wrote "now" carries no date, so the next build of the same thing matches
  - uid/gid as on disk (the RUN's process chose them, or COPY --chown did), no user/group names
  - PAX format without atime/ctime records; gzip with mtime 0 in its header
"""
from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from labctl.images.layers import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX

GZIP_LEVEL = 6


def source_date_epoch() -> int:
    """$SOURCE_DATE_EPOCH (reproducible-builds.org), else 0: the date a build stamps on what it makes."""
    try:
        return max(0, int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    except ValueError:
        return 0


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _refuse_pointers(path: str, rel: str) -> None:
    for name in ("trusted.overlay.redirect", "trusted.overlay.metacopy"):
        try:
            os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        from labctl.errors import LabError
        raise LabError(f"/{rel} in the upper directory carries {name}: the diff needs the data, not a pointer",
                       "mount the overlay with redirect_dir=off,metacopy=off (the kernel's defaults)")


def _info(tar: tarfile.TarFile, path: str, arcname: str, epoch: int) -> tarfile.TarInfo:
    info = tar.gettarinfo(path, arcname)   # hard links: the second name of an inode becomes a LNKTYPE
    info.uname = info.gname = ""
    info.mtime = min(int(info.mtime), epoch)
    info.pax_headers = {}
    return info


def _empty(name: str, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = epoch
    info.mode = 0o644
    return info


def write_layer(upper: Path, out: BinaryIO, epoch: int | None = None, skip: frozenset[str] = frozenset()) -> int:
    """Write the layer tar of `upper` to `out` (a binary file); returns the number of entries.
    skip: paths relative to upper (e.g. "etc/hosts") left out: the runtime's mount points, not the RUN's work."""
    epoch = source_date_epoch() if epoch is None else epoch
    upper = Path(upper)
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(upper):
            dirs.sort()
            rel_root = os.path.relpath(root, upper)
            for name in sorted(dirs + files):
                path = os.path.join(root, name)
                rel = name if rel_root == "." else f"{rel_root}/{name}"
                if rel in skip:
                    continue
                st = os.lstat(path)
                if _is_whiteout(st):
                    parent = "" if rel_root == "." else rel_root + "/"
                    tar.addfile(_empty(f"{parent}{WHITEOUT_PREFIX}{name}", epoch))
                    count += 1
                    continue
                if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                    _refuse_pointers(path, rel)
                info = _info(tar, path, rel, epoch)
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
                count += 1
                if stat.S_ISDIR(st.st_mode) and _is_opaque(path):
                    tar.addfile(_empty(f"{rel}/{OPAQUE_MARKER}", epoch))
                    count += 1
    return count


class _Counting:
    """A write-only stream that hashes and counts what passes, then hands it on."""

    def __init__(self, raw: BinaryIO | None = None):
        self.raw, self.hash, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        if self.raw is not None:
            self.raw.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


@dataclass
class LayerBlob:
    digest: str      # sha256 of the gzip blob: what the manifest lists and a registry stores
    diff_id: str     # sha256 of the uncompressed tar: what the config's rootfs.diff_ids lists
    size: int        # bytes of the blob
    entries: int

    @property
    def descriptor(self) -> dict:
        from labctl.images.mediatypes import MEDIA_OCI_LAYER_GZIP
        return {"mediaType": MEDIA_OCI_LAYER_GZIP, "digest": self.digest, "size": self.size}


def write_layer_blob(upper: Path, out: BinaryIO, epoch: int | None = None,
                     skip: frozenset[str] = frozenset()) -> LayerBlob:
    """The layer of `upper` gzipped into `out` in one pass: (blob digest, diff_id, size). The tar is
    hashed before gzip (the diff_id) and the gzip stream after it (the digest)."""
    blob = _Counting(out)
    with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=GZIP_LEVEL, mtime=0, filename="") as gz:
        tar_stream = _Counting(gz)
        entries = write_layer(upper, tar_stream, epoch, skip)
    return LayerBlob(blob.digest, tar_stream.digest, blob.size, entries)
