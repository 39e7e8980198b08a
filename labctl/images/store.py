"""The content-addressed image store: blobs by sha256 digest, and references (name:tag -> manifest digest).

Layout under <state>/images:
    blobs/sha256/<hex>      every blob: manifests, indexes, configs, compressed layers
    refs.json               {"docker.io/library/busybox:latest": "sha256:..."} (image manifest digests)
    incoming/               blobs being written; a blob appears under blobs/ only once verified
    layers/<hex>/           each layer unpacked once, named by its diff_id (sha256 of the uncompressed
                            tar), shared by every image and container that uses it (OverlayFS lowerdirs)
    tmp/                    layers being unpacked; renamed into layers/ only when the whole layer passed

Every write is atomic (temporary file, fsync, rename) and every blob is checked against its digest
before it becomes visible, so a reader never sees a half-written or corrupted blob. refs.json is
changed under an exclusive lock, so two lab commands can use the store at once. Container root
filesystems (labctl/kernel/overlay.py) mount the unpacked layers read-only as OverlayFS lower layers.

Writers (import, pull) hold `state.locked("image-store", shared=True)` from their first blob to their
set_ref; garbage collection takes it exclusively. The usual sequence for a writer:

    with state.locked("image-store", shared=True):
        with store.blob_writer(digest, size) as w: ...     # every blob: layers, config, manifest
        store.ensure_layers(manifest_digest)                # unpack (once per diff_id), verified
        store.set_ref("localhost/busybox:latest", manifest_digest)
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labctl import state
from labctl.errors import LabError

class DigestMismatch(LabError):
    def __init__(self, expected: str, actual: str, what: str = "blob"):
        super().__init__(f"{what} digest mismatch: expected {expected}, got {actual}; nothing was stored",
                         "the data was corrupted on the way or at the source: pull again, or check the registry")
        self.expected, self.actual = expected, actual


class ImageNotFound(LabError):
    pass


def sha256_digest(data: bytes) -> str:
    import hashlib   # here and in BlobWriter, not at the top: `labctl run` reads blobs, never hashes them
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split_digest(digest: str) -> tuple[str, str]:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise LabError(f"not a sha256 digest: {digest!r}", "digests look like sha256:<64 hex digits>")
    return algorithm, hexpart


class BlobWriter:
    """A file being written into the store; hashes as it goes (see ImageStore.blob_writer)."""

    def __init__(self, f):   # a binary file open for writing
        import hashlib
        self._f = f
        self._hash = hashlib.sha256()
        self.size = 0
        self.digest: str | None = None

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._f.write(data)

    @property
    def current_digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@dataclass
class ImageInfo:
    reference: str
    digest: str
    size: int


class ImageStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else state.state_dir() / "images"
        for sub in ("blobs/sha256", "incoming", "layers", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- blobs -------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        _, hexpart = split_digest(digest)
        return self.root / "blobs" / "sha256" / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    @contextlib.contextmanager
    def blob_writer(self, expected_digest: str | None = None, expected_size: int | None = None,
                    what: str = "blob") -> Iterator[BlobWriter]:
        """Stream a blob in: yields a writer; on leaving the block the size and sha256 are checked and
        the blob is renamed into place. Any error (or a mismatch) removes the partial file."""
        if expected_digest:
            split_digest(expected_digest)
        import tempfile
        fd, tmp = tempfile.mkstemp(dir=self.root / "incoming", prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as f:
                writer = BlobWriter(f)
                yield writer
                f.flush()
                os.fsync(f.fileno())
            if expected_size is not None and writer.size != expected_size:
                raise LabError(f"{what} size mismatch: expected {expected_size} bytes, got {writer.size}; "
                               "nothing was stored", "the transfer was cut short or corrupted: try again")
            actual = writer.current_digest
            if expected_digest and actual != expected_digest:
                raise DigestMismatch(expected_digest, actual, what)
            writer.digest = actual
            final = self.blob_path(actual)
            os.chmod(tmp, 0o644)
            os.rename(tmp, final)  # same content under the same name: a concurrent writer is harmless
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def put_blob(self, data: bytes, expected_digest: str | None = None, what: str = "blob") -> str:
        with self.blob_writer(expected_digest, len(data), what) as w:
            w.write(data)
        return w.digest

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(f"blob {digest} is not in the image store",
                                "pull or import the image again") from None

    def read_json(self, digest: str) -> dict:
        return json.loads(self.read_blob(digest))

    # -- unpacked layers ---------------------------------------------------------------------
    def layer_path(self, diff_id: str) -> Path:
        """Where the layer with this diff_id is (or will be) unpacked: an OverlayFS lower directory."""
        _, hexpart = split_digest(diff_id)
        return self.root / "layers" / hexpart

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_path(diff_id).is_dir()

    def ensure_layer(self, blob_digest: str, diff_id: str) -> Path:
        """Unpack the stored layer blob once: into tmp/, checked entry by entry and against the diff_id
        (labctl/images/layers.py), then renamed to layers/<diff_id hex>. A rejected layer leaves nothing; two
        processes unpacking the same layer at once leave one copy (a per-layer lock, then the check)."""
        final = self.layer_path(diff_id)
        if final.is_dir():
            return final
        # imported only now: labctl.images.layers brings tarfile and gzip (~3 ms), and a container whose layers
        # are unpacked already (every `labctl run` after the first) never needs them
        import shutil
        import tempfile
        from labctl.images import layers
        # shared "image-store": garbage collection (exclusive) must not sweep tmp/ under an unpack
        with state.locked("image-store", shared=True), state.locked(f"layer-{split_digest(diff_id)[1][:16]}"):
            if final.is_dir():
                return final
            work = Path(tempfile.mkdtemp(prefix="layer-", dir=self.root / "tmp"))
            try:
                os.chmod(work, 0o755)
                try:
                    blob = open(self.blob_path(blob_digest), "rb")
                except FileNotFoundError:
                    raise ImageNotFound(f"layer blob {blob_digest} is not in the image store",
                                        "pull or import the image again") from None
                with blob:
                    layers.unpack_layer(blob, work, diff_id)
                os.rename(work, final)
            finally:
                if work.exists():
                    shutil.rmtree(work)
        return final

    def image_layers(self, manifest_digest: str) -> list[tuple[str, str]]:
        """[(blob digest, diff_id)] of an image manifest, bottom layer first."""
        manifest = self.read_json(manifest_digest)
        config = self.read_json(manifest["config"]["digest"])
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        blobs = [layer["digest"] for layer in manifest.get("layers", [])]
        if len(diff_ids) != len(blobs):
            raise LabError(f"image {manifest_digest} lists {len(blobs)} layers but {len(diff_ids)} diff_ids",
                           "the image is malformed: rebuild or pull it again")
        return list(zip(blobs, diff_ids))

    def ensure_layers(self, manifest_digest: str) -> list[Path]:
        """Unpack every layer of an image (those not unpacked yet); the directories, bottom first."""
        return [self.ensure_layer(blob, diff_id) for blob, diff_id in self.image_layers(manifest_digest)]

    def layer_dirs(self, reference: str) -> list[Path]:
        """The unpacked layer directories of an image, bottom first (unpacking any that are missing)."""
        return self.ensure_layers(self.resolve(reference))

    # -- references --------------------------------------------------------------------------
    def _refs_path(self) -> Path:
        return self.root / "refs.json"

    def refs(self) -> dict[str, str]:
        try:
            return json.loads(self._refs_path().read_text())
        except FileNotFoundError:
            return {}

    def set_ref(self, reference: str, manifest_digest: str) -> None:
        """Point `reference` at an image manifest (which must already be stored)."""
        if not self.has_blob(manifest_digest):
            raise ImageNotFound(f"manifest {manifest_digest} is not in the store", "store the blobs first")
        with state.locked("image-refs"):
            refs = self.refs()
            refs[reference] = manifest_digest
            state.atomic_write_json(self._refs_path(), refs)

    def remove_ref(self, reference: str) -> str:
        with state.locked("image-refs"):
            refs = self.refs()
            if reference not in refs:
                raise ImageNotFound(f"no image {reference!r} in the store", "`labctl images` lists them")
            digest = refs.pop(reference)
            state.atomic_write_json(self._refs_path(), refs)
        return digest

    def resolve(self, reference: str) -> str:
        """The manifest digest for a reference (or a digest given directly)."""
        if reference.startswith("sha256:") and self.has_blob(reference):
            return reference
        refs = self.refs()
        if reference in refs:
            return refs[reference]
        raise ImageNotFound(f"no image {reference!r} in the store",
                            "`labctl images` lists what is there; pull or import it first")

    def lookup(self, name: str) -> tuple[str, str]:
        """(reference, manifest digest) of an image given as `labctl run` takes it (busybox, NAME:TAG, ...):
        the first of reference.store_names the store holds."""
        from labctl.images.reference import store_names
        refs = self.refs()
        for candidate in store_names(name):
            if candidate in refs:
                return candidate, refs[candidate]
        raise ImageNotFound(f"no image {name!r} in the store", "`labctl images` lists what is there; pull, "
                            "import or build it first")

    # -- images ------------------------------------------------------------------------------
    def manifest(self, reference: str) -> dict:
        return self.read_json(self.resolve(reference))

    def config(self, reference: str) -> dict:
        return self.read_json(self.manifest(reference)["config"]["digest"])

    def images(self) -> list[ImageInfo]:
        out = []
        for ref, digest in sorted(self.refs().items()):
            try:
                manifest = self.read_json(digest)
                size = manifest["config"]["size"] + sum(l["size"] for l in manifest.get("layers", []))
            except (LabError, KeyError, ValueError):
                size = 0
            out.append(ImageInfo(ref, digest, size))
        return out

    def referenced_blobs(self) -> set[str]:
        """Every blob some reference needs: manifests, configs, layers."""
        keep = set()
        for digest in self.refs().values():
            keep.add(digest)
            with contextlib.suppress(LabError, KeyError, ValueError):
                manifest = self.read_json(digest)
                keep.add(manifest["config"]["digest"])
                keep.update(layer["digest"] for layer in manifest.get("layers", []))
        return keep

    def referenced_layers(self) -> set[str]:
        """Every diff_id some reference's image config lists."""
        keep = set()
        for digest in self.refs().values():
            with contextlib.suppress(LabError, KeyError, ValueError):
                keep.update(diff_id for _, diff_id in self.image_layers(digest))
        return keep

    def sweep_leftovers(self) -> tuple[list[Path], list[str]] | None:
        """Remove what a crashed writer left: blobs half-downloaded into incoming/, layers half-unpacked
        into tmp/ (neither was ever visible under blobs/ or layers/). Takes the store's lock
        exclusively without waiting: a running pull or import holds it shared, and its files are not
        leftovers. Returns (what was removed, what could not be and why), or None if a writer runs."""
        import shutil
        removed, failed = [], []
        try:
            with state.locked("image-store", wait=False):
                for sub in ("incoming", "tmp"):
                    for leftover in sorted((self.root / sub).iterdir()):
                        try:
                            if leftover.is_dir() and not leftover.is_symlink():
                                shutil.rmtree(leftover)
                            else:
                                leftover.unlink()
                            removed.append(leftover)
                        except OSError as exc:
                            failed.append(f"{leftover}: {exc.strerror or exc}")
        except BlockingIOError:
            return None
        return removed, failed

    def garbage_collect(self) -> list[str]:
        """Remove blobs no reference needs, and unpacked layers that neither an image nor a container
        root filesystem (labctl/kernel/overlay.py) uses. Returns the removed digests and diff_ids.

        Writers (pull, import) hold `state.locked("image-store", shared=True)` from their first blob
        to their set_ref, so collection, which holds it exclusively, never removes a blob in flight.
        It waits for them at most LABCTL_STORE_LOCK_TIMEOUT seconds, saying who it waits for."""
        with exclusive_store_lock():
            return self._collect()

    def _collect(self) -> list[str]:
        """garbage_collect's work, for a caller that holds the store's lock exclusively."""
        import shutil
        import tempfile
        from labctl.kernel import overlay
        removed = []
        with state.locked("image-refs"):
            keep = self.referenced_blobs()
            for path in (self.root / "blobs" / "sha256").iterdir():
                digest = "sha256:" + path.name
                if digest not in keep:
                    path.unlink()
                    removed.append(digest)
            keep_layers = self.referenced_layers() | overlay.layers_in_use()
            for path in (self.root / "layers").iterdir():
                diff_id = "sha256:" + path.name
                if diff_id not in keep_layers:
                    # rename first, so a crash halfway through never leaves a partial layer under layers/
                    doomed = Path(tempfile.mkdtemp(prefix="gc-", dir=self.root / "tmp"))
                    os.rename(path, doomed / "layer")
                    shutil.rmtree(doomed)
                    removed.append(diff_id)
            for leftover in (self.root / "tmp").iterdir():  # from a crashed unpack: no writer is running
                shutil.rmtree(leftover, ignore_errors=True)
        return removed

    def discard_blobs(self, digests: list[str]) -> None:
        """After a failed pull or import: remove the blobs it stored that no reference needs, so that
        it leaves nothing. Only if no other writer runs (the lock, without waiting): a concurrent pull
        may have found one of them present and be about to reference it; garbage collection gets them then."""
        try:
            with state.locked("image-store", wait=False), state.locked("image-refs"):
                keep = self.referenced_blobs()
                for digest in digests:
                    if digest not in keep:
                        with contextlib.suppress(FileNotFoundError):
                            self.blob_path(digest).unlink()
        except BlockingIOError:
            pass


