"""Exporting images from the store as a docker-archive (`docker save`), the format archive.py imports;
and as an OCI layout directory (oci_layout), what umoci and skopeo read.

    manifest.json                       [{"Config": "<hex>.json", "RepoTags": [...], "Layers": ["<hex>/layer.tar", ...]}]
    <config hex>.json                   the image config, byte for byte (its sha256 is the image ID)
    <diff_id hex>/layer.tar             each layer uncompressed: its sha256 is the diff_id the config lists

The archive is written as a stream (tarfile's "w|" mode) to a callback, so a daemon can send it while
it is being made, without a temporary file.
"""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Callable

from labctl.errors import LabError
from labctl.images.store import ImageStore


class _Sink(io.RawIOBase):
    def __init__(self, put: Callable[[bytes], None]):
        self.put = put

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.put(bytes(data))
        return len(data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _layer_tar(store: ImageStore, descriptor: dict) -> bytes:
    blob = store.read_blob(descriptor["digest"])
    media = descriptor.get("mediaType", "")
    if "gzip" in media or blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if "zstd" in media:
        raise LabError(f"layer {descriptor['digest'][:19]} is zstd-compressed", "save an image with gzip layers")
    return blob


def docker_archive(store: ImageStore, images: list[tuple[str, list[str]]], put: Callable[[bytes], None]) -> None:
    """images: [(manifest digest, [references to list as its RepoTags])] -> a docker-archive, to put()."""
    entries = []
    with tarfile.open(fileobj=_Sink(put), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for manifest_digest, tags in images:
            manifest = store.read_json(manifest_digest)
            config_digest = manifest["config"]["digest"]
            config = store.read_blob(config_digest)
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
            _add(tar, f"{config_digest[7:]}.json", config)
            layers = []
            for descriptor, diff_id in zip(manifest["layers"], diff_ids):
                path = f"{diff_id[7:]}/layer.tar"
                _add(tar, path, _layer_tar(store, descriptor))
                layers.append(path)
            entries.append({"Config": f"{config_digest[7:]}.json", "RepoTags": tags, "Layers": layers})
        _add(tar, "manifest.json", json.dumps(entries).encode())


def oci_layout(store: ImageStore, manifest_digest: str, dest, tag: str = "latest"):
    """An image of the store as an OCI layout directory (oci-layout, index.json naming `tag`, blobs/sha256/),
    the blobs copied byte for byte, so `umoci unpack --image DEST:TAG` or `skopeo copy oci:DEST:TAG` read it."""
    import shutil
    from pathlib import Path
    from labctl.images.mediatypes import MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST
    from labctl.images.ocilayout import REF_NAME
    dest = Path(dest)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    manifest = store.read_json(manifest_digest)
    for digest in [manifest_digest, manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]:
        shutil.copyfile(store.blob_path(digest), blobs / digest.split(":")[1])
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {"mediaType": manifest.get("mediaType", MEDIA_OCI_MANIFEST), "digest": manifest_digest,
             "size": store.blob_path(manifest_digest).stat().st_size, "annotations": {REF_NAME: tag}}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX,
                                                 "manifests": [entry]}))
    return dest


def save(reference: str, path, fmt: str = "docker-archive", store: ImageStore | None = None) -> tuple[str, str]:
    """`labctl save`: the image as a docker-archive file (`docker save`) or an OCI layout directory
    (`--format oci`, what `skopeo copy oci:DIR:TAG` and `umoci unpack` read). Written beside `path` under a
    temporary name and renamed into place: an interrupted save leaves nothing half-written at `path`."""
    import os
    import shutil
    from pathlib import Path
    store = store or ImageStore()
    found, digest = store.lookup(reference)
    path = Path(path)
    if path.exists():
        raise LabError(f"{path} exists", "give a new path (the save never overwrites)")
    if not path.parent.is_dir():
        raise LabError(f"{path.parent} is not a directory", "create it first, or give another path")
    tmp = path.parent / f".{path.name}.saving-{os.getpid()}"
    try:
        if fmt == "oci":
            oci_layout(store, digest, tmp, found.rsplit(":", 1)[-1])
        else:
            with open(tmp, "wb") as f:
                docker_archive(store, [(digest, [found])], f.write)
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
    return found, digest
