"""What an image is made of, digest by digest: `labctl image inspect` and step 4's demo.

In the store a reference leads to the layer directories through three content-addressed hops:

    refs.json            reference          -> manifest digest
    blobs/sha256/<hex>   the manifest       -> the config's digest, and each layer's blob digest
                                               (the compressed tar, as a registry serves it)
    blobs/sha256/<hex>   the config         -> each layer's diff_id (sha256 of the uncompressed tar)
    layers/<hex>         a diff_id          -> the unpacked layer: an OverlayFS lower directory

Docker's names for the same digests: the config digest is the image's "Id", the manifest digest its
"RepoDigests" entry, the diff_ids "RootFS.Layers", and the directories "GraphDriver.Data.LowerDir".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labctl.images.store import ImageStore


@dataclass(frozen=True)
class Layer:
    blob: str            # digest of the compressed layer, as the manifest lists it
    size: int            # its size in bytes
    diff_id: str         # digest of the uncompressed tar, as the config lists it
    directory: Path      # where the store unpacks it (named by the diff_id)

    @property
    def unpacked(self) -> bool:
        return self.directory.is_dir()


@dataclass(frozen=True)
class ImageLayers:
    reference: str
    manifest_digest: str
    config_digest: str
    layers: list[Layer]  # bottom first, as the manifest lists them (overlay's lowerdir wants top first)


def describe(store: ImageStore, reference: str) -> ImageLayers:
    """Follow the reference to its manifest, config and layers; unpacks nothing."""
    digest = store.resolve(reference)
    manifest = store.read_json(digest)
    sizes = {layer["digest"]: layer["size"] for layer in manifest.get("layers", [])}
    layers = [Layer(blob, sizes.get(blob, 0), diff_id, store.layer_path(diff_id))
              for blob, diff_id in store.image_layers(digest)]
    return ImageLayers(reference, digest, manifest["config"]["digest"], layers)
