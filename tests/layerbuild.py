"""Hand-made layer tarballs for the layer and overlay tests: every tar entry type, any name, any metadata."""
from __future__ import annotations

import io
import tarfile

from labctl.images import ocilayout


def entry(name: str, kind: str = "file", data: bytes = b"", mode: int | None = None, uid: int = 0,
          gid: int = 0, link: str = "", mtime: int = 1_600_000_000, xattrs: dict | None = None,
          dev: tuple[int, int] = (0, 0)) -> dict:
    return dict(name=name, kind=kind, data=data, mode=mode, uid=uid, gid=gid, link=link, mtime=mtime,
                xattrs=xattrs or {}, dev=dev)


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
          "blk": tarfile.BLKTYPE}


def tar_of(entries: list[dict]) -> bytes:
    """An uncompressed PAX tar holding exactly these entries, in this order, names untouched."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.type = _TYPES[e["kind"]]
            info.mode = e["mode"] if e["mode"] is not None else (0o755 if e["kind"] == "dir" else 0o644)
            info.uid, info.gid, info.mtime = e["uid"], e["gid"], e["mtime"]
            info.linkname = e["link"]
            info.devmajor, info.devminor = e["dev"]
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e["xattrs"].items()}
            if e["kind"] == "file":
                info.size = len(e["data"])
                tar.addfile(info, io.BytesIO(e["data"]))
            else:
                tar.addfile(info)
    return buf.getvalue()


def layer(entries: list[dict], gzip: bool = True) -> ocilayout.Layer:
    return ocilayout.Layer(tar_of(entries), gzip=gzip)


def rich_image() -> ocilayout.Image:
    """Three layers exercising what OverlayFS must get right: modes, owners, set-id bits, symlinks
    (relative and absolute), hardlinks, a FIFO, whiteouts of files and whole directories, opaque
    directories at two depths, a file replaced by a directory and a directory replaced by a file."""
    e = entry
    l1 = layer([
        e("a", "dir"), e("a/b", "dir"), e("a/b/file1", data=b"one v1\n"), e("a/b/old", data=b"old\n"),
        e("a/exec", data=b"#!/bin/sh\necho hi\n", mode=0o755),
        e("a/secret", data=b"s3cret\n", mode=0o600, uid=1000, gid=1000),
        e("a/setuid", data=b"suid\n", mode=0o4755), e("a/sticky", "dir", mode=0o1777),
        e("link", "symlink", link="a/b/file1"), e("abs", "symlink", link="/a/exec"),
        e("hard", "hardlink", link="a/exec"), e("pipe", "fifo", mode=0o640),
        e("d1", "dir"), e("d1/x", data=b"x\n"), e("d1/y", data=b"y\n"),
        e("d2", "dir"), e("d2/z", data=b"z\n"), e("d2/sub", "dir"), e("d2/sub/deep", data=b"deep\n"),
        e("f_to_dir", data=b"was a file\n"),
        e("dir_to_file", "dir"), e("dir_to_file/inner", data=b"inner\n"),
        e("owned", "dir", mode=0o750, uid=1000, gid=100),
    ])
    l2 = layer([
        e("a", "dir"), e("a/.wh.secret"), e("a/b", "dir"), e("a/b/file1", data=b"one v2, longer\n"),
        e("d1", "dir"), e("d1/.wh..wh..opq"), e("d1/new", data=b"new in l2\n"),
        e("f_to_dir", "dir", mode=0o700), e("f_to_dir/now", data=b"a dir now\n"),
        e("dir_to_file", data=b"a file now\n", mode=0o640),
        e("a/c", "dir", mode=0o711), e("a/c/made", data=b"made\n", uid=1000, gid=1000),
    ], gzip=False)
    l3 = layer([
        e(".wh.d2"),
        e("d1", "dir"), e("d1/new", data=b"new in l3\n", mode=0o600),
        e("a", "dir"), e("a/b", "dir"), e("a/b/.wh..wh..opq"), e("a/b/file2", data=b"two\n"),
        e("a/.wh.setuid"), e("link2", "symlink", link="./a//c/made"),
    ])
    return ocilayout.Image([l1, l2, l3], config={"Cmd": ["sh"]})
