"""Where the image store's blobs are known to live on registries: what a push may mount instead of upload.

A registry stores each blob once and links it into every repository that uses it. A client that knows
the registry already holds a blob in repository A can ask it to link the blob into repository B
(`POST /v2/B/blobs/uploads/?mount=<digest>&from=A`, a cross-repository mount) instead of sending the
bytes again. Docker keeps the same knowledge (its "distribution metadata": which blob came from, or
went to, which repository). Two sources say where a blob lives:

  references   an image pulled as REGISTRY/REPO:TAG came from REGISTRY/REPO, so its blobs are there
  pushes       <state>/blob-locations.json: {digest: ["REGISTRY/REPO", ...]}, newest last, written by
               every push (atomically, under a lock: two pushes at once both keep their entries)

A location can be stale (the registry was wiped): the registry then answers the mount with 202 and an
upload session, and the push uploads the blob after all. Nothing here is trusted, only tried.
"""
from __future__ import annotations

import contextlib
import json

from labctl import state
from labctl.errors import LabError
from labctl.images import reference as references
from labctl.images.store import ImageStore

KEEP = 8     # repositories remembered per blob


def _path():
    return state.state_dir() / "blob-locations.json"


def recorded() -> dict[str, list[str]]:
    try:
        return json.loads(_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def remember(digests: list[str], registry: str, repository: str) -> None:
    """These blobs are now in REGISTRY/REPOSITORY (they were found, mounted or uploaded there)."""
    if not digests:
        return
    where = f"{registry}/{repository}"
    with state.locked("image-refs"):       # the store's metadata lock: these are metadata too
        known = recorded()
        for digest in digests:
            places = [p for p in known.get(digest, []) if p != where] + [where]
            known[digest] = places[-KEEP:]
        state.atomic_write_json(_path(), known)


def mount_sources(store: ImageStore, digests: list[str], registry: str, repository: str) -> dict[str, str]:
    """{digest: another repository on the same registry that holds it}, for the blobs a location is known
    for. References (what was pulled from there) first, then the recorded pushes, newest first."""
    wanted, found = set(digests), {}
    for name, manifest_digest in store.refs().items():
        with contextlib.suppress(LabError, KeyError, ValueError):
            ref = references.parse(name)
            if ref.registry != registry or ref.repository == repository:
                continue
            manifest = store.read_json(manifest_digest)
            for d in [manifest["config"]] + manifest.get("layers", []):
                if d["digest"] in wanted:
                    found.setdefault(d["digest"], ref.repository)
    for digest, places in recorded().items():
        if digest in wanted and digest not in found:
            for place in reversed(places):
                host, _, repo = place.partition("/")
                if host == registry and repo != repository:
                    found[digest] = repo
                    break
    return found
