"""OCI images built locally: layers as tarballs, an image config, a manifest, an index, an OCI layout.

The OCI image spec in a few lines:
  layer     a tar (usually gzipped) of the files the layer adds or changes; deletions are "whiteouts":
            an empty file `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` in a directory
            hides everything the lower layers had in it ("opaque" directory)
  diff_id   the sha256 of the *uncompressed* tar; the config lists them (rootfs.diff_ids)
  digest    the sha256 of the blob as stored and transferred (the compressed tar, for layers)
  config    JSON: architecture, os, and how to run it (Env, Cmd, Entrypoint, WorkingDir, User)
  manifest  JSON: the config's and the layers' descriptors {mediaType, digest, size}
  index     JSON: manifests for several platforms; the puller picks one
  layout    a directory: oci-layout, index.json (the entry point) and blobs/sha256/<hex>

The lab builds its images this way from the busybox root filesystem, so nothing is downloaded: the
image store imports them (step 4) and the lab registry serves them (step 5).
"""
from __future__ import annotations

import functools
import gzip
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from labctl.images import store as imagestore
from labctl.images.mediatypes import (MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER, MEDIA_OCI_LAYER_GZIP,
                                      MEDIA_OCI_LAYER_ZSTD, MEDIA_OCI_MANIFEST)
from labctl.images.store import sha256_digest

