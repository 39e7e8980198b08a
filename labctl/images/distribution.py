"""Pulling images: a client of the OCI distribution protocol, as registries really serve it.

One pull, request by request:
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
Then the manifest is stored and the reference set, last: a pull interrupted anywhere leaves no image.

stdlib only (http.client): every request is visible here, nothing is hidden in a library.
"""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import platform as host_platform
import random
import re
import socket
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from labctl.images import store as imagestore, reference as references
from labctl import state
from labctl.errors import LabError
from labctl.images.store import (MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
                               ImageStore)

MEDIA_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v1+prettyjws")
ACCEPT = ", ".join((MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST))
INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
MAX_MANIFEST_BYTES = 4 << 20        # what registries accept; larger is not a manifest
CHUNK = 64 << 10
USER_AGENT = "labctl/0.1 (kernel-primitives-lab)"
RETRY_STATUSES = (429, 500, 502, 503, 504)
DROPPED = (ConnectionError, http.client.IncompleteRead, http.client.RemoteDisconnected,
           http.client.BadStatusLine, socket.timeout, TimeoutError)


class RegistryError(LabError):
    pass


class AuthError(RegistryError):
    pass


# ---------------------------------------------------------------------------------------------
# Platforms


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, entry: dict) -> bool:
        """Does an index entry's `platform` serve this platform? arm64 without a variant means v8."""
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        theirs = entry.get("variant") or ("v8" if self.architecture == "arm64" else None)
        mine = self.variant or ("v8" if self.architecture == "arm64" else None)
        return mine is None or theirs == mine


_MACHINES = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", "v8"),
             "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
             "i686": ("386", None), "i386": ("386", None), "ppc64le": ("ppc64le", None),
             "s390x": ("s390x", None), "riscv64": ("riscv64", None)}


def host() -> Platform:
    """This machine's platform, named as OCI names them (uname -m x86_64 is amd64)."""
    machine = host_platform.machine()
    arch, variant = _MACHINES.get(machine, (machine, None))
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise LabError(f"invalid platform {text!r}", "write it as OS/ARCH[/VARIANT], e.g. linux/arm64/v8")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def choose_manifest(index: dict, wanted: Platform) -> dict:
    """The index entry for `wanted` (an exact variant match first); a clear error if there is none."""
    entries = [m for m in index.get("manifests", []) if m.get("mediaType", MEDIA_OCI_MANIFEST) in MANIFEST_TYPES
               and "platform" in m]
    exact = [m for m in entries if m["platform"].get("os") == wanted.os
             and m["platform"].get("architecture") == wanted.architecture
             and m["platform"].get("variant") == wanted.variant]
    found = exact or [m for m in entries if wanted.matches(m["platform"])]
    if not found:
        offered = ", ".join(str(Platform(m["platform"].get("os", "?"), m["platform"].get("architecture", "?"),
                                         m["platform"].get("variant"))) for m in entries) or "none"
        raise RegistryError(f"the image has no manifest for {wanted} (it offers: {offered})",
                            "choose one of those with --platform OS/ARCH[/VARIANT]")
    return found[0]


# ---------------------------------------------------------------------------------------------
# Credentials: <state>/auth.json, mode 0600 (they are passwords)


def _auth_path():
    return state.state_dir() / "auth.json"


def save_credentials(registry: str, username: str, password: str) -> None:
    with state.locked("auth"):
        entries = load_all_credentials()
        entries[registry] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
        state.atomic_write_json(_auth_path(), {"auths": entries}, mode=0o600)


def load_all_credentials() -> dict:
    try:
        return json.loads(_auth_path().read_text()).get("auths", {})
    except FileNotFoundError:
        return {}


def load_credentials(registry: str) -> tuple[str, str] | None:
    entry = load_all_credentials().get(registry)
    if not entry:
        return None
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return user, password


# ---------------------------------------------------------------------------------------------
# The event log: what a pull did, when (the step 5 narration and the timeline figure read it)


@dataclass
class Event:
    t: float                 # seconds since the pull began
    kind: str                # request | response | token | manifest | platform | blob-start | blob-bytes | blob-done | ...
    text: str
    data: dict = field(default_factory=dict)


