"""`-it`: give the container a terminal of its own, as `docker run -it` does.

  1. openpty(): a master/slave pair. The container's PID 1 gets the slave as stdin/stdout/stderr and,
     after setsid(), as its controlling terminal (ioctl TIOCSCTTY), so Ctrl-C and job control work inside.
  2. labctl puts its own terminal in raw mode (keys go through untouched: the container's line
     discipline does the echo and the signals), copies bytes both ways, and copies the window size
     (TIOCGWINSZ/TIOCSWINSZ) now and on every SIGWINCH.
  3. On exit the saved terminal mode is restored, whatever happened.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import termios
import tty
from typing import Callable, Iterator


def open_pty() -> tuple[int, int]:
    """openpty(3): (master, slave). The slave's fd is passed to the container, the master stays here."""
    master, slave = os.openpty()
    return master, slave


def make_controlling_terminal(slave: int) -> None:
    """In the container's PID 1: setsid(), then ioctl(slave, TIOCSCTTY), then the slave as fds 0, 1, 2."""
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def copy_window_size(from_fd: int, to_fd: int) -> None:
    """ioctl(TIOCGWINSZ) on our terminal, ioctl(TIOCSWINSZ) on the pty master: the kernel then sends
    SIGWINCH to the container's foreground process group."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(from_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(to_fd, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """tcgetattr, cfmakeraw (tty.setraw), and tcsetattr back on the way out."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def relay(master: int, done: Callable[[], bool], stdin: int = 0, stdout: int = 1) -> None:
    """Copy stdin -> master and master -> stdout until the container side closes (EIO) or done()."""
    if os.isatty(stdin):
        copy_window_size(stdin, master)
        old = signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(stdin, master))
    else:
        old = None
    watch = [master, stdin]
    try:
        with raw_mode(stdin):
            while True:
                try:
                    ready, _, _ = select.select(watch, [], [], 0.2)
                except InterruptedError:
                    continue
                if master in ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError as exc:
                        if exc.errno == errno.EIO:   # every slave fd closed: the container has ended
                            return
                        raise
                    if not data:
                        return
                    os.write(stdout, data)
                if stdin in ready:
                    data = os.read(stdin, 65536)
                    if not data:
                        watch.remove(stdin)          # EOF on our side: stop reading, keep showing output
                    else:
                        os.write(master, data)
                if not ready and done():
                    return
    finally:
        if old is not None:
            signal.signal(signal.SIGWINCH, old)
