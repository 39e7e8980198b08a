"""Keeping a download honest: stall detection, a deadline, and cancellation, so that Ctrl-C, SIGTERM and a
registry that stops sending each end `labctl pull` quickly, with nothing half-stored.

  stall       a response that sends nothing for `stall_timeout` seconds (the socket's timeout), or less
              than FLOOR_BYTES_PER_S on average over such a window (a trickle: one byte a second
              resets any timeout), is stalled: TransferStalled, one line, not retried. curl's
              --speed-limit/--speed-time is the same rule.
  deadline    a manifest (a small document) must arrive in full within MANIFEST_DEADLINE seconds.
  cancel      Python runs signal handlers in the main thread only, so Ctrl-C and SIGTERM (which
              labctl turns into KeyboardInterrupt) interrupt the main thread and never a download
              thread. The main thread therefore waits for its download threads in short joins, and
              when interrupted sets the Cancel flag and shuts down every open socket
              (shutdown(2) wakes a thread blocked in recv(2) on it). Each thread then leaves its
              blob_writer, which deletes the partial file, and ends. The threads are daemon threads,
              waited for at most CANCEL_GRACE seconds: the process never waits on a stuck one to exit.

$LABCTL_PULL_STALL_TIMEOUT (or `labctl pull --stall-timeout`) sets stall_timeout, default 30 s.
"""
from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

from labctl.images.auth import RegistryError

STALL_TIMEOUT = 30.0          # seconds without progress before a transfer counts as stalled
FLOOR_BYTES_PER_S = 1024      # slower than this over a whole stall window is a stall too
MANIFEST_DEADLINE = 60.0      # seconds for a manifest's body, however it trickles
CANCEL_GRACE = 0.5            # seconds the main thread gives its download threads to clean up


class TransferStalled(RegistryError):
    """A response stopped making progress (or never started) within the stall timeout."""


class Cancelled(Exception):
    """The pull was cancelled (Ctrl-C, SIGTERM, or another download failed): a download thread stops."""


def unanswered(exc: BaseException, url: urllib.parse.SplitResult, method: str, timeout: float) -> RegistryError | None:
    """What a request that got no answer means to the user, when no retry will change it (else None):
    silence for the stall timeout (TimeoutError), or a registry name that does not resolve."""
    if isinstance(exc, TimeoutError):
        return TransferStalled(f"{url.netloc} sent no answer to {method} {url.path} within {timeout:g} s",
                               "is the registry stuck? try again, or allow more time with --stall-timeout SECONDS")
    if isinstance(exc, socket.gaierror):
        return RegistryError(f"cannot resolve the registry's name {url.hostname!r} ({exc.strerror})",
                             "check the image reference's registry, or use the lab's: "
                             "`labctl registry start`, then 127.0.0.1:5000/lab/busybox")
    return None


def stall_timeout(value: float | None = None) -> float:
    """The stall timeout: the given value, else $LABCTL_PULL_STALL_TIMEOUT, else STALL_TIMEOUT."""
    text = value if value is not None else os.environ.get("LABCTL_PULL_STALL_TIMEOUT")
    if text in (None, ""):
        return STALL_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise RegistryError(f"the stall timeout {text!r} is not a number of seconds above 0",
                            "give e.g. --stall-timeout 30 (or LABCTL_PULL_STALL_TIMEOUT=30)")
    return seconds


class Cancel:
    """The cancel flag of one pull, and every connection its threads have open (to shut them down)."""

    def __init__(self):
        self.flag = threading.Event()
        self._connections: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def track(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._connections.add(conn)

    def untrack(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def check(self) -> None:
        if self.flag.is_set():
            raise Cancelled()

    def sleep(self, seconds: float) -> None:
        """time.sleep that a cancel cuts short."""
        if self.flag.wait(seconds):
            raise Cancelled()

    def cancel(self) -> None:
        """Set the flag, then shutdown(SHUT_RDWR) every open connection's socket: a thread blocked in
        recv(2) on it returns at once."""
        self.flag.set()
        with self._lock:
            socks = [conn.sock for conn in self._connections if conn.sock is not None]
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass   # closed already


class Watch:
    """The progress of one response body: call `received(n)` after each read."""

    def __init__(self, what: str, timeout: float, cancel: Cancel, deadline: float | None = None):
        self.what, self.timeout, self.cancel, self.deadline = what, timeout, cancel, deadline
        self.window_start, self.window_bytes = time.monotonic(), 0

    def received(self, nbytes: int) -> None:
        self.cancel.check()
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise TransferStalled(f"{self.what} did not arrive within {MANIFEST_DEADLINE:g} s",
                                  "the registry is too slow or stuck: try again later")
        self.window_bytes += nbytes
        elapsed = now - self.window_start
        if elapsed >= self.timeout:
            if self.window_bytes < FLOOR_BYTES_PER_S * elapsed:
                raise self.stalled(f"{self.window_bytes} bytes in the last {elapsed:.0f} s, below "
                                   f"{FLOOR_BYTES_PER_S} bytes/s")
            self.window_start, self.window_bytes = now, 0

    def stalled(self, how: str) -> TransferStalled:
        return TransferStalled(f"the transfer of {self.what} stalled ({how}); nothing of it was stored",
                               "the registry or the network is stuck: try again, or allow more time "
                               "with --stall-timeout SECONDS")

    def read(self, raw: http.client.HTTPResponse, limit: int) -> bytes:
        """At most `limit` bytes, as soon as any arrive (read1: one recv, where read(n) would wait for
        all n); b"" at the end. No byte within the socket's timeout is a stall."""
        if raw.length == 0:
            return raw.read()    # b"": read1 would not tell http.client the response is done, read does
        try:
            data = raw.read1(limit)
        except (socket.timeout, TimeoutError):
            self.cancel.check()
            raise self.stalled(f"nothing for {self.timeout:g} s") from None
        except OSError:
            self.cancel.check()     # the socket was shut down by cancel(): not a network failure
            raise
        self.received(len(data))
        return data


def run_parallel(jobs: list[Callable[[], int]], parallel: int, cancel: Cancel) -> list[int]:
    """Run the jobs in up to `parallel` daemon threads and return their results, in order. The main
    thread waits in 0.1 s joins, so Ctrl-C and SIGTERM reach it at once. On an interrupt or a job's
    failure the rest are cancelled, given CANCEL_GRACE seconds to clean up, and the first error raised."""
    pending = list(enumerate(jobs))
    results: list[int] = [0] * len(jobs)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                i, job = pending.pop(0)
            try:
                results[i] = job()
            except BaseException as exc:      # handed to the main thread, which raises it
                with lock:
                    errors.append(exc)

    threads = [threading.Thread(target=worker, daemon=True, name=f"pull-{n}")
               for n in range(max(1, min(parallel, len(jobs))))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive() and not errors:
                thread.join(0.1)
        if errors:
            raise errors[0]
    except BaseException:
        cancel.cancel()
        deadline = time.monotonic() + CANCEL_GRACE
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        raise
    return results