class PullLog:
    def __init__(self, narrate: Callable[[Event], None] | None = None):
        self.t0 = time.monotonic()
        self.events: list[Event] = []
        self.narrate = narrate
        self._lock = threading.Lock()

    def add(self, kind: str, text: str, **data) -> Event:
        event = Event(time.monotonic() - self.t0, kind, text, data)
        with self._lock:
            self.events.append(event)
        if self.narrate and kind != "blob-bytes":
            self.narrate(event)
        return event

    def to_json(self) -> list[dict]:
        return [{"t": e.t, "kind": e.kind, "text": e.text, **e.data} for e in self.events]


# ---------------------------------------------------------------------------------------------
# WWW-Authenticate


_PARAM = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="reg",scope="repository:x:pull"` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _PARAM.finditer(rest):
        params[m.group(1).lower()] = m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
    return scheme.lower(), params


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
    """One registry, one repository: GET /v2/, authentication, manifests, blobs."""

    def __init__(self, ref: references.Reference, credentials: tuple[str, str] | None = None,
                 log: PullLog | None = None, retries: int = 4, backoff: float = 0.1, timeout: float = 30.0):
        self.ref = ref
        self.base = f"{'http' if ref.insecure else 'https'}://{ref.api_host}"
        self.credentials = credentials if credentials is not None else load_credentials(ref.registry)
        self.log = log or PullLog()
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.authorization: str | None = None     # the header value for the registry's own host
        self.scheme: str | None = None
        self._logged_in = False
        self._conns = threading.local()

    # -- HTTP ------------------------------------------------------------------------------------
    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool = self._conns.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = pool[(scheme, netloc)] = cls(netloc, timeout=self.timeout)
        return conn

    def _drop_connection(self, scheme: str, netloc: str) -> None:
        pool = self._conns.__dict__.setdefault("pool", {})
        conn = pool.pop((scheme, netloc), None)
        if conn:
            conn.close()

    def _once(self, method: str, url: str, headers: dict, authorization: str | None) -> Response:
        """One request, following redirects. The registry's Authorization header goes only to the
        registry's own scheme://host:port: a redirect to blob storage elsewhere must not receive it."""
        registry = urllib.parse.urlsplit(self.base)
        for _ in range(6):
            parts = urllib.parse.urlsplit(url)
            send = dict(headers, **{"User-Agent": USER_AGENT})
            if authorization and (parts.scheme, parts.netloc) == (registry.scheme, registry.netloc):
                send["Authorization"] = authorization
            conn = self._connection(parts.scheme, parts.netloc)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            started = self.log.add("request", f"{method} {url}", method=method, url=url,
                                   auth=send.get("Authorization", "").split(" ")[0] or None)
            try:
                conn.request(method, path, headers=send)
                raw = conn.getresponse()
            except BaseException:
                self._drop_connection(parts.scheme, parts.netloc)
                raise
            self.log.add("response", f"{raw.status} {raw.reason} ← {method} {url}", method=method, url=url,
                         status=raw.status, started=started.t,
                         length=int(raw.headers.get("Content-Length") or 0))
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
            if resp.status in RETRY_STATUSES and attempt < self.retries:
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
        time.sleep(delay)

    # -- authentication --------------------------------------------------------------------------
    def _basic(self) -> str:
        user, password = self.credentials
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def login(self, scope: str | None = None) -> None:
        """GET /v2/ and answer its challenge: Basic credentials, or a Bearer token for `scope`."""
        resp = self.request("GET", f"{self.base}/v2/")
        resp.read()
        if resp.status == 200:
            self.scheme = None
            self.log.add("challenge", "GET /v2/ answered 200: this registry needs no authentication")
            return
        if resp.status in RETRY_STATUSES:
            raise RegistryError(f"{self.base}/v2/ answered {resp.status} {self.retries + 1} times: the registry "
                                "is failing or overloaded", "try again later, and look at the registry's log")
        if resp.status != 401:
            raise RegistryError(f"{self.base}/v2/ answered {resp.status}: not an OCI registry",
                                "check the registry address and port")
        header = resp.headers.get("WWW-Authenticate", "")
        self.scheme, params = parse_challenge(header)
        self.log.add("challenge", f"401 with WWW-Authenticate: {header}", scheme=self.scheme, **params)
        if self.scheme == "basic":
            if not self.credentials:
                raise AuthError(f"{self.ref.registry} needs a username and password (HTTP Basic)",
                                f"`labctl login {self.ref.registry} --username USER --password-stdin`, "
                                "or pass --username to pull")
            self.authorization = self._basic()
            resp = self.request("GET", f"{self.base}/v2/", authorization=self.authorization)
            resp.read()
            if resp.status == 401:
                raise self._wrong_password()
            self.log.add("auth", f"Basic credentials for {self.credentials[0]!r} accepted")
        elif self.scheme == "bearer":
            self.authorization = "Bearer " + self._token(params, scope)
        else:
            raise AuthError(f"{self.ref.registry} asks for {self.scheme!r} authentication, which labctl does "
                            "not speak", "use a registry with Basic or Bearer (token) authentication")

    def _wrong_password(self) -> AuthError:
        return AuthError(f"{self.ref.registry} refused the username {self.credentials[0]!r} and its password",
                         f"check them, then `labctl login {self.ref.registry} --username USER --password-stdin`")

    def _token(self, challenge: dict, scope: str | None) -> str:
        """The token dance: GET realm?service=...&scope=..., with Basic credentials if we have some."""
        realm = challenge.get("realm")
        if not realm:
            raise AuthError("the Bearer challenge has no realm", "the registry's auth is misconfigured")
        query = {"service": challenge.get("service", "")} if challenge.get("service") else {}
        if scope:
            query["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        realm_parts = urllib.parse.urlsplit(realm)
        auth = self._basic() if self.credentials else None
        if realm_parts.scheme != "https" and realm_parts.hostname not in ("127.0.0.1", "localhost", "::1") \
                and auth:
            raise AuthError(f"the token realm {realm} is plain HTTP on another host: credentials not sent",
                            "use a registry whose token server speaks HTTPS")
        headers = {}
        if auth:
            headers["Authorization"] = auth
        resp = self._token_request(url, headers)
        body = resp.read(1 << 20)
        if resp.status == 401:
            if self.credentials:
                raise self._wrong_password()
            raise AuthError(f"the token server of {self.ref.registry} wants credentials",
                            f"`labctl login {self.ref.registry} --username USER --password-stdin`")
        if resp.status != 200:
            raise AuthError(f"the token server {realm} answered {resp.status}", "is the token server running?")
        answer = json.loads(body)
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise AuthError(f"the token server {realm} sent no token", "the registry's auth is misconfigured")
        self.log.add("token", f"token for scope {scope or '(none)'} from {realm}"
                     + (f" as {self.credentials[0]!r}" if self.credentials else " (anonymous)"),
                     claims=_jwt_claims(token), expires_in=answer.get("expires_in"))
        return token

    def _token_request(self, url: str, headers: dict) -> Response:
        # The realm is another host: send its request as-is (its Authorization is the user's, on purpose).
        parts = urllib.parse.urlsplit(url)
        for attempt in range(self.retries + 1):
            try:
                conn = self._connection(parts.scheme, parts.netloc)
                t = self.log.add("request", f"GET {url}", method="GET", url=url,
                                 auth=headers.get("Authorization", "").split(" ")[0] or None).t
                conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                             headers=dict(headers, **{"User-Agent": USER_AGENT}))
                raw = conn.getresponse()
                self.log.add("response", f"{raw.status} {raw.reason} ← GET {url}", method="GET", url=url,
                             status=raw.status, started=t, length=int(raw.headers.get("Content-Length") or 0))
                return Response(raw.status, raw.headers, raw, url)
            except DROPPED:
                self._drop_connection(parts.scheme, parts.netloc)
                if attempt == self.retries:
                    raise AuthError(f"the token server {parts.netloc} is unreachable",
                                    "is it running?") from None
                self._pause(attempt, None, "token server connection failed")
        raise AssertionError("unreachable")

    def _authorized(self, method: str, path: str, headers: dict | None = None) -> Response:
        if not self._logged_in:
            self._logged_in = True
            self.login(scope=f"repository:{self.ref.repository}:pull")
        resp = self.request(method, f"{self.base}{path}", headers, self.authorization)
        if resp.status == 401 and self.scheme == "bearer":
            # Tokens expire (Docker Hub's after 300 s): fetch a new one once.
            resp.read()
            self.login(scope=f"repository:{self.ref.repository}:pull")
            resp = self.request(method, f"{self.base}{path}", headers, self.authorization)
        return resp

    # -- manifests and blobs ---------------------------------------------------------------------
    def manifest(self, reference: str) -> tuple[bytes, str, str]:
        """GET a manifest or index by tag or digest: (bytes, media type, digest), the digest verified."""
        resp = self._authorized("GET", f"/v2/{self.ref.repository}/manifests/{reference}", {"Accept": ACCEPT})
        body = resp.read(MAX_MANIFEST_BYTES)
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
                with store.blob_writer(digest, size, what) as writer:
                    while True:
                        chunk = resp.raw.read(min(CHUNK, size - got + 1))
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
            except DROPPED as exc:
                u = urllib.parse.urlsplit(self.base)
                self._drop_connection(u.scheme, u.netloc)
                if attempt == self.retries:
                    raise RegistryError(
                        f"the download of {what} {digest} was cut off {attempt + 1} times "
                        f"({exc.__class__.__name__}); nothing of it was stored",
                        "the connection to the registry keeps dropping: check the network, then pull again") \
                        from None
                self._pause(attempt, None, f"{what} {digest[:19]} cut off ({exc.__class__.__name__})")
            except BaseException:
                # a mismatch or an error status may leave unread bytes on the connection: never reuse it
                u = urllib.parse.urlsplit(self.base)
                self._drop_connection(u.scheme, u.netloc)
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self._conns.__dict__.get("pool", {}).values():
            conn.close()


def _jwt_claims(token: str) -> dict:
    """The claims of a JWT, decoded for display (not verified: the registry verifies it)."""
    with contextlib.suppress(Exception):
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {}


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
         progress: bool | None = None, parallel: int = 4, retries: int = 4, backoff: float = 0.1) -> PullResult:
    """Pull IMAGE into the image store; returns what happened. The reference is set last."""
    ref = references.parse(image)
    store = store or ImageStore()
    log = log or PullLog()
    wanted = parse_platform(platform) if isinstance(platform, str) else (platform or host())
    client = Client(ref, credentials, log, retries=retries, backoff=backoff)
    try:
        body, media_type, digest = client.manifest(ref.reference)
        chosen = None
        if media_type in INDEX_TYPES:
            index = json.loads(body)
            entry = choose_manifest(index, wanted)
            chosen = str(Platform(entry["platform"]["os"], entry["platform"]["architecture"],
                                  entry["platform"].get("variant")))
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
                client.fetch_blob(store, d, what)
                transferred += d["size"]
            layers = [(w, d) for w, d in missing if w != "config"]
            transferred += _fetch_parallel(client, store, layers, parallel, progress)
            store.put_blob(body, digest, "manifest")
            store.set_ref(name, digest)
        log.add("stored", f"{name} -> {digest}", digest=digest)
        return PullResult(name, digest, chosen, transferred, len(missing), log)
    finally:
        client.close()


def _fetch_parallel(client: Client, store: ImageStore, layers: list[tuple[str, dict]], parallel: int,
                    progress: bool | None) -> int:
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
            client.fetch_blob(store, d, what, update)
            return d["size"]
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(layers)))) as pool:
            futures = [pool.submit(one, item) for item in layers]
            errors = []
            total = 0
            for f in futures:
                try:
                    total += f.result()
                except Exception as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
            return total
    finally:
        if bars:
            bars.stop()


def check_login(registry: str, username: str, password: str) -> str:
    """Try credentials against a registry (GET /v2/ and its challenge); returns the auth scheme."""
    ref = references.parse(f"{registry}/login-check")
    client = Client(ref, (username, password))
    try:
        client.login(scope=None)
        return client.scheme or "none"
    finally:
        client.close()
