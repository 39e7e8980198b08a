"""Pushing images: the upload half of the OCI distribution protocol, request by request.

For each blob, the layers first and the config last, only what the registry lacks travels:
  HEAD /v2/NAME/blobs/<digest>                 200: the registry has it in NAME already: skip it
  POST /v2/NAME/blobs/uploads/?mount=<digest>&from=OTHER
                                               when the blob is known to be in OTHER on the same registry
                                               (bloblocations.py): 201 Created, the registry linked it
                                               without a byte sent; 202 Accepted: it did not (or may
                                               not), and this is an upload session to use instead
  POST /v2/NAME/blobs/uploads/                 202 Accepted, Location: the upload session's URL
  then, monolithic (blobs up to monolithic_max)
    PUT <location>&digest=<digest>             the whole blob in one body
  or chunked (larger blobs)
    PATCH <location>  Content-Range: START-END each chunk, 202 with the next Location and Range: 0-END
    PUT <location>&digest=<digest>             no body: "that was all"
                                               The registry hashes what it received and answers 201 only
                                               if it matches <digest> (else 400 DIGEST_INVALID).
Then the manifest, LAST:
  PUT /v2/NAME/manifests/TAG  Content-Type: its media type    the registry checks every blob it names is
                                               there, and only now moves the tag: a push interrupted
                                               anywhere before leaves the tag where it was.

Authentication is pull's (auth.py) with a wider scope: `repository:NAME:pull,push`, and
`repository:OTHER:pull` for each repository a blob is mounted from (the token must allow reading it).
Blobs go up in parallel threads (transfer.run_parallel: Ctrl-C and SIGTERM stop them within a second).
A dropped connection restarts that blob from its HEAD; an unfinished upload session is left to the
registry, which purges it (uploadpurging).
"""
from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

from labctl import state
from labctl.errors import LabError
from labctl.images import auth, bloblocations, reference as references
from labctl.images.auth import AuthError, RegistryError
from labctl.images.distribution import DROPPED, Client, Response
from labctl.images.mediatypes import MEDIA_OCI_MANIFEST
from labctl.images.pulllog import PullLog
from labctl.images.store import ImageStore, ImageNotFound
from labctl.images.transfer import run_parallel

MONOLITHIC_MAX = 64 << 20  # blobs up to this size go in one PUT (fewest round trips: measured fastest here)
CHUNK_SIZE = 16 << 20      # larger ones in PATCHes of this size: a progress point the registry confirms
BLOCK = 1 << 20            # bytes per send(2) from a blob file


@dataclass
class BlobPushed:
    digest: str
    size: int
    action: str              # exists | mounted | uploaded
    bytes_sent: int = 0      # blob bytes sent on the wire (a retried upload counts twice)
    what: str = "blob"       # "layer 2/3", "config"
    mounted_from: str | None = None


@dataclass
class PushResult:
    target: str              # the reference pushed to, REGISTRY/REPO:TAG
    digest: str              # the manifest's digest (the registry's Docker-Content-Digest, checked)
    blobs: list[BlobPushed] = field(default_factory=list)
    log: PullLog | None = None

    @property
    def bytes_sent(self) -> int:
        return sum(b.bytes_sent for b in self.blobs)

    def count(self, action: str) -> int:
        return sum(1 for b in self.blobs if b.action == action)

    def summary(self) -> str:
        return (f"pushed {self.target} ({self.digest}): {self.count('uploaded')} blob(s) uploaded "
                f"({self.bytes_sent} bytes), {self.count('mounted')} mounted, {self.count('exists')} already there")


# ---------------------------------------------------------------------------------------------
# The client: distribution.Client (connections, retries, the auth dance) with request bodies