REF_NAME = "org.opencontainers.image.ref.name"   # the annotation that names a tag in index.json
EPOCH = 0  # fixed timestamps make every build of the same content the same digest


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def tar_directory(src: str | os.PathLike, prefix: str = "") -> bytes:
    """A deterministic uncompressed tar of a directory tree (sorted names, mtimes kept, owners kept)."""
    src = Path(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = Path(root) / name
                arcname = os.path.join(prefix, str(path.relative_to(src)))
                info = tar.gettarinfo(str(path), arcname)
                info.uname = info.gname = ""
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


@dataclass
class FileEntry:
    """One entry of a hand-made layer: a file, a directory, a symlink, or a whiteout."""
    path: str
    kind: str = "file"        # file | dir | symlink
    data: bytes = b""
    mode: int = 0o644
    target: str = ""          # for symlinks


def tar_entries(entries: list[FileEntry]) -> bytes:
    """A deterministic tar from a list of entries (used for small layers and for whiteouts)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.mtime = EPOCH
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = e.mode if e.mode != 0o644 else 0o755
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


@dataclass
class Layer:
    tar: bytes                    # uncompressed
    gzip: bool = True
    zstd: bool = False            # zstd instead of gzip (needs the zstandard module)
    blob: bytes = field(init=False)

    def __post_init__(self):
        if self.zstd:
            import zstandard
            self.blob = zstandard.ZstdCompressor().compress(self.tar)
        else:
            self.blob = gzip.compress(self.tar, mtime=EPOCH) if self.gzip else self.tar

    @property
    def diff_id(self) -> str:
        return sha256_digest(self.tar)

    @property
    def descriptor(self) -> dict:
        media = MEDIA_OCI_LAYER_ZSTD if self.zstd else MEDIA_OCI_LAYER_GZIP if self.gzip else MEDIA_OCI_LAYER
        return {"mediaType": media,
                "digest": sha256_digest(self.blob), "size": len(self.blob)}


@dataclass
class Image:
    """An image for one platform: its layers (bottom first) and its run configuration."""
    layers: list[Layer]
    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    config: dict = field(default_factory=dict)   # Env, Cmd, Entrypoint, WorkingDir, User, ...

    def config_blob(self) -> bytes:
        cfg = {"architecture": self.architecture, "os": self.os,
               "config": self.config,
               "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in self.layers]},
               "history": [{"created_by": "labctl (built locally)"} for _ in self.layers]}
        if self.variant:
            cfg["variant"] = self.variant
        return _canonical(cfg)

    def manifest_blob(self) -> bytes:
        config = self.config_blob()
        return _canonical({
            "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [l.descriptor for l in self.layers]})

    def platform(self) -> dict:
        p = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            p["variant"] = self.variant
        return p

    def blobs(self) -> dict[str, bytes]:
        out = {sha256_digest(l.blob): l.blob for l in self.layers}
        config = self.config_blob()
        out[sha256_digest(config)] = config
        manifest = self.manifest_blob()
        out[sha256_digest(manifest)] = manifest
        return out


def index_blob(images: list[Image]) -> bytes:
    """An OCI image index listing one manifest per platform."""
    manifests = []
    for image in images:
        m = image.manifest_blob()
        manifests.append({"mediaType": MEDIA_OCI_MANIFEST, "digest": sha256_digest(m), "size": len(m),
                          "platform": image.platform()})
    return _canonical({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": manifests})


def tag_blobs(what: Image | list[Image]) -> tuple[dict[str, bytes], dict]:
    """Every blob of one tag, an Image (one manifest) or a list (an index of them), by digest; and the
    descriptor of its top document (the manifest or the index), which is where a reader starts."""
    images = what if isinstance(what, list) else [what]
    blobs: dict[str, bytes] = {}
    for image in images:
        blobs.update(image.blobs())
    if isinstance(what, list):
        top, media = index_blob(images), MEDIA_OCI_INDEX
    else:
        top, media = what.manifest_blob(), MEDIA_OCI_MANIFEST
    blobs[sha256_digest(top)] = top
    return blobs, {"mediaType": media, "digest": sha256_digest(top), "size": len(top)}


def write_layout(dest: str | os.PathLike, tagged: dict[str, Image | list[Image]]) -> Path:
    """Write an OCI layout directory holding each tag: an Image (one manifest) or a list (an index)."""
    dest = Path(dest)
    (dest / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entries = []
    for tag, what in tagged.items():
        blobs, top = tag_blobs(what)
        for digest, data in blobs.items():
            path = dest / "blobs" / "sha256" / digest.split(":")[1]
            if not path.exists():
                path.write_bytes(data)
        entries.append(dict(top, annotations={REF_NAME: tag}))
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX,
                                                 "manifests": entries}, indent=2))
    return dest


# ---------------------------------------------------------------------------------------------
# The lab's images


@functools.lru_cache(maxsize=1)
def busybox_image() -> Image:
    """The embedded busybox root filesystem as a one-layer image that runs `sh`."""
    from labctl.images.labimage import ensure_busybox_rootfs
    layer = Layer(tar_directory(ensure_busybox_rootfs()))
    return Image([layer], config={"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"],
                                  "WorkingDir": "/"})


def whiteout_image() -> Image:
    """Two layers on top of busybox: the top one deletes a file (whiteout) and replaces a directory
    (opaque), the cases step 4 makes visible.

      layer 2 (base+): /etc/motd, /srv/data/{old-1.txt, old-2.txt}, /srv/keep.txt
      layer 3 (top):   /etc/.wh.motd (deletes /etc/motd), /srv/data/.wh..wh..opq + /srv/data/new.txt
    """
    base = busybox_image()
    middle = Layer(tar_entries([
        FileEntry("etc", "dir"), FileEntry("etc/motd", data=b"Welcome to the lower layer\n"),
        FileEntry("srv", "dir"), FileEntry("srv/keep.txt", data=b"kept from the lower layer\n"),
        FileEntry("srv/data", "dir"), FileEntry("srv/data/old-1.txt", data=b"old one\n"),
        FileEntry("srv/data/old-2.txt", data=b"old two\n")]))
    top = Layer(tar_entries([
        FileEntry("etc", "dir"), FileEntry("etc/.wh.motd"),
        FileEntry("srv", "dir"), FileEntry("srv/data", "dir"), FileEntry("srv/data/.wh..wh..opq"),
        FileEntry("srv/data/new.txt", data=b"only in the top layer\n")]))
    return Image(base.layers + [middle, top], config=dict(base.config, Cmd=["ls", "-R", "/srv"]))


def multiplatform_images() -> list[Image]:
    """An index with amd64 (the busybox image) and arm64 entries. The arm64 image holds only a marker
    file: it exists so a puller has to choose, and is never run here."""
    amd64 = busybox_image()
    arm64 = Image([Layer(tar_entries([FileEntry("etc", "dir"),
                                      FileEntry("etc/platform", data=b"linux/arm64/v8\n")]))],
                  architecture="arm64", variant="v8", config={"Cmd": ["cat", "/etc/platform"]})
    return [amd64, arm64]


def lab_images() -> dict[str, Image | list[Image]]:
    """{name -> image or index}: what `labctl prepare` imports (as localhost/NAME:latest) and the lab
    registry serves (as lab/NAME:latest). In the OCI layout, NAME is the ref name: `oci:DIR:NAME`."""
    return {"busybox": busybox_image(), "layered": whiteout_image(), "multiarch": multiplatform_images()}


def tagged_entries(index: dict) -> dict[str, dict]:
    """{tag: descriptor} from a layout's index.json document (entries without a ref name are keyed by digest)."""
    return {m.get("annotations", {}).get(REF_NAME, m["digest"]): m for m in index.get("manifests", [])}


def read_layout_index(layout: str | os.PathLike) -> dict[str, dict]:
    """{tag: descriptor} from an OCI layout directory's index.json."""
    return tagged_entries(json.loads((Path(layout) / "index.json").read_text()))


def layout_blob(layout: str | os.PathLike, digest: str) -> bytes:
    _, hexpart = imagestore.split_digest(digest)
    return (Path(layout) / "blobs" / "sha256" / hexpart).read_bytes()
