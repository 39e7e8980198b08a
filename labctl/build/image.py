"""The image a build is making: its config and layers, committed step by step, stored at the end.

Docker's classic builder commits an image after every instruction; so does this one, in memory: each
step adds a history entry (and a layer, or "empty_layer": true) and serialises the config again, whose
new digest is the parent the next step's cache key names. Only before a RUN (whose container needs an
image in the store) and at the end are the config and manifest written to the store.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from labctl.build import diff
from labctl.errors import LabError
from labctl.images.mediatypes import MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST
from labctl.images.store import ImageStore, sha256_digest


@dataclass
class Step:
    number: int
    instruction: str
    cached: bool = False
    seconds: float = 0.0
    layer: str | None = None     # the blob digest of the layer this step added, None if config only


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def created_date(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class Image:
    """The image being built: its config (the whole JSON) and its manifest's layer descriptors."""

    def __init__(self, config: bytes, layers: list[dict]):
        self.raw = config
        self.config = json.loads(config)
        self.layers = layers

    @property
    def digest(self) -> str:
        return sha256_digest(self.raw)

    @property
    def run_config(self) -> dict:
        cfg = self.config.get("config")
        if not isinstance(cfg, dict):
            cfg = self.config["config"] = {}
        return cfg

    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.run_config.get("Env") or [] if "=" in e)

    def commit(self, created_by: str, epoch: int, layer: dict | None = None, diff_id: str | None = None) -> None:
        """A new history entry (and layer); the config is serialised again: a new config digest."""
        entry = {"created": created_date(epoch), "created_by": created_by}
        if layer is None:
            entry["empty_layer"] = True
        else:
            self.layers = self.layers + [layer]
            self.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(diff_id)
        self.config["created"] = created_date(epoch)
        self.config.setdefault("history", []).append(entry)
        self.raw = canonical(self.config)

    def manifest(self) -> bytes:
        return canonical({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
                          "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": self.digest, "size": len(self.raw)},
                          "layers": self.layers})

    def store(self, store: ImageStore) -> str:
        """Config and manifest into the store (the layers are there already); the manifest digest."""
        store.put_blob(self.raw, what="config")
        return store.put_blob(self.manifest(), what="manifest")


def scratch() -> Image:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return Image(canonical({"architecture": arch, "os": "linux", "config": {},
                            "rootfs": {"type": "layers", "diff_ids": []}, "history": []}), [])


def base_image(store: ImageStore, name: str, progress: Callable[[str], None]) -> Image:
    """FROM: the image from the store, the lab's own imported on first use, else pulled."""
    if name == "scratch":
        return scratch()
    from labctl.containers import images
    try:
        found = images.open_image(name, store)
        digest = found.digest
    except LabError:
        from labctl.images import distribution
        progress(f"Pulling {name} (not in the store)")
        digest = distribution.pull(name, store=store, progress=False).digest
    manifest = store.read_json(digest)
    return Image(store.read_blob(manifest["config"]["digest"]), list(manifest.get("layers", [])))


def lower_dirs(store: ImageStore, image: Image) -> list[Path]:
    """The image's layers, unpacked (once per diff_id), bottom first."""
    return [store.ensure_layer(layer["digest"], diff_id)
            for layer, diff_id in zip(image.layers, image.config.get("rootfs", {}).get("diff_ids", []))]


def store_layer(store: ImageStore, upper: Path, epoch: int, skip: frozenset[str] = frozenset()) -> diff.LayerBlob:
    """upper -> a gzip layer blob in the store, then unpacked by step 4's unpacker (which checks the
    diff_id again): the next step's overlay takes it as a lower layer."""
    with store.blob_writer(what="layer") as writer:
        blob = diff.write_layer_blob(upper, writer, epoch, skip)
    store.ensure_layer(blob.digest, blob.diff_id)
    return blob
