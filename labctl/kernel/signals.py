"""Passing on the signals a waiting parent receives to the process it waits for, as `docker run` and
`docker exec` do by default (their --sig-proxy).

Ctrl-C (SIGINT) and Ctrl-\\ (SIGQUIT) at labctl's terminal, a closed terminal (SIGHUP) and `kill`
(SIGTERM) reach labctl, not the container: the container's processes are in a session and a PID
namespace of their own. So whoever waits for a process inside (labctl for `run` and `exec`, step 1's
helper for its PID 1, the process `exec` leaves outside the PID namespace) forwards these four to it.
The process inside then decides: a PID 1 ignores every signal it has no handler for (the kernel
protects a namespace's init), anything else dies of the default action.
"""
from __future__ import annotations

import contextlib
import os
import signal

#: What a terminal or a supervisor sends to end or interrupt a program.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@contextlib.contextmanager
def forwarding_to(pid: int):
    """Within the block, kill(pid, signum) for each FORWARDED signal we receive; the previous handlers
    come back afterwards."""
    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):   # it has just ended: nothing to pass on
            os.kill(pid, signum)
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
