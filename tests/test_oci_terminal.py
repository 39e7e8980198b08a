"""Step 10: `labctl-runtime exec --tty --console-socket` (runc's exec, as containerd's `ctr task exec -t`
drives it): the process gets a terminal of the container's own devpts, whose master comes back over
the socket. Judged by the kernel: /proc/PID/fd/0, the controlling terminal and session in /proc/PID/stat,
and what the process wrote, read through the master."""
from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from test_oci_runtime import base_config, bundle, busybox_rootfs, root, rt, wait_status  # noqa: F401

pytestmark = pytest.mark.root


class ConsoleSocket:
    """What containerd's shim does with --console-socket: listen, take the one master sent."""

    def __init__(self, path: str):
        self.path, self.master = path, None
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self):
        conn, _ = self.server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 16, 1)
        self.master = fds[0]
        conn.close()

    def read_line(self) -> str:
        self.thread.join(10)
        self.server.close()
        assert self.master is not None, "no master came over the console socket"
        out = b""
        while b"\n" not in out:
            chunk = os.read(self.master, 100)
            if not chunk:
                break
            out += chunk
        return out.decode().strip()

    def close(self):
        if self.master is not None:
            os.close(self.master)


def stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def test_exec_tty_gets_a_terminal_of_the_containers_devpts(bundle, root, tmp_path):
    rt(root, "create", "--bundle", str(bundle(base_config(["sleep", "30"]))), "x1")
    rt(root, "start", "x1")
    pid1 = wait_status(root, "x1", "running")["pid"]
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"terminal": True, "args": ["sh", "-c", "tty; exec sleep 30"], "cwd": "/",
                                   "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0}}))
    console = ConsoleSocket(str(tmp_path / "console.sock"))
    try:
        rt(root, "exec", "--detach", "--pid-file", str(tmp_path / "pid"), "--console-socket", console.path,
           "--process", str(process), "x1")
        said = console.read_line()
        pid = int((tmp_path / "pid").read_text())
        assert said == "/dev/pts/0", said
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/pts/0"
        pts = os.stat(f"/proc/{pid}/fd/0")
        assert pts.st_dev == os.stat(f"/proc/{pid1}/root/dev/pts/ptmx").st_dev != os.stat("/dev/pts/ptmx").st_dev, \
            "the terminal is not of the container's own devpts"
        assert all(os.stat(f"/proc/{pid}/fd/{fd}").st_rdev == pts.st_rdev for fd in (1, 2))
        fields = stat_fields(pid)
        assert int(fields[4]) == pts.st_rdev, "the terminal is not the process's controlling terminal (tty_nr)"
        assert int(fields[3]) == pid, "the process does not lead a session of its own (setsid)"
    finally:
        console.close()


def test_exec_tty_in_the_foreground_passes_the_status_on(bundle, root, tmp_path):
    rt(root, "create", "--bundle", str(bundle(base_config(["sleep", "30"]))), "x2")
    rt(root, "start", "x2")
    wait_status(root, "x2", "running")
    console = ConsoleSocket(str(tmp_path / "console.sock"))
    try:
        done = rt(root, "exec", "-t", "--console-socket", console.path, "x2", "sh", "-c",
                  "readlink /proc/self/fd/0; exit 3", check=False)
        assert done.returncode == 3, done.stderr
        assert console.read_line() == "/dev/pts/0"
    finally:
        console.close()


def test_exec_tty_without_a_console_socket_is_one_line_and_runs_nothing(bundle, root, tmp_path):
    rt(root, "create", "--bundle", str(bundle(base_config(["sleep", "30"]))), "x3")
    rt(root, "start", "x3")
    wait_status(root, "x3", "running")
    marker = tmp_path / "ran"
    done = rt(root, "exec", "-t", "x3", "sh", "-c", f"touch /proc/1/root{marker}", check=False)
    assert done.returncode != 0 and "--console-socket" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = rt(root, "exec", "--console-socket", str(tmp_path / "none.sock"), "x3", "true", check=False)
    assert done.returncode != 0 and "--tty" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert json.loads(rt(root, "ps", "--format", "json", "x3").stdout) == [wait_status(root, "x3", "running")["pid"]]
