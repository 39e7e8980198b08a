"""Step 12's scene: a container's changes as OverlayFS records them, and a layer applied by someone else.

`changed_overlay()` makes a lower layer (files, directories, an executable), mounts an overlay on it
with a fresh upper directory, and changes the merged view as a RUN instruction would: it deletes a
file and a whole directory, replaces a directory (`rm -rf DIR; mkdir DIR`), rewrites a file, changes
a mode (a copy-up of metadata), adds files, a directory and a symlink. The kernel records each change
in the upper directory: a deleted name as a whiteout (a character device 0/0), a replaced directory as
an opaque one (xattr trusted.overlay.opaque=y), everything else as the file itself. The merged view is
read (`tree`) before the overlay is unmounted: it is the kernel's answer to "what did the container
see", and what any layer made from the upper directory must reproduce.

`apply_with_umoci(lower, layer, into)` is the other side: an OCI layout of two layers (the lower
directory as a tar, then the layer to judge), unpacked by umoci (`umoci raw unpack`), an independent
implementation of the OCI image spec's layer rules (layer.md: "Whiteouts", "Opaque Whiteout").

The overlay is mounted with metacopy=off and redirect_dir=off, so a chmod copies the whole file up and
no directory is recorded as a redirect: the upper directory holds only what the OCI format can say.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from labctl import state
from labctl.errors import LabError

#: The lower layer: path -> content (bytes for a file, None for a directory), and the modes that differ.
LOWER = {
    "etc": None, "etc/motd": b"Welcome to the lower layer.\n", "etc/hostname": b"lower\n",
    "srv": None, "srv/old": None, "srv/old/data": None, "srv/old/data/log.1": b"old log\n",
    "srv/old/index.html": b"<p>old site</p>\n",
    "var": None, "var/cache": None, "var/cache/apt": None, "var/cache/apt/pkg-1.0.deb": b"a package\n",
    "var/cache/apt/lists": None, "var/cache/apt/lists/main": b"an index\n",
    "usr": None, "usr/bin": None, "usr/bin/tool": b"#!/bin/sh\necho v1\n",
    "usr/share": None, "usr/share/doc": None, "usr/share/doc/README": b"read me\n",
    "home": None, "home/user": None, "home/user/.profile": b"PS1='$ '\n",
}
LOWER_MODES = {"usr/bin/tool": 0o755, "home/user": 0o700}

#: What the scene does in the merged view, in words (the demo and the check's verdict list them).
CHANGES = (
    ("delete", "etc/motd"), ("delete", "srv/old"), ("replace", "var/cache/apt"),
    ("rewrite", "usr/bin/tool"), ("chmod 600", "usr/share/doc/README"), ("add", "opt/app/run.sh"),
    ("add", "home/user/notes"), ("symlink", "etc/localtime"),
)


@dataclass
class Scene:
    base: Path       # everything below is removed by changed_overlay on the way out
    lower: Path
    upper: Path
    merged: dict     # tree() of the merged view, read from the kernel before the unmount
    token: str       # random content written by the changes: no canned tar can pass

    def whiteouts(self) -> list[str]:
        """The upper directory's whiteouts (character devices 0/0), as paths relative to it."""
        return [p for p, e in tree(self.upper).items() if e.kind == "char 0/0"]

    def opaque(self) -> list[str]:
        """The upper directory's opaque directories (trusted.overlay.opaque=y)."""
        return [p for p, e in tree(self.upper).items() if e.kind == "dir" and is_opaque(self.upper / p)]


@dataclass(frozen=True)
class Entry:
    kind: str        # file, dir, symlink, fifo, "char 0/0", "char 1/3", ...
    mode: int        # the permission bits
    uid: int
    gid: int
    what: str        # a file's sha256 and size, a symlink's target, else ""


def tree(root: str | os.PathLike) -> dict[str, Entry]:
    """Every path below root (relative, sorted), with its type, mode, owner and content."""
    root = Path(root)
    out: dict[str, Entry] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = entry(path)
    return dict(sorted(out.items()))