class PushClient(Client):
    """A Client whose token asks for push: `scopes` are all the token must allow."""

    def __init__(self, ref: references.Reference, scopes: list[str], **kw):
        super().__init__(ref, **kw)
        self.scopes = scopes

    def _connection(self, scheme, netloc):
        conn = super()._connection(scheme, netloc)
        conn.blocksize = BLOCK        # http.client sends a file body in blocks of this many bytes
        return conn

    def login(self) -> None:
        """GET /v2/ and the token for self.scopes, once, before the blob threads start (they share it)."""
        if not self._logged_in:
            self._logged_in = True
            auth.login(self, scope=self.scopes)

    def send(self, method: str, url: str, headers: dict | None = None,
             body: Callable[[], object] | None = None) -> Response:
        """One authorized request. Without a body, Client.request's retries apply; with one (a callable
        that makes it afresh: bytes or a file-like reader), a dropped connection is the caller's to retry.
        A bearer token that expired (401) is renewed once."""
        url = url if url.startswith("http") else f"{self.base}{url}"
        self.login()
        for renewed in (False, True):
            if body is None:
                resp = self.request(method, url, headers, self.authorization)
            else:
                sent = dict(headers or {}, **({"Authorization": self.authorization} if self.authorization else {}))
                raw = self._send(method, url, sent, body())
                resp = Response(raw.status, raw.headers, raw, url)
            if resp.status != 401 or self.scheme != "bearer" or renewed:
                return resp
            resp.read()
            auth.login(self, scope=self.scopes)
        raise AssertionError("unreachable")


class Meter:
    """A blob file as http.client reads it to send: counts the bytes, reports progress, and stops at
    a cancel (Ctrl-C) between two blocks."""

    def __init__(self, path, offset: int, length: int, client: PushClient, tick: Callable[[int], None]):
        self.f = open(path, "rb")
        self.f.seek(offset)
        self.left, self.client, self.tick = length, client, tick

    def read(self, n: int = -1) -> bytes:
        self.client.cancel.check()
        data = self.f.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        self.tick(len(data))
        if not data:
            self.f.close()
        return data


class Transient(RegistryError):
    """A 429 or 5xx answer to a request with a body: the blob (or manifest) is sent again."""


def _refused(resp: Response, what: str, ref: references.Reference) -> RegistryError:
    body = resp.read(1 << 16)
    if resp.status in Client.RETRY_STATUSES:
        return Transient(f"{what} answered {resp.status} every time", "the registry is failing: look at its log")
    if resp.status in (401, 403):
        return AuthError(f"{ref.registry} refused to let you push to {ref.repository} ({what}: {resp.status})",
                         f"log in with an account that may push there: `labctl login {ref.registry} "
                         "--username USER --password-stdin`")
    return RegistryError(f"{what} answered {resp.status}: {body[:300].decode(errors='replace')}",
                         "the registry refused it: look at the registry's log")


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})


# ---------------------------------------------------------------------------------------------
# One blob


def _start_upload(client: PushClient, digest: str, mount_from: str | None) -> str | None:
    """POST an upload (a mount when mount_from is given): None if mounted, else the session's URL."""
    ref = client.ref
    query = "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from}) if mount_from else ""
    resp = client.send("POST", f"/v2/{ref.repository}/blobs/uploads/{query}")
    resp.read()
    if resp.status == 201 and mount_from:
        return None
    if resp.status != 202 or not resp.headers.get("Location"):
        raise _refused(resp, f"POST /v2/{ref.repository}/blobs/uploads/", ref)
    return urllib.parse.urljoin(client.base + "/", resp.headers["Location"])


def _upload(client: PushClient, location: str, path, d: dict, sizes: tuple[int, int], tick) -> None:
    """Send the blob into the upload session: one PUT, or PATCHes then an empty PUT; the registry
    checks the digest on the PUT."""
    digest, size = d["digest"], d["size"]
    octets = {"Content-Type": "application/octet-stream"}
    monolithic_max, chunk_size = sizes
    if size > monolithic_max:
        for start in range(0, size, chunk_size):
            length = min(chunk_size, size - start)
            headers = dict(octets, **{"Content-Range": f"{start}-{start + length - 1}", "Content-Length": str(length)})
            resp = client.send("PATCH", location, headers, lambda: Meter(path, start, length, client, tick))
            resp.read()
            if resp.status != 202:
                raise _refused(resp, f"PATCH of {digest[:19]} at {start}", client.ref)
            location = urllib.parse.urljoin(location, resp.headers.get("Location") or location)
        resp = client.send("PUT", _with_digest(location, digest), {"Content-Length": "0"}, lambda: b"")
    else:
        headers = dict(octets, **{"Content-Length": str(size)})
        resp = client.send("PUT", _with_digest(location, digest), headers, lambda: Meter(path, 0, size, client, tick))
    resp.read()
    if resp.status != 201:
        raise _refused(resp, f"PUT of blob {digest[:19]} (the registry checks its digest)", client.ref)


