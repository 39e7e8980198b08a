"""A container process's stdin, stdout and stderr: inherited, given as descriptors, or a terminal of
its own made inside the container (-t), whose master goes back over a socket: runc's --console-socket.

The terminal, inside (the caller's half, raw mode and the copying, is containers/terminal.py):
  1. openpty() *inside* the container, after pivot_root: /dev/ptmx there belongs to the container's own
     devpts instance (step 2 mounts it with `newinstance`), so the terminal is /dev/pts/0 in the
     container, as with Docker
  2. the master goes to the caller over the Unix socket it gave us (sendmsg with SCM_RIGHTS)
  3. setsid(), then ioctl(slave, TIOCSCTTY): the slave becomes the controlling terminal, so Ctrl-C and
     job control work inside; the slave becomes fds 0, 1 and 2
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass
class Stdio:
    stdin: int | None = None     # None: inherit the caller's
    stdout: int | None = None
    stderr: int | None = None
    console: int | None = None   # -t: the container's end of the socket it sends its pty master on

    def install(self) -> None:
        """In the new process, just before exec: these descriptors as 0, 1 and 2, or the terminal."""
        if self.console is not None:
            make_controlling_terminal(open_inside_and_send(self.console))
            return
        for fd, target in ((self.stdin, 0), (self.stdout, 1), (self.stderr, 2)):
            if fd is not None:
                os.dup2(fd, target)

    def close(self) -> None:
        """Close the descriptors that are not 0, 1 or 2 (once the process that needs them has them)."""
        for fd in {self.stdin, self.stdout, self.stderr, self.console}:   # a set: stdout may be stderr
            if fd is not None and fd > 2:
                with contextlib.suppress(OSError):
                    os.close(fd)


def connect_console_socket(path: str):
    """The caller's half: connect to the --console-socket the caller listens on (containerd's shim,
    a test); the new process inherits the connection and sends its master on it (Stdio.console)."""
    import socket
    from labctl.errors import LabError
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise LabError(f"cannot connect to the console socket {path}: {exc.strerror}",
                       "give the path of a listening Unix socket") from None
    return sock


def open_inside_and_send(sock_fd: int) -> int:
    """In the container: openpty(3) on its own /dev/ptmx, send the master with sendmsg(SCM_RIGHTS),
    return the slave."""
    import socket
    master, slave = os.openpty()
    with socket.socket(fileno=sock_fd) as sock:
        socket.send_fds(sock, [b"pty"], [master])
    os.close(master)
    return slave


def make_controlling_terminal(slave: int) -> None:
    """In the container: setsid(2), then ioctl(slave, TIOCSCTTY), then the slave as fds 0, 1, 2."""
    import fcntl
    import termios
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
