"""Importing images into the store without a registry: OCI layouts, oci-archive and docker-archive tarballs.

    labctl import DIR[:NAME]            an OCI image layout directory (skopeo copy ... oci:DIR:NAME, umoci)
    labctl import FILE.tar[:NAME]       an oci-archive (a tarred layout) or a docker-archive (docker save,
                                        skopeo copy ... docker-archive:FILE)

Every blob goes through ImageStore.blob_writer, so its sha256 and size are checked against the
descriptor that names it; every layer is unpacked once and checked against its diff_id; only then does
the reference point at the manifest. All of it happens under the shared "image-store" lock, so garbage
collection (`labctl rmi`) never removes a blob an import is about to reference.

An index (several platforms) is resolved to the manifest for this machine (linux/amd64 here).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from labctl import state
from labctl.errors import LabError
from labctl.images import mediatypes, ocilayout, reference as references
from labctl.images.mediatypes import MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_LAYER_TAR, MEDIA_DOCKER_MANIFEST
from labctl.images.store import ImageStore, sha256_digest


@dataclass
class Imported:
    reference: str
    manifest_digest: str
    layers: int
    skipped: bool = False   # already in the store: nothing was written


def default_reference(name: str) -> str:
    """`busybox` -> `localhost/busybox:latest`; `lab/app:v1` stays as it is, with a tag added if missing.
    The result must be a reference as Docker's grammar has it (reference.py): else InvalidReference."""
    if "/" not in name.split(":")[0]:
        name = "localhost/" + name
    if ":" not in name.rsplit("/", 1)[-1] and "@" not in name:
        name += ":latest"
    references.parse(name)
    return name


# What reading an archive that is cut short or damaged raises (tarfile, gzip, zlib), or reading documents
# that lack a field or have one of the wrong type: each becomes one line naming the archive
DAMAGED = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, KeyError, TypeError, AttributeError)


def _parse_json(data: str | bytes, what: str) -> dict | list:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise LabError(f"{what} is not valid JSON ({exc})", "the image is damaged: export it again") from None


# ---------------------------------------------------------------------------------------------
# Where blobs come from: a function that opens a blob by digest.

BlobOpener = Callable[[str], BinaryIO]


def _layout_opener(layout: Path) -> BlobOpener:
    def open_blob(digest: str) -> BinaryIO:
        hexpart = digest.split(":", 1)[1]
        if "/" in hexpart or hexpart in ("", ".", ".."):
            raise LabError(f"bad digest {digest!r} in the layout", "the layout is malformed")
        try:
            return open(layout / "blobs" / "sha256" / hexpart, "rb")
        except FileNotFoundError:
            raise LabError(f"blob {digest} is missing from {layout}", "the layout is incomplete: copy it again") from None
    return open_blob


def _tar_opener(tar: tarfile.TarFile, prefix: str = "") -> Callable[[str], BinaryIO]:
    members = {m.name.lstrip("./").lstrip("/"): m for m in tar.getmembers() if m.isfile()}

    def open_member(name: str) -> BinaryIO:
        m = members.get(prefix + name)
        if m is None:
            raise LabError(f"{name} is missing from the archive", "the archive is incomplete: export it again")
        return tar.extractfile(m)
    return open_member


def _store_blob(store: ImageStore, opener: BlobOpener, descriptor: dict, what: str, stored: list[str]) -> None:
    """Copy one blob into the store (verified), unless it is there; `stored` collects what was added."""
    digest = descriptor["digest"]
    if store.has_blob(digest):
        return
    with opener(digest) as src, store.blob_writer(digest, descriptor.get("size"), what) as w:
        while chunk := src.read(1 << 20):
            w.write(chunk)
    stored.append(digest)


def _read_verified(opener: BlobOpener, descriptor: dict) -> bytes:
    with opener(descriptor["digest"]) as f:
        data = f.read()
    if sha256_digest(data) != descriptor["digest"]:
        from labctl.images.store import DigestMismatch
        raise DigestMismatch(descriptor["digest"], sha256_digest(data), "manifest")
    return data


def _select_manifest(opener: BlobOpener, descriptor: dict) -> dict:
    """Follow an index to the manifest for this machine's platform."""
    if descriptor.get("mediaType") not in mediatypes.INDEX_TYPES:
        return descriptor
    index = _parse_json(_read_verified(opener, descriptor), f"the index {descriptor['digest']}")
    return mediatypes.choose_manifest(index, mediatypes.host(), fix="import an image built for this machine")


def import_manifest(store: ImageStore, opener: BlobOpener, descriptor: dict, reference: str) -> Imported:
    """Store an image (manifest or index descriptor) from `opener`, unpack its layers, point `reference`
    at it. Skips everything when the reference already points at this manifest with its layers unpacked.
    An import that fails removes the blobs it stored: "nothing was stored" is then true."""
    descriptor = _select_manifest(opener, descriptor)
    digest = descriptor["digest"]
    stored: list[str] = []
    try:
        with state.locked("image-store", shared=True, label="the image store"):
            if store.refs().get(reference) == digest and store.has_blob(digest):
                pairs = store.image_layers(digest)
                if all(store.has_layer(diff_id) for _, diff_id in pairs):
                    return Imported(reference, digest, len(pairs), skipped=True)
            manifest = _parse_json(_read_verified(opener, descriptor), f"the manifest {digest}")
            _store_blob(store, opener, manifest["config"], "config", stored)
            for layer in manifest.get("layers", []):
                _store_blob(store, opener, layer, "layer", stored)
            _store_blob(store, opener, descriptor, "manifest", stored)
            store.ensure_layers(digest)
            store.set_ref(reference, digest)
    except BaseException:
        store.discard_blobs(stored)   # after the shared lock is released: it takes it exclusively
        raise
    return Imported(reference, digest, len(manifest.get("layers", [])))


