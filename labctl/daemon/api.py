"""What every handler shares: Docker's errors, query parameters, JSON bodies, blocking work in threads.

An error, as dockerd gives it: an HTTP status and a JSON body `{"message": "..."}`; the docker CLI
prints the message ("Error response from daemon: ...") and exits 1, docker-py raises APIError with it.
The status says what kind of error it is: 400 bad parameter, 404 no such object, 409 a conflict (a
name in use, a running container), 500 the daemon failed. LabErrors map by kind (status_of).
"""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

from labctl.errors import CommandFailed, LabError, NoSuchContainer

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"
MAX_BODY = 1 << 20          # JSON request bodies; an image archive (load) is streamed, not held
BODY_TIMEOUT = 30.0         # seconds a client may take to send a JSON body (a slow client is dropped)


class ApiError(Exception):
    """An error response: Docker's status code and its one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def status_of(exc: LabError) -> int:
    """The status dockerd gives for this kind of error."""
    from labctl.images.reference import InvalidReference
    from labctl.images.store import ImageInUse, ImageNotFound
    if isinstance(exc, (NoSuchContainer, ImageNotFound)):
        return 404
    if isinstance(exc, ImageInUse) or "already in use" in exc.cause or "is running" in exc.cause:
        return 409
    if isinstance(exc, InvalidReference):
        return 400
    if isinstance(exc, CommandFailed):
        return 400 if exc.exit_code == 127 else 403
    return 400 if "needs root" not in exc.cause else 500


def error_response(status: int, message: str) -> web.Response:
    """The docker CLI prints the message only when the type is exactly application/json (no charset)."""
    return web.Response(body=json.dumps({"message": message}).encode(), status=status,
                        headers={"Content-Type": "application/json"})


def message_of(exc: LabError) -> str:
    """The message the docker CLI prints: labctl's cause and fix, on one line."""
    return str(exc)


# ---------------------------------------------------------------------------------------------
# Parameters and bodies


def flag(request: web.Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter as Docker reads them: 1/true/True/yes are true, 0/false/"" false."""
    value = request.query.get(name)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes", "on")


def number(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {value!r} is not an integer") from None


async def json_body(request: web.Request, required: bool = True) -> dict:
    """The request's JSON object (capped at MAX_BODY); 400 with one line for anything else."""
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
    raw = b""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.content.iter_any():
                raw += chunk
                if len(raw) > MAX_BODY:
                    raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT:.0f} s") from None
    if not raw.strip():
        if required:
            raise ApiError(400, "a JSON body is required")
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON in the request body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def only_known(body: dict, known: set[str], what: str) -> None:
    """Refuse fields this daemon does not know and would silently ignore (Docker ignores them; the lab
    says so, rather than run a container without what was asked)."""
    unknown = sorted(k for k, v in body.items() if k not in known and v not in (None, "", [], {}, False, 0))
    if unknown:
        raise ApiError(400, f"{what}: field(s) not supported by the lab's daemon: {', '.join(unknown)}")


async def blocking(func, *args, **kwargs):
    """Run the library's blocking call in a thread, so the event loop keeps serving other clients."""
    return await asyncio.to_thread(func, *args, **kwargs)


async def find_container(ref: str):
    from labctl.containers import store
    try:
        return await blocking(store.find, ref)
    except NoSuchContainer:
        raise ApiError(404, f"No such container: {ref}") from None
