"""An image reference -> what a container needs from it: the store's reference and the run config.

The image store (steps 4 and 5) keeps each image's manifest and config; overlay.ContainerRoot mounts
the container's root filesystem from it (the layers, unpacked once per diff_id and shared, under a
writable layer of the container's own). The lab's own images (busybox, layered, ...) are imported on
first use, as `labctl prepare` does, so `labctl run busybox` works on a fresh state directory.
"""
from __future__ import annotations

from dataclasses import dataclass

from labctl.errors import LabError

LAB_IMAGES = ("busybox", "layered", "multiarch")


@dataclass
class RunnableImage:
    reference: str        # as stored, e.g. localhost/busybox:latest
    digest: str           # the image manifest's digest
    config: dict          # the image config's "config" object: Env, Cmd, Entrypoint, WorkingDir, User


def _lab_image_name(reference: str) -> str | None:
    name = reference.removeprefix("localhost/").removesuffix(":latest")
    return name if name in LAB_IMAGES else None


def open_image(reference: str, store=None) -> RunnableImage:
    """Find the image in the store, trying the names `labctl images` shows (NAME, NAME:latest,
    localhost/NAME:latest, docker.io/library/NAME:latest)."""
    from labctl.images.reference import store_names
    from labctl.images.store import ImageStore
    store = store or ImageStore()
    for attempt in range(2):
        refs = store.refs()
        for name in store_names(reference):
            if name in refs:
                manifest = store.read_json(refs[name])
                config = store.read_json(manifest["config"]["digest"])
                return RunnableImage(name, refs[name], config.get("config") or {})
        if attempt == 0 and _lab_image_name(reference):
            from labctl.images import archive as imageimport
            imageimport.import_lab_images(store)
        else:
            break
    raise LabError(f"no image {reference!r} in the store",
                   "`labctl images` lists what is there; `labctl pull` or `labctl prepare` brings images in")
