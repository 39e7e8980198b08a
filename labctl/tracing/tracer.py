"""Loading a bcc program, and the Tracer every tracer here builds on.

A tracer is a BPF program in C (kept beside its loader, as bcc's tools/ do), attached to tracepoints:

    load_bpf(SCOPE_C + PROGRAM)           bcc compiles the C with clang, and bpf(BPF_PROG_LOAD) has the
                                          kernel's verifier check it; the maps are created
    attach_tracepoint(category:event)     perf_event_open(2) on the tracepoint, the program attached to it
    ring buffer -> Python                 the program writes records to a BPF ring buffer; poll() reads
                                          them and event() shapes each into a dict
    close()                               detach and close every file descriptor: the kernel unloads a
                                          program when the last descriptor to it closes

Every program the lab loads is named lab_*, so `bpftool prog show` tells them apart from others'.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from labctl.errors import LabError, MissingRequirementError
from labctl.tracing.requirements import TRACEFS, require_tracing
from labctl.tracing.scope import MAX_SCOPES, SCOPE_C, Scope


def load_bpf(text: str, debug: bool = False):
    """Compile and load a bcc program. The compiler's output is shown only with debug=True: a student
    who lacks headers should read which package to install, not three screens of clang."""
    require_tracing()
    from bcc import BPF
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        if not debug:
            os.dup2(log.fileno(), 2)   # clang writes to fd 2 directly, below Python's sys.stderr
        try:
            return BPF(text=text)
        except Exception as exc:
            log.seek(0)
            output = log.read().decode(errors="replace")
            first = next((line.strip() for line in output.splitlines() if "error:" in line), str(exc))
            raise LabError(f"the eBPF program did not compile: {first[:200]}",
                           "`labctl doctor` checks tracefs, headers and bcc; --debug shows the compiler output") \
                from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def to_dict(event, raw_fields: tuple[str, ...] = ()) -> dict:
    """A ctypes struct from a BPF map or ring buffer, as a plain dict. Char arrays are decoded up to
    their first NUL, except raw_fields, which keep all their bytes."""
    out = {}
    for name, _ctype in event._fields_:
        if name in raw_fields:
            field = getattr(type(event), name)
            out[name] = ctypes.string_at(ctypes.addressof(event) + field.offset, field.size)
            continue
        value = getattr(event, name)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, ctypes.Array):
            value = list(value)
        out[name] = value
    return out


class Tracer:
    """A loaded bcc program on tracepoints, watching up to MAX_SCOPES containers.

    Subclasses give PROGRAM (C, appended to SCOPE_C), TRACEPOINTS ({"category:event": "lab_function"})
    and event(dict) -> dict to shape one ring-buffer record. Use it as a context manager: leaving the
    block (also by Ctrl-C or SIGTERM) detaches every program and closes every map. Nothing is pinned
    in /sys/fs/bpf, so even a SIGKILLed tracer leaves nothing loaded: the kernel unloads a program when
    the last file descriptor to it closes.
    """
    NAME = ""
    PROGRAM = ""
    TRACEPOINTS: dict[str, str] = {}
    EVENTS_MAP: str | None = "events"
    RAW_FIELDS: tuple[str, ...] = ()

    def __init__(self, scopes: Scope | list[Scope] | None = None, debug: bool = False):
        self.scopes: list[Scope] = []
        self._pending: list[dict] = []
        self._callback_error: BaseException | None = None
        started = time.monotonic()
        self.bpf = load_bpf(SCOPE_C + self.PROGRAM, debug=debug)
        try:
            for tracepoint, function in self.TRACEPOINTS.items():
                try:
                    self.bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=function.encode())
                except Exception:
                    raise LabError(f"could not attach to tracepoint {tracepoint}",
                                   f"is it in {TRACEFS}/events/{tracepoint.replace(':', '/')}? "
                                   "`labctl doctor` checks tracefs") from None
            if self.EVENTS_MAP:
                self.bpf[self.EVENTS_MAP.encode()].open_ring_buffer(self._on_event)
        except BaseException:
            self.close()
            raise
        self.attach_seconds = time.monotonic() - started
        if scopes is not None:
            self.set_scopes(scopes if isinstance(scopes, list) else [scopes])

    # -- scope ------------------------------------------------------------------------------
    def set_scopes(self, scopes: list[Scope]) -> None:
        """Point the loaded program at these containers (slot i = scopes[i]); no recompilation."""
        if len(scopes) > MAX_SCOPES:
            raise LabError(f"at most {MAX_SCOPES} containers at once", "trace fewer containers")
        table = self.bpf[b"scopes"]
        for i in range(MAX_SCOPES):
            s = scopes[i] if i < len(scopes) else None
            table[ctypes.c_int(i)] = table.Leaf(s.pidns_dev if s else 0, s.pidns_ino if s else 0,
                                                s.cgroup_id if s else 0)
        self.scopes = list(scopes)
        self.on_scopes_changed()

    def on_scopes_changed(self) -> None:
        """Hook for tracers that keep per-container state in maps."""

    def label(self, slot: int) -> str:
        return self.scopes[slot].label if 0 <= slot < len(self.scopes) else f"slot {slot}"

    # -- events -----------------------------------------------------------------------------
    def _on_event(self, ctx, data, size) -> int:
        try:
            raw = self.bpf[self.EVENTS_MAP.encode()].event(data)
            shaped = self.event(to_dict(raw, self.RAW_FIELDS))
            if shaped is not None:
                self._pending.append(shaped)
        except BaseException as exc:   # ctypes would print and swallow it: keep it for poll()
            self._callback_error = exc
        return 0

    def event(self, raw: dict) -> dict | None:
        return raw

    def poll(self, timeout_ms: int = 100) -> list[dict]:
        """Events that arrived, waiting up to timeout_ms for the first."""
        if self.EVENTS_MAP:
            self.bpf.ring_buffer_poll(timeout_ms)
            if self._callback_error is not None:
                error, self._callback_error = self._callback_error, None
                raise error
        else:
            time.sleep(timeout_ms / 1000)
        out, self._pending = self._pending, []
        return out

    def drain(self, settle_ms: int = 50) -> list[dict]:
        """Everything still in the ring buffer."""
        events = []
        while True:
            batch = self.poll(settle_ms)
            if not batch:
                return events
            events += batch

    def stream(self, duration: float | None = None, stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
        """Events as they come, for `duration` seconds or until stop() says so."""
        deadline = None if duration is None else time.monotonic() + duration
        while (deadline is None or time.monotonic() < deadline) and not stop():
            yield from self.poll(100)

    # -- lifetime ---------------------------------------------------------------------------
    def program_ids(self) -> list[int]:
        """IDs of the BPF programs this tracer loaded (as `bpftool prog show` lists them)."""
        return program_ids_held_by(os.getpid(), self.bpf)

    def close(self) -> None:
        """Detach every program and free every map (bcc's cleanup closes the file descriptors)."""
        bpf = getattr(self, "bpf", None)
        if bpf is not None:
            with contextlib.suppress(Exception):
                bpf.cleanup()
            self.bpf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def program_ids_held_by(pid: int, bpf=None) -> list[int]:
    """Program IDs behind the BPF file descriptors of a process, from /proc/<pid>/fdinfo (prog_id: N)."""
    ids = []
    fds = [f.fd for f in bpf.funcs.values()] if bpf is not None else None
    for entry in os.listdir(f"/proc/{pid}/fdinfo"):
        if fds is not None and int(entry) not in fds:
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/fdinfo/{entry}").read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.append(int(line.split()[1]))
    return sorted(set(ids))


def loaded_program_ids() -> dict[int, str]:
    """Every BPF program the kernel has loaded now: {id: name}, from `bpftool prog show --json`."""
    import json
    import shutil
    import subprocess
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not os.path.exists(bpftool):
        raise MissingRequirementError("bpftool is not installed", "apt-get install bpftool")
    out = subprocess.run([bpftool, "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p.get("name", "") for p in json.loads(out or "[]")}