def exclusive_store_lock():
    """The image store's lock, exclusively (garbage collection, rmi): waits for running writers at most
    $LABCTL_STORE_LOCK_TIMEOUT seconds (default 30), saying who holds it, then fails with one line."""
    timeout = float(os.environ.get("LABCTL_STORE_LOCK_TIMEOUT") or STORE_LOCK_TIMEOUT)
    return state.locked("image-store", timeout=timeout, label="the image store")


STORE_LOCK_TIMEOUT = 30.0


class ImageInUse(LabError):
    pass


def remove_image(store: ImageStore, reference: str, force: bool = False,
                 container_names: dict[str, str] | None = None) -> list[str]:
    """`labctl rmi`: drop the reference (refusing while a container root filesystem uses that image,
    unless force), then collect blobs and layers nothing references. Returns what was removed.
    The whole of it holds the store's lock, as imports and pulls do: one that checked a reference
    exists, or found a blob present, must not see it removed before it is done.
    container_names: {container id: name}, to name the containers that use the image."""
    from labctl.kernel import overlay
    with exclusive_store_lock():
        digest = store.resolve(reference)
        users = overlay.images_in_use().get(digest, [])
        still_named = [r for r, d in store.refs().items() if d == digest and r != reference]
        if users and not force and not still_named:
            names = [(container_names or {}).get(user) or user[:12] for user in users]
            raise ImageInUse(f"image {reference} is used by container(s) {', '.join(names)}",
                             "remove those containers first (their layers stay while they exist)")
        store.remove_ref(reference)
        return store._collect()