def import_layout(store: ImageStore, layout: str | os.PathLike, name: str | None = None,
                  reference: str | None = None, opener: BlobOpener | None = None,
                  index: dict | None = None) -> list[Imported]:
    """Import one tag (`name`) of an OCI layout, or every tag when name is None."""
    layout = Path(layout)
    if index is None:
        try:
            index = _parse_json((layout / "index.json").read_text(), f"{layout}/index.json")
        except FileNotFoundError:
            raise LabError(f"{layout} is not an OCI image layout (no index.json)",
                           "give a directory made by `skopeo copy ... oci:DIR:NAME` or umoci") from None
    opener = opener or _layout_opener(layout)
    entries = ocilayout.tagged_entries(index)
    if name is not None:
        if name not in entries:
            raise LabError(f"no image named {name!r} in {layout} (it has: {', '.join(entries) or 'none'})",
                           f"use {layout}:NAME with one of those names")
        entries = {name: entries[name]}
    if reference and len(entries) != 1:
        raise LabError(f"{layout} holds {len(entries)} images and --name names one",
                       f"pick one with {layout}:NAME")
    return [import_manifest(store, opener, desc, reference or default_reference(tag))
            for tag, desc in entries.items()]


def import_docker_archive(store: ImageStore, tar: tarfile.TarFile, reference: str | None = None) -> list[Imported]:
    """`docker save` / skopeo docker-archive: manifest.json lists the config and uncompressed layer tars.
    The lab stores them as a Docker schema 2 manifest whose layer digests are the tars' own sha256."""
    member = _tar_opener(tar)
    entries = _parse_json(member("manifest.json").read(), "the archive's manifest.json")
    out = []
    for entry in entries:
        config = member(entry["Config"]).read()
        config_desc = {"mediaType": MEDIA_DOCKER_CONFIG, "digest": sha256_digest(config), "size": len(config)}
        store_blobs = {config_desc["digest"]: lambda data=config: io.BytesIO(data)}
        layers = []
        for path in entry["Layers"]:
            with member(path) as f:   # hash once to learn the digest (= diff_id for an uncompressed tar)
                h, size = hashlib.sha256(), 0
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
            digest = "sha256:" + h.hexdigest()
            layers.append({"mediaType": MEDIA_DOCKER_LAYER_TAR, "digest": digest, "size": size})
            store_blobs[digest] = lambda path=path: member(path)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_DOCKER_MANIFEST, "config": config_desc,
                               "layers": layers}, sort_keys=True, separators=(",", ":")).encode()
        manifest_desc = {"mediaType": MEDIA_DOCKER_MANIFEST, "digest": sha256_digest(manifest),
                         "size": len(manifest)}
        store_blobs[manifest_desc["digest"]] = lambda: io.BytesIO(manifest)
        tags = entry.get("RepoTags") or []
        ref = reference or (default_reference(tags[0]) if tags else None)
        if ref is None:
            raise LabError("the docker archive has no RepoTags", "give the image a name with --name REF")
        out.append(import_manifest(store, lambda d: store_blobs[d](), manifest_desc, ref))
    return out


def import_path(store: ImageStore, spec: str, reference: str | None = None) -> list[Imported]:
    """`DIR[:NAME]` (OCI layout) or `FILE[:NAME]` (oci-archive or docker-archive tarball)."""
    path, name = spec, None
    if not os.path.exists(spec) and ":" in spec:
        path, name = spec.rsplit(":", 1)
    if not os.path.exists(path):
        raise LabError(f"{path} does not exist", "give an OCI layout directory or an image tarball")
    if reference is not None:
        references.parse(reference)     # before anything is read: a bad --name is the user's to fix
    try:
        if os.path.isdir(path):
            return import_layout(store, path, name, reference)
        return _import_tar(store, path, name, reference)
    except DAMAGED as exc:
        # LabErrors (a digest mismatch, a rejected layer) say what is wrong themselves; these are
        # the archive's own faults: cut short, not gzip, a member missing, a field of the wrong type
        raise LabError(f"{path} is truncated or damaged ({exc.__class__.__name__}: {exc}); nothing was stored",
                       "export the image again, e.g. `skopeo copy ... oci-archive:FILE`") from None


def _import_tar(store: ImageStore, path: str, name: str | None, reference: str | None) -> list[Imported]:
    try:
        tar = tarfile.open(path, "r:*")
    except tarfile.TarError:
        raise LabError(f"{path} is neither a directory nor a tar archive",
                       "export the image with `skopeo copy ... oci-archive:FILE` or `docker-archive:FILE`") from None
    with tar:
        names = {m.name.lstrip("./") for m in tar.getmembers()}
        if "index.json" in names and "oci-layout" in names:
            opener = _tar_opener(tar)
            index = _parse_json(opener("index.json").read(), f"{path}: index.json")
            return import_layout(store, path, name, reference, index=index,
                                 opener=lambda d: opener("blobs/sha256/" + d.split(":", 1)[1]))
        if "manifest.json" in names:
            return import_docker_archive(store, tar, reference)
    raise LabError(f"{path} is neither an oci-archive nor a docker-archive", "export it again with skopeo")


def import_lab_images(store: ImageStore | None = None) -> list[Imported]:
    """The lab's own images (labctl/images/ocilayout.py) as localhost/NAME:latest; quick when already there."""
    store = store or ImageStore()
    out = []
    for name, what in ocilayout.lab_images().items():
        blobs, desc = ocilayout.tag_blobs(what)
        out.append(import_manifest(store, lambda d: io.BytesIO(blobs[d]), desc, default_reference(name)))
    return out
