"""The build cache, keyed as Docker's classic builder keys it.

A step's result is reused when the same instruction runs on the same parent:

    key = sha256( parent image config digest  +  the instruction's text after substitution
                  +  for COPY/ADD, the hash of the copied files (context.content_hash) )

The parent's config digest stands for everything before: its layers (rootfs.diff_ids), its Env, its
history. So a change at step 3 changes step 3's result, hence step 4's parent, hence every key after
it: the steps from the change on run again, the steps before it come from the cache.

An entry is one small JSON file, <state>/build-cache/<key hex>.json, written atomically (state.py):
the resulting config (as bytes, so its digest is the same on every hit) and the manifest's layer
descriptors. It is only valid while the store holds every layer blob it names: `labctl rmi` and
garbage collection remove blobs, and an entry whose blobs are gone is a miss (and is deleted), never
an image with a hole in it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from labctl import state
from labctl.images.store import ImageStore

CACHE_DIR = "build-cache"


def cache_key(parent_config_digest: str, text: str, content: str = "") -> str:
    return hashlib.sha256(f"{parent_config_digest}\n{text}\n{content}".encode()).hexdigest()


@dataclass
class Entry:
    config: bytes            # the image config after the step, byte for byte
    layers: list[dict]       # the manifest's layer descriptors after the step
    layer: dict | None       # the descriptor this step added (None: a config-only step)


class BuildCache:
    def __init__(self, store: ImageStore, root: str | os.PathLike | None = None):
        self.store = store
        self.root = Path(root) if root else state.subdir(CACHE_DIR)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> Entry | None:
        try:
            data = json.loads(self._path(key).read_text())
            entry = Entry(data["config"].encode(), data["layers"], data.get("layer"))
        except (FileNotFoundError, ValueError, KeyError):
            return None
        if not all(self.store.has_blob(d["digest"]) for d in entry.layers):
            self.forget(key)   # a layer was garbage-collected: the entry no longer describes an image
            return None
        return entry

    def put(self, key: str, entry: Entry) -> None:
        state.atomic_write_json(self._path(key), {"config": entry.config.decode(), "layers": entry.layers,
                                                  "layer": entry.layer}, durable=False)

    def forget(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def prune(self) -> int:
        """Drop every entry whose layers are gone; returns how many."""
        dropped = 0
        for path in self.root.glob("*.json"):
            if self.get(path.stem) is None:
                dropped += 1
        return dropped
