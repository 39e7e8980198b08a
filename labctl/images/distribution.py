"""Pulling images: a client of the OCI distribution protocol, as registries really serve it.

One pull, request by request (answering the challenge is auth.py's part; the media types and the
choice of a platform are mediatypes.py's):
  GET /v2/                              is this a registry? 200, or 401 with a WWW-Authenticate challenge
  (Bearer) GET <realm>?service=S&scope=repository:NAME:pull     -> {"token": JWT}, sent as
                                        `Authorization: Bearer JWT` from then on
  (Basic)  `Authorization: Basic base64(user:password)` on every request
  GET /v2/NAME/manifests/TAG            Accept: OCI index, OCI manifest, Docker list, Docker v2 schema 2
      an index / manifest list          -> choose this host's platform, GET the manifest by digest
  GET /v2/NAME/blobs/<config digest>    the image config (diff_ids, Env, Cmd, ...)
  GET /v2/NAME/blobs/<layer digest>     each layer, in parallel, streamed to disk; sha256 and size are
                                        checked as the bytes arrive, and a blob becomes visible in the
                                        image store only once both match
Then the manifest is stored and the reference set, last: a pull interrupted anywhere leaves no image,
and a failed one removes the blobs it stored. Ctrl-C, SIGTERM and a stalled transfer stop it within a
second (transfer.py says how).

stdlib only (http.client): every request is visible here, nothing is hidden in a library.
"""
from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable

import labctl
from labctl import state
from labctl.images import auth, store as imagestore, reference as references
from labctl.images.auth import AuthError, RegistryError
from labctl.images.mediatypes import (ACCEPT, INDEX_TYPES, MANIFEST_TYPES, MEDIA_DOCKER_SCHEMA1, Platform,
                                      choose_manifest, host, parse_platform)
from labctl.images.pulllog import PullLog
from labctl.images.store import ImageStore
from labctl.images.transfer import (MANIFEST_DEADLINE, Cancel, Watch, run_parallel, stall_timeout,
                                    unanswered)

MAX_MANIFEST_BYTES = 4 << 20        # what registries accept; larger is not a manifest
CHUNK = 64 << 10
USER_AGENT = f"labctl/{labctl.__version__} (kernel-primitives-lab)"
# Retried. Not a timeout: a registry that sends nothing for the stall timeout is stalled (transfer.py).
DROPPED = (ConnectionError, http.client.IncompleteRead, http.client.RemoteDisconnected,
           http.client.BadStatusLine)


# ---------------------------------------------------------------------------------------------
# The client