def push_blob(client: PushClient, store: ImageStore, d: dict, what: str, mount_from: str | None,
              sizes: tuple[int, int] = (MONOLITHIC_MAX, CHUNK_SIZE),
              progress: Callable[[int], None] | None = None) -> BlobPushed:
    """HEAD, then mount or upload one blob; a dropped connection starts it again from the HEAD."""
    record = BlobPushed(d["digest"], d["size"], "exists", 0, what)
    path = store.blob_path(d["digest"])

    def tick(n: int) -> None:
        record.bytes_sent += n
        client.log.add("push-bytes", what, digest=d["digest"], bytes=record.bytes_sent, size=d["size"])
        if progress:
            progress(n)
    client.log.add("push-start", f"{what} {d['digest'][:19]} ({d['size']} bytes)", digest=d["digest"],
                   size=d["size"], what=what)
    for attempt in range(client.retries + 1):
        try:
            resp = client.send("HEAD", f"/v2/{client.ref.repository}/blobs/{d['digest']}")
            resp.read()
            if resp.status == 200:
                return _done(client, record)
            if resp.status != 404:
                raise _refused(resp, f"HEAD of blob {d['digest'][:19]}", client.ref)
            location = _start_upload(client, d["digest"], mount_from)
            if location is None:
                record.action, record.mounted_from = "mounted", mount_from
                return _done(client, record)
            _upload(client, location, path, d, sizes, tick)
            record.action = "uploaded"
            return _done(client, record)
        except RETRIED as exc:
            client.cancel.check()
            if attempt == client.retries:
                _give_up(exc, f"the upload of {what} {d['digest'][:19]}", attempt)
            client._pause(attempt, None, f"{what} {d['digest'][:19]}: {_why(exc)}")
    raise AssertionError("unreachable")


RETRIED = DROPPED + (Transient,)


def _why(exc: BaseException) -> str:
    return exc.cause if isinstance(exc, Transient) else f"cut off ({exc.__class__.__name__})"


def _give_up(exc: BaseException, what: str, attempt: int):
    if isinstance(exc, Transient):
        raise exc
    raise RegistryError(f"{what} was cut off {attempt + 1} times ({exc.__class__.__name__})",
                        "is the registry running? try again") from None


def _done(client: PushClient, record: BlobPushed) -> BlobPushed:
    how = f"mounted from {record.mounted_from}" if record.mounted_from else record.action
    client.log.add("push-done", f"{record.what} {record.digest[:19]} {how}", digest=record.digest,
                   action=record.action, mounted_from=record.mounted_from, bytes_sent=record.bytes_sent)
    return record


# ---------------------------------------------------------------------------------------------
# The image


def _source(store: ImageStore, source: str) -> tuple[references.Reference, str]:
    """The image to push, as the store names it: (its reference, its manifest digest)."""
    try:
        found, digest = store.lookup(source)
    except ImageNotFound:
        raise ImageNotFound(f"no image {source!r} in the store", "`labctl images` lists what can be pushed") from None
    return references.parse(found), digest


def _target(source: references.Reference, target: str | None) -> references.Reference:
    """The reference to push to: TARGET (its tag defaults to the source's), else the source's own name."""
    if target is None:
        if "." not in source.registry and ":" not in source.registry:
            raise LabError(f"{source} names no registry to push to",
                           f"give one: `labctl push {source} 127.0.0.1:5000/NAME:TAG`")
        return source
    ref = references.parse(target)
    if ref.digest:
        raise LabError(f"cannot push to a digest ({target})", "push to a tag: REGISTRY/REPO:TAG")
    if ":" not in target.rsplit("/", 1)[-1]:
        ref = references.Reference(ref.registry, ref.repository, source.tag or "latest")
    return ref


