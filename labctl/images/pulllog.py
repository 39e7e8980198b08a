"""The event log of a pull: what it did, when. labctl/images/distribution.py adds an event for every
request, response, token, manifest and blob; the step 5 narration prints them as they come and the
timeline figure (labctl/plots/registry.py) draws them afterwards.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable


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
        if self.narrate and kind not in ("blob-bytes", "push-bytes"):
            self.narrate(event)
        return event

    def to_json(self) -> list[dict]:
        return [{"t": e.t, "kind": e.kind, "text": e.text, **e.data} for e in self.events]