class Response:
    """A response whose body has not been read yet (blobs are streamed from it)."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, raw: http.client.HTTPResponse, url: str):
        self.status, self.headers, self.raw, self.url = status, headers, raw, url

    def read(self, limit: int | None = None) -> bytes:
        data = self.raw.read(limit + 1 if limit else None)
        if limit and len(data) > limit:
            raise RegistryError(f"{self.url} sent more than {limit} bytes", "this is not a manifest")
        return data


class Client:
    """One registry, one repository: GET /v2/, authentication (auth.login), manifests, blobs."""
    RETRY_STATUSES = (429, 500, 502, 503, 504)

    def __init__(self, ref: references.Reference, credentials: tuple[str, str] | None = None,
                 log: PullLog | None = None, retries: int = 4, backoff: float = 0.1, timeout: float | None = None):
        self.ref = ref
        self.base = f"{'http' if ref.insecure else 'https'}://{ref.api_host}"
        self.credentials = credentials if credentials is not None else auth.load_credentials(ref.registry)
        self.log = log or PullLog()
        self.retries, self.backoff = retries, backoff
        self.timeout = stall_timeout(timeout)     # every socket's: no byte for this long is a stall
        self.cancel = Cancel()
        self.authorization: str | None = None     # the header value for the registry's own host (auth.login)
        self.scheme: str | None = None            # the challenge's scheme: basic, bearer, or None
        self._logged_in = False
        self._conns = threading.local()

    # -- HTTP ------------------------------------------------------------------------------------
    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool = self._conns.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = pool[(scheme, netloc)] = cls(netloc, timeout=self.timeout)
            self.cancel.track(conn)
        return conn

    def _drop_connection(self, scheme: str, netloc: str) -> None:
        pool = self._conns.__dict__.setdefault("pool", {})
        conn = pool.pop((scheme, netloc), None)
        if conn:
            self.cancel.untrack(conn)
            conn.close()

    def _send(self, method: str, url: str, headers: dict, body=None) -> http.client.HTTPResponse:
        """One request on this thread's connection to the URL's host, with both ends in the log.
        A connection that failed is dropped, so the next request opens a fresh one."""
        parts = urllib.parse.urlsplit(url)
        conn = self._connection(parts.scheme, parts.netloc)
        started = self.log.add("request", f"{method} {url}", method=method, url=url,
                               auth=headers.get("Authorization", "").split(" ")[0] or None)
        try:
            conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body,
                         headers=dict(headers, **{"User-Agent": USER_AGENT}))
            raw = conn.getresponse()
        except BaseException as exc:
            self._drop_connection(parts.scheme, parts.netloc)
            self.cancel.check()    # a socket shut down by a cancel: not a network failure
            final = unanswered(exc, parts, method, self.timeout)
            if final:
                raise final from None
            raise
        self.log.add("response", f"{raw.status} {raw.reason} ← {method} {url}", method=method, url=url,
                     status=raw.status, started=started.t, length=int(raw.headers.get("Content-Length") or 0))
        return raw

    def _once(self, method: str, url: str, headers: dict, authorization: str | None) -> Response:
        """One request, following redirects. The registry's Authorization header goes only to the
        registry's own scheme://host:port: a redirect to blob storage elsewhere must not receive it."""
        registry = urllib.parse.urlsplit(self.base)
        for _ in range(6):
            parts = urllib.parse.urlsplit(url)
            send = dict(headers)
            if authorization and (parts.scheme, parts.netloc) == (registry.scheme, registry.netloc):
                send["Authorization"] = authorization
            raw = self._send(method, url, send)
            if raw.status in (301, 302, 303, 307, 308) and raw.headers.get("Location"):
                raw.read()
                url = urllib.parse.urljoin(url, raw.headers["Location"])
                continue
            return Response(raw.status, raw.headers, raw, url)
        raise RegistryError(f"too many redirects from {url}", "the registry is misconfigured")

    def request(self, method: str, url: str, headers: dict | None = None,
                authorization: str | None = None) -> Response:
        """A request with retries: 429 and 5xx (honouring Retry-After) and dropped connections are
        retried with exponential backoff and jitter; anything else is returned to the caller."""
        headers = headers or {}
        for attempt in range(self.retries + 1):
            try:
                resp = self._once(method, url, headers, authorization)
            except DROPPED as exc:
                if attempt == self.retries:
                    raise RegistryError(f"the connection to {self.ref.api_host} failed {attempt + 1} times "
                                        f"({exc.__class__.__name__}: {exc})",
                                        "is the registry running? `labctl registry status`") from None
                self._pause(attempt, None, f"connection failed ({exc.__class__.__name__})")
                continue
            if resp.status in self.RETRY_STATUSES and attempt < self.retries:
                resp.read()
                self._pause(attempt, resp.headers.get("Retry-After"), f"HTTP {resp.status}")
                continue
            return resp
        raise AssertionError("unreachable")

    def _pause(self, attempt: int, retry_after: str | None, why: str) -> None:
        delay = self.backoff * (2 ** attempt) * (1 + random.random() / 2)
        if retry_after and retry_after.isdigit():
            delay = min(float(retry_after), 30.0)
        self.log.add("retry", f"{why}: retrying in {delay:.2f} s (attempt {attempt + 2} of {self.retries + 1})",
                     delay=delay)
        self.cancel.sleep(delay)

    def token_request(self, url: str, headers: dict) -> Response:
        """GET from the token server (auth.login's Bearer exchange). The realm is another host: its
        request is sent as given (its Authorization is the user's own, on purpose), without following
        redirects; a dropped connection is retried."""
        for attempt in range(self.retries + 1):
            try:
                raw = self._send("GET", url, headers)
                return Response(raw.status, raw.headers, raw, url)
            except DROPPED:
                if attempt == self.retries:
                    raise AuthError(f"the token server {urllib.parse.urlsplit(url).netloc} is unreachable",
                                    "is it running?") from None
                self._pause(attempt, None, "token server connection failed")
        raise AssertionError("unreachable")

    def _authorized(self, method: str, path: str, headers: dict | None = None) -> Response:
        if not self._logged_in:
            self._logged_in = True
            auth.login(self, scope=f"repository:{self.ref.repository}:pull")
        resp = self.request(method, f"{self.base}{path}", headers, self.authorization)
        if resp.status == 401 and self.scheme == "bearer":
            # Tokens expire (Docker Hub's after 300 s): fetch a new one once.
            resp.read()
            auth.login(self, scope=f"repository:{self.ref.repository}:pull")
            resp = self.request(method, f"{self.base}{path}", headers, self.authorization)
        return resp

    # -- manifests and blobs ---------------------------------------------------------------------
    def manifest(self, reference: str) -> tuple[bytes, str, str]:
        """GET a manifest or index by tag or digest: (bytes, media type, digest), the digest verified."""
        deadline = time.monotonic() + MANIFEST_DEADLINE
        resp = self._authorized("GET", f"/v2/{self.ref.repository}/manifests/{reference}", {"Accept": ACCEPT})
        watch = Watch(f"the manifest {reference}", self.timeout, self.cancel, deadline)
        body = b""
        while chunk := watch.read(resp.raw, CHUNK):
            body += chunk
            if len(body) > MAX_MANIFEST_BYTES:
                raise RegistryError(f"{resp.url} sent more than {MAX_MANIFEST_BYTES} bytes", "this is not a manifest")
        if resp.status == 404:
            raise RegistryError(f"{self.ref.name}:{reference} was not found on {self.ref.registry}",
                                "check the name and tag (the registry answered 404 MANIFEST_UNKNOWN)")
        if resp.status == 401:
            raise AuthError(f"{self.ref.registry} refused access to {self.ref.repository}",
                            f"log in with an account that may pull it: `labctl login {self.ref.registry}`")
        if resp.status != 200:
            raise RegistryError(f"GET manifest {reference} answered {resp.status}: {body[:200]!r}",
                                "look at the registry's log")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            doc = json.loads(body)
        except ValueError:
            raise RegistryError(f"the manifest of {self.ref} is not JSON", "the registry sent garbage") from None
        media_type = doc.get("mediaType") or media_type
        if media_type in MEDIA_DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise RegistryError(f"{self.ref} is a Docker schema 1 image (deprecated in 2017, removed from "
                                "Docker 26): labctl refuses it", "push the image again with a current tool, "
                                "e.g. `skopeo copy --format v2s2`, or pull a newer tag")
        digest = imagestore.sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise imagestore.DigestMismatch(reference, digest, "manifest")
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise imagestore.DigestMismatch(header, digest, "manifest")
        self.log.add("manifest", f"{media_type}, {len(body)} bytes, {digest}", media_type=media_type,
                     digest=digest, size=len(body))
        return body, media_type, digest

    def fetch_blob(self, store: ImageStore, descriptor: dict, what: str = "blob",
                   progress: Callable[[int], None] | None = None) -> str:
        """Stream one blob into the store, verified as it arrives. A dropped connection or a server
        error restarts it (the partial file is discarded); a wrong digest is never retried."""
        digest, size = descriptor["digest"], descriptor["size"]
        imagestore.split_digest(digest)
        for attempt in range(self.retries + 1):
            self.log.add("blob-start", f"{what} {digest[:19]} ({size} bytes)", digest=digest, size=size, what=what)
            try:
                resp = self._authorized("GET", f"/v2/{self.ref.repository}/blobs/{digest}")
                if resp.status != 200:
                    body = resp.read(1 << 16)
                    raise RegistryError(f"GET blob {digest} answered {resp.status}: {body[:200]!r}",
                                        "the registry lost the blob or refused it: look at its log")
                got = 0
                watch = Watch(f"{what} {digest[:19]}", self.timeout, self.cancel)
                with store.blob_writer(digest, size, what) as writer:
                    while True:
                        chunk = watch.read(resp.raw, min(CHUNK, size - got + 1))
                        if not chunk:
                            break
                        writer.write(chunk)
                        got += len(chunk)
                        if got > size:
                            break  # blob_writer reports the size mismatch; never read without limit
                        self.log.add("blob-bytes", "", digest=digest, bytes=got)
                        if progress:
                            progress(got)
                    if got < size:
                        raise http.client.IncompleteRead(b"", size - got)
                self.log.add("blob-done", f"{what} {digest[:19]}: sha256 and size ({size} bytes) verified",
                             digest=digest, size=size, what=what)
                return digest
            except BaseException as exc:
                # a cut, a mismatch or an error status may leave unread bytes on the connection: never reuse it
                registry = urllib.parse.urlsplit(self.base)
                self._drop_connection(registry.scheme, registry.netloc)
                if not isinstance(exc, DROPPED):
                    raise
                self.cancel.check()
                if attempt == self.retries:
                    raise RegistryError(
                        f"the download of {what} {digest} was cut off {attempt + 1} times "
                        f"({exc.__class__.__name__}); nothing of it was stored",
                        "the connection to the registry keeps dropping: check the network, then pull again") \
                        from None
                self._pause(attempt, None, f"{what} {digest[:19]} cut off ({exc.__class__.__name__})")
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self._conns.__dict__.get("pool", {}).values():
            conn.close()


