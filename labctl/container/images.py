"""An image reference -> what a container needs from it: the run config and the layer directories.

The image store (steps 4 and 5) keeps each image's manifest and config; its layers are unpacked once
per diff_id and shared by every container, which stacks them as overlayfs lower directories under a
writable layer of its own. Before `labctl prepare` has imported anything, the embedded busybox root
filesystem stands in for `busybox` as a one-layer image (the same files the lab's busybox image holds).
"""
from __future__ import annotations

from dataclasses import dataclass

from labctl.errors import LabError

#: The config of the lab's busybox image (labctl/ocilayout.py builds the same one).
BUSYBOX_CONFIG = {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"], "WorkingDir": "/"}
BUSYBOX_NAMES = ("busybox", "busybox:latest", "localhost/busybox", "localhost/busybox:latest")


@dataclass
class RunnableImage:
    reference: str
    digest: str
    config: dict          # the image config's "config" object: Env, Cmd, Entrypoint, WorkingDir, User
    lowerdirs: list[str]  # unpacked layers, topmost first (overlayfs lowerdir order)


def open_image(reference: str) -> RunnableImage:
    """Find the image in the store (trying the names `labctl images` shows), unpack its layers once."""
    image = _from_store(reference)
    if image:
        return image
    if reference in BUSYBOX_NAMES:
        from labctl.labimage import ensure_busybox_rootfs
        return RunnableImage(reference, "embedded", dict(BUSYBOX_CONFIG), [str(ensure_busybox_rootfs())])
    raise LabError(f"no image {reference!r} in the store",
                   "`labctl images` lists what is there; `labctl pull` or `labctl prepare` brings images in")


def _candidates(reference: str) -> list[str]:
    names = [reference]
    if ":" not in reference.rsplit("/", 1)[-1] and "@" not in reference:
        names.append(reference + ":latest")
    if "/" not in reference:
        names += [f"localhost/{n}" for n in list(names)] + [f"docker.io/library/{n}" for n in list(names)]
    return names


def _from_store(reference: str) -> RunnableImage | None:
    try:
        from labctl import layers  # step 4 (overlay branch): unpacked layers by diff_id
    except ImportError:
        return None
    from labctl.imagestore import ImageStore
    store = ImageStore()
    refs = store.refs()
    for name in _candidates(reference):
        digest = refs.get(name) or (name if name.startswith("sha256:") and store.has_blob(name) else None)
        if digest:
            manifest = store.read_json(digest)
            config = store.read_json(manifest["config"]["digest"])
            dirs = layers.ensure_unpacked(store, manifest, config)
            return RunnableImage(name, digest, config.get("config") or {}, [str(d) for d in reversed(dirs)])
    return None