def push(source: str, target: str | None = None, progress: bool | None = None, *, store: ImageStore | None = None,
         credentials: tuple[str, str] | None = None, monolithic_max: int = MONOLITHIC_MAX,
         chunk_size: int = CHUNK_SIZE, parallel: int = 4,
         retries: int = 4, backoff: float = 0.1, log: PullLog | None = None) -> PushResult:
    """Push SOURCE (an image in the store) to TARGET (REGISTRY/REPO[:TAG]; default: SOURCE's own name).
    progress: bars per blob on stderr (None: if stderr is a terminal). Blobs above monolithic_max bytes
    are sent in PATCHes of chunk_size bytes."""
    store = store or ImageStore()
    log = log or PullLog()
    source_ref, digest = _source(store, source)
    ref = _target(source_ref, target)
    body = store.read_blob(digest)
    manifest = json.loads(body)
    if "layers" not in manifest or "config" not in manifest:
        raise LabError(f"{source} is not an image manifest", "push an image (`labctl images` lists them)")
    media_type = manifest.get("mediaType") or MEDIA_OCI_MANIFEST
    n = len(manifest["layers"])
    blobs = [(f"layer {i + 1}/{n}", d) for i, d in enumerate(manifest["layers"])] + [("config", manifest["config"])]
    mounts = bloblocations.mount_sources(store, [d["digest"] for _, d in blobs], ref.registry, ref.repository)
    scopes = [f"repository:{ref.repository}:pull,push"] + \
             [f"repository:{repo}:pull" for repo in sorted(set(mounts.values()))]
    client = PushClient(ref, scopes, credentials=credentials, log=log, retries=retries, backoff=backoff)
    done: list[BlobPushed] = []
    try:
        client.login()
        with state.locked("image-store", shared=True):     # no garbage collection of what is being sent
            for _, d in blobs:
                if not store.has_blob(d["digest"]):
                    raise ImageNotFound(f"blob {d['digest']} of {source} is not in the store",
                                        "pull or import the image again")
            sizes = (monolithic_max, chunk_size)
            done += _push_all(client, store, blobs[:-1], mounts, sizes, parallel, progress)
            done += _push_all(client, store, blobs[-1:], mounts, sizes, 1, False)
        _put_manifest(client, body, media_type, digest)
        return PushResult(str(ref), digest, done, log)
    except BaseException:
        client.cancel.cancel()
        raise
    finally:
        bloblocations.remember([b.digest for b in done], ref.registry, ref.repository)
        client.close()


def _push_all(client: PushClient, store: ImageStore, blobs: list[tuple[str, dict]], mounts: dict[str, str],
              sizes: tuple[int, int], parallel: int, progress: bool | None) -> list[BlobPushed]:
    """The blobs in parallel threads, with a progress bar each, as `labctl pull` draws them."""
    if progress is None:
        progress = os.isatty(2)
    bars = None
    if progress and blobs:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
        bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        transient=False)
        bars.start()
    results: list[BlobPushed] = []

    def one(what: str, d: dict) -> int:
        label = f"{what} {d['digest'][7:19]}"
        task = bars.add_task(label, total=d["size"]) if bars else None
        tick = (lambda k: bars.advance(task, k)) if bars else None
        record = push_blob(client, store, d, what, mounts.get(d["digest"]), sizes, tick)
        if bars:
            how = f"mounted from {record.mounted_from}" if record.mounted_from else record.action
            bars.update(task, completed=d["size"], description=f"{label} {how}")
        results.append(record)
        return record.bytes_sent
    try:
        run_parallel([lambda w=w, d=d: one(w, d) for w, d in blobs], parallel, client.cancel)
    finally:
        if bars:
            bars.stop()
    order = [d["digest"] for _, d in blobs]
    return sorted(results, key=lambda r: order.index(r.digest))


def _put_manifest(client: PushClient, body: bytes, media_type: str, digest: str) -> None:
    """PUT the manifest under the tag: the one request that changes what the tag names."""
    ref = client.ref
    for attempt in range(client.retries + 1):
        try:
            resp = client.send("PUT", f"/v2/{ref.repository}/manifests/{ref.tag}",
                               {"Content-Type": media_type, "Content-Length": str(len(body))}, lambda: body)
            if resp.status != 201:
                raise _refused(resp, f"PUT manifest {ref.tag}", ref)
            resp.read()
            break
        except RETRIED as exc:
            client.cancel.check()
            if attempt == client.retries:
                _give_up(exc, f"the PUT of the manifest {ref.tag}", attempt)
            client._pause(attempt, None, f"manifest: {_why(exc)}")
    answered = resp.headers.get("Docker-Content-Digest")
    if answered and answered != digest:
        raise RegistryError(f"the registry stored the manifest as {answered}, not {digest}",
                            "the registry rewrote the manifest: look at its log")
    client.log.add("manifest-put", f"{ref} -> {digest}", digest=digest)
