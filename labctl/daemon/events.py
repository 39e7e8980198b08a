"""`docker events`: what happened to containers, images, networks and volumes, as a live JSON stream.

The daemon publishes an event for each thing it does (create, start, die, destroy, pull, tag, delete,
network create/connect/destroy, volume create/destroy); GET /events holds the response open and writes
one JSON object per event, newline after newline, to every subscriber, until the client goes (or
`until` passes). A container's "die" is noticed by the kernel: a pidfd of its supervisor (pidfd_open(2))
becomes readable when that process ends (engine.py), also for containers started before the daemon.
"""
from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from labctl.daemon.api import ApiError

#: How many past events GET /events?since=... can replay.
KEPT = 1000


class EventBus:
    def __init__(self):
        self.subscribers: set[asyncio.Queue] = set()
        self.past: list[dict] = []

    def publish(self, kind: str, action: str, actor_id: str, **attributes) -> dict:
        now = time.time()
        event = {"Type": kind, "Action": action, "Actor": {"ID": actor_id, "Attributes": attributes},
                 "scope": "local", "time": int(now), "timeNano": int(now * 1e9)}
        if kind == "container":   # the old fields, which docker-py and older clients read
            event.update(status=action, id=actor_id, **({"from": attributes["image"]} if "image" in attributes else {}))
        self.past = (self.past + [event])[-KEPT:]
        for queue in self.subscribers:
            queue.put_nowait(event)
        return event


def _filters(request: web.Request) -> dict[str, list[str]]:
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid filters: {raw!r}") from None
    # {"type": ["container"]} or the older {"type": {"container": true}}
    return {k: list(v) if isinstance(v, (list, dict)) else [v] for k, v in parsed.items()}


def matches(event: dict, filters: dict[str, list[str]]) -> bool:
    attrs = event["Actor"]["Attributes"]
    checks = {"type": event["Type"], "event": event["Action"], "container": None, "image": attrs.get("image")}
    for key, wanted in filters.items():
        if key == "container":
            if event["Type"] != "container" or not any(
                    event["Actor"]["ID"].startswith(w) or attrs.get("name") == w for w in wanted):
                return False
        elif key in checks and checks[key] not in wanted:
            return False
    return True


def _time(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ApiError(400, f"invalid {name}: {value!r} (seconds since the epoch)") from None


async def handle_events(request: web.Request) -> web.StreamResponse:
    bus: EventBus = request.app["engine"].bus
    filters, since, until = _filters(request), _time(request, "since"), _time(request, "until")
    queue: asyncio.Queue = asyncio.Queue()
    bus.subscribers.add(queue)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        if since is not None:
            for event in bus.past:
                if event["time"] >= since and (until is None or event["time"] <= until) and matches(event, filters):
                    await response.write(json.dumps(event).encode() + b"\n")
        while True:
            timeout = None if until is None else until - time.time()
            if timeout is not None and timeout <= 0:
                break
            try:
                event = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            if matches(event, filters):
                await response.write(json.dumps(event).encode() + b"\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        bus.subscribers.discard(queue)
    return response