# ---------------------------------------------------------------------------------------------
# Pull


@dataclass
class PullResult:
    reference: str           # the normalised reference now in the store
    digest: str              # the image manifest's digest
    platform: str | None     # the platform chosen from an index, if there was one
    transferred: int         # blob bytes downloaded (0 when everything was already there)
    blobs_fetched: int
    log: PullLog


def pull(image: str, *, store: ImageStore | None = None, platform: str | Platform | None = None,
         credentials: tuple[str, str] | None = None, log: PullLog | None = None,
         progress: bool | None = None, parallel: int = 4, retries: int = 4, backoff: float = 0.1,
         stall_timeout: float | None = None) -> PullResult:
    """Pull IMAGE into the image store; returns what happened. The reference is set last; a pull that
    fails or is interrupted removes the blobs it stored (transfer.py: how it is stopped in time)."""
    ref = references.parse(image)
    store = store or ImageStore()
    log = log or PullLog()
    wanted = parse_platform(platform) if isinstance(platform, str) else (platform or host())
    client = Client(ref, credentials, log, retries=retries, backoff=backoff, timeout=stall_timeout)
    stored: list[str] = []      # the blobs this pull added, removed again if it fails
    try:
        body, media_type, digest = client.manifest(ref.reference)
        chosen = None
        if media_type in INDEX_TYPES:
            index = json.loads(body)
            entry = choose_manifest(index, wanted)
            chosen = str(Platform.of_entry(entry))
            log.add("platform", f"index lists {len(index.get('manifests', []))} manifests; "
                    f"{chosen} matches {wanted}: {entry['digest']}", chosen=chosen, wanted=str(wanted),
                    digest=entry["digest"])
            body, media_type, digest = client.manifest(entry["digest"])
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(f"{ref} has media type {media_type!r}, not an image manifest",
                                "this is not a container image (an artifact, a Helm chart?)")
        manifest = json.loads(body)
        descriptors = [("config", manifest["config"])] + \
                      [(f"layer {i + 1}/{len(manifest['layers'])}", l) for i, l in enumerate(manifest["layers"])]
        name = str(ref)
        with state.locked("image-store", shared=True):
            missing = [(what, d) for what, d in descriptors if not store.has_blob(d["digest"])]
            if store.has_blob(digest) and not missing:
                log.add("cached", f"manifest {digest[:19]} and all its blobs are already in the store: "
                        "nothing to transfer", digest=digest)
                store.set_ref(name, digest)
                return PullResult(name, digest, chosen, 0, 0, log)
            # The config first (small, and it says what the layers are), then the layers in parallel.
            transferred = 0
            for what, d in missing[:1] if missing and missing[0][0] == "config" else []:
                stored.append(client.fetch_blob(store, d, what))
                transferred += d["size"]
            layers = [(w, d) for w, d in missing if w != "config"]
            transferred += _fetch_parallel(client, store, layers, parallel, progress, stored)
            stored.append(store.put_blob(body, digest, "manifest"))
            store.set_ref(name, digest)
        log.add("stored", f"{name} -> {digest}", digest=digest)
        return PullResult(name, digest, chosen, transferred, len(missing), log)
    except BaseException:
        client.cancel.cancel()
        store.discard_blobs(stored)
        raise
    finally:
        client.close()


def _fetch_parallel(client: Client, store: ImageStore, layers: list[tuple[str, dict]], parallel: int,
                    progress: bool | None, stored: list[str]) -> int:
    if not layers:
        return 0
    if progress is None:
        progress = sys.stderr.isatty()
    bars = None
    if progress:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn)
        bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        transient=False)
        bars.start()
    try:
        def one(item):
            what, d = item
            task = bars.add_task(f"{what} {d['digest'][7:19]}", total=d["size"]) if bars else None
            update = (lambda n: bars.update(task, completed=n)) if bars else None
            stored.append(client.fetch_blob(store, d, what, update))
            return d["size"]
        # not a ThreadPoolExecutor: its threads are joined uninterruptibly, also at exit (transfer.py)
        return sum(run_parallel([lambda item=item: one(item) for item in layers], parallel, client.cancel))
    finally:
        if bars:
            bars.stop()


def check_login(registry: str, username: str, password: str) -> str:
    """Try credentials against a registry (GET /v2/ and its challenge); returns the auth scheme."""
    ref = references.parse(f"{registry}/login-check")
    client = Client(ref, (username, password))
    try:
        auth.login(client, scope=None)
        return client.scheme or "none"
    finally:
        client.close()
