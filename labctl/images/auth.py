"""Registry authentication: stored credentials (`labctl login`), the WWW-Authenticate challenge, and
the bearer-token exchange, as Docker's client does them.

    GET /v2/                  200: no authentication
                              401 + `WWW-Authenticate: Basic realm="..."`: send
                                  `Authorization: Basic base64(user:password)` with every request
                              401 + `WWW-Authenticate: Bearer realm="https://auth",service="reg"`:
    GET <realm>?service=reg&scope=repository:NAME:pull   (with Basic credentials if there are some)
                              -> {"token": JWT, "expires_in": 300}; then `Authorization: Bearer JWT`
                              with every request to the registry. A 401 later means the token
                              expired: the client fetches a new one, once.

Credentials live in <state>/auth.json, mode 0600 (they are passwords), shaped like Docker's
~/.docker/config.json: {"auths": {"REGISTRY": {"auth": base64("user:password")}}}.

The HTTP requests are the distribution client's (distribution.Client, which calls login() here when a
pull begins): this module decides what to send and reads what comes back.
"""
from __future__ import annotations

import base64
import contextlib
import json
import re
import urllib.parse
from typing import TYPE_CHECKING

from labctl import state
from labctl.errors import LabError

if TYPE_CHECKING:
    from labctl.images.distribution import Client


class RegistryError(LabError):
    """A registry (or its token server) answered what a client cannot use: 404, 5xx, not a manifest."""


class AuthError(RegistryError):
    """The registry refused the credentials, wants some, or its authentication is misconfigured."""


# ---------------------------------------------------------------------------------------------
# Credentials: <state>/auth.json


def _auth_path():
    return state.state_dir() / "auth.json"


def save_credentials(registry: str, username: str, password: str) -> None:
    """What `labctl login` keeps (after check_login accepted it), for later pulls from `registry`."""
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


def basic_authorization(credentials: tuple[str, str]) -> str:
    """The Authorization header value of HTTP Basic: `Basic base64(user:password)`."""
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------------------------------------
# The challenge, and the answer to it


_PARAM = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="reg",scope="repository:x:pull"` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _PARAM.finditer(rest):
        params[m.group(1).lower()] = m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
    return scheme.lower(), params


def login(client: Client, scope: str | list[str] | None = None) -> None:
    """GET /v2/ and answer its challenge: Basic credentials, or a Bearer token for `scope`. Sets
    client.scheme and client.authorization (the header every later request to the registry carries)."""
    resp = client.request("GET", f"{client.base}/v2/")
    resp.read()
    if resp.status == 200:
        client.scheme = None
        client.log.add("challenge", "GET /v2/ answered 200: this registry needs no authentication")
        return
    if resp.status in client.RETRY_STATUSES:
        raise RegistryError(f"{client.base}/v2/ answered {resp.status} {client.retries + 1} times: the registry "
                            "is failing or overloaded", "try again later, and look at the registry's log")
    if resp.status != 401:
        raise RegistryError(f"{client.base}/v2/ answered {resp.status}: not an OCI registry",
                            "check the registry address and port")
    header = resp.headers.get("WWW-Authenticate", "")
    client.scheme, params = parse_challenge(header)
    client.log.add("challenge", f"401 with WWW-Authenticate: {header}", scheme=client.scheme, **params)
    registry = client.ref.registry
    if client.scheme == "basic":
        if not client.credentials:
            raise AuthError(f"{registry} needs a username and password (HTTP Basic)",
                            f"`labctl login {registry} --username USER --password-stdin`, or pass --username to pull")
        client.authorization = basic_authorization(client.credentials)
        resp = client.request("GET", f"{client.base}/v2/", authorization=client.authorization)
        resp.read()
        if resp.status == 401:
            raise _wrong_password(client)
        client.log.add("auth", f"Basic credentials for {client.credentials[0]!r} accepted")
    elif client.scheme == "bearer":
        client.authorization = "Bearer " + _token(client, params, scope)
    else:
        raise AuthError(f"{registry} asks for {client.scheme!r} authentication, which labctl does not speak",
                        "use a registry with Basic or Bearer (token) authentication")


def _wrong_password(client: Client) -> AuthError:
    registry = client.ref.registry
    return AuthError(f"{registry} refused the username {client.credentials[0]!r} and its password",
                     f"check them, then `labctl login {registry} --username USER --password-stdin`")


def _token(client: Client, challenge: dict, scope: str | list[str] | None) -> str:
    """The token exchange: GET realm?service=...&scope=..., with Basic credentials if there are some."""
    realm = challenge.get("realm")
    if not realm:
        raise AuthError("the Bearer challenge has no realm", "the registry's auth is misconfigured")
    query = {"service": challenge.get("service", "")} if challenge.get("service") else {}
    if scope:
        query["scope"] = scope
    url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query, doseq=True)   # scopes: a list
    realm_parts = urllib.parse.urlsplit(realm)
    auth = basic_authorization(client.credentials) if client.credentials else None
    if realm_parts.scheme != "https" and realm_parts.hostname not in ("127.0.0.1", "localhost", "::1") \
            and auth:
        raise AuthError(f"the token realm {realm} is plain HTTP on another host: credentials not sent",
                        "use a registry whose token server speaks HTTPS")
    resp = client.token_request(url, {"Authorization": auth} if auth else {})
    body = resp.read(1 << 20)
    if resp.status == 401:
        if client.credentials:
            raise _wrong_password(client)
        raise AuthError(f"the token server of {client.ref.registry} wants credentials",
                        f"`labctl login {client.ref.registry} --username USER --password-stdin`")
    if resp.status != 200:   # what answered, in its own words: a token server, or something else on that port
        said = " ".join(filter(None, (resp.headers.get("Server"), body[:160].decode(errors="replace").strip())))
        raise AuthError(f"the token server {realm} answered {resp.status}" + (f" ({said})" if said else ""),
                        "is the token server running?")
    answer = json.loads(body)
    token = answer.get("token") or answer.get("access_token")
    if not token:
        raise AuthError(f"the token server {realm} sent no token", "the registry's auth is misconfigured")
    client.log.add("token", f"token for scope {scope or '(none)'} from {realm}"
                   + (f" as {client.credentials[0]!r}" if client.credentials else " (anonymous)"),
                   claims=jwt_claims(token), expires_in=answer.get("expires_in"))
    return token


def jwt_claims(token: str) -> dict:
    """The claims of a JWT, decoded for display (not verified: the registry verifies it)."""
    with contextlib.suppress(Exception):
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {}
