"""`-it`: give the container a terminal of its own, as `docker run -it` does. labctl's half:

  1. a Unix socket pair: the container's end goes to the runtime, which opens the pty inside the
     container and sends its master back over it (labctl/runtime/stdio.py: runc's --console-socket);
     receive_master takes it (SCM_RIGHTS)
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


def console_socket() -> tuple[int, int]:
    """socketpair(AF_UNIX): (labctl's end, the container's end) for passing the pty master."""
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return ours.detach(), theirs.detach()


def receive_master(sock_fd: int) -> int:
    """In labctl: recvmsg(SCM_RIGHTS) the container's pty master. Closes the socket."""
    import socket
    with socket.socket(fileno=sock_fd) as sock:
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    if not fds:
        from labctl.errors import LabError
        raise LabError("the container sent no terminal", "run without -t to see its output")
    return fds[0]


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