def entry(path: Path) -> Entry:
    st = os.lstat(path)
    fmt, what = stat.S_IFMT(st.st_mode), ""
    if fmt == stat.S_IFREG:
        kind, data = "file", path.read_bytes()
        what = f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}"
    elif fmt == stat.S_IFLNK:
        kind, what = "symlink", os.readlink(path)
    elif fmt == stat.S_IFDIR:
        kind = "dir"
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        kind = f"{'char' if fmt == stat.S_IFCHR else 'block'} {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
    else:
        kind = "fifo" if fmt == stat.S_IFIFO else "socket"
    return Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)


def is_opaque(path: str | os.PathLike) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def make_lower(root: Path) -> None:
    for rel, content in LOWER.items():
        path = root / rel
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        os.chmod(path, LOWER_MODES.get(rel, 0o755 if content is None else 0o644))


def change(merged: Path, token: str) -> None:
    """The container's changes (CHANGES), made through the merged view: the kernel records them."""
    import shutil
    os.unlink(merged / "etc/motd")
    shutil.rmtree(merged / "srv/old")
    shutil.rmtree(merged / "var/cache/apt")
    (merged / "var/cache/apt").mkdir(mode=0o755)
    (merged / "var/cache/apt/fresh.deb").write_text(f"a fresh package {token}\n")
    (merged / "usr/bin/tool").write_text(f"#!/bin/sh\necho v2 {token}\n")
    os.chmod(merged / "usr/share/doc/README", 0o600)
    (merged / "opt/app").mkdir(parents=True)
    (merged / "opt/app/run.sh").write_text(f"#!/bin/sh\nexec /usr/bin/tool {token}\n")
    os.chmod(merged / "opt/app/run.sh", 0o755)
    (merged / "home/user/notes").write_text(f"{token}\n")
    os.symlink("/usr/share/zoneinfo/UTC", merged / "etc/localtime")


@contextlib.contextmanager
def changed_overlay(prefix: str = "layerdiff-") -> Iterator[Scene]:
    """Make the scene (see the module's docstring); on the way out, even on failure, unmount and remove it."""
    from labctl.kernel.syscalls import mount
    base = state.new_tmpdir(prefix)
    path_rec = state.record_path(str(base), "step 12: an overlay changed as a container would")
    lower, upper, work, merged = (base / d for d in ("lower", "upper", "work", "merged"))
    mount_rec = None
    try:
        for d in (lower, upper, work, merged):
            d.mkdir()
        make_lower(lower)
        mount_rec = state.record_mount(str(merged), "step 12: the scene's overlay")
        mount("overlay", str(merged), "overlay", 0,
              f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off")
        token = secrets.token_hex(8)
        change(merged, token)
        scene = Scene(base, lower, upper, tree(merged), token)
        state.unmount(str(merged))
        yield scene
    finally:
        state.unmount(str(merged))
        if mount_rec:
            mount_rec.forget()
        state.remove_path(str(base))
        path_rec.forget()


def apply_with_umoci(lower: Path, layer: bytes, into: Path) -> Path:
    """`umoci raw unpack` of an OCI layout holding two layers, `lower` (tarred) then `layer` (an
    uncompressed tar): the root filesystem it makes, into/rootfs. A LabError carries umoci's own
    words when it refuses the layer."""
    from labctl.images import ocilayout
    image = ocilayout.Image([ocilayout.Layer(ocilayout.tar_directory(lower), gzip=False),
                             ocilayout.Layer(layer, gzip=False)])
    layout = ocilayout.write_layout(into / "layout", {"judge": image})
    rootfs = into / "rootfs"
    done = subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:judge", str(rootfs)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise LabError(f"umoci could not apply the layer: {said[-1] if said else f'exit {done.returncode}'}",
                       "the layer must be a tar whose entry names are relative paths")
    return rootfs
