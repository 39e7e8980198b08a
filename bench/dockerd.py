"""Debian's own dockerd (docker.io 20.10) for bench/daemon.py, started on private paths only.

Everything it writes goes under one temporary directory:

    docker.sock     --host unix://...       the API socket (not /run/docker.sock)
    data/           --data-root             images, overlay2 layers, and its containerd's root
    exec/           --exec-root             runtime state: the managed containerd's socket and state,
                                            libnetwork's netns files, the pidfile
    daemon.json     --config-file           instead of /etc/docker/daemon.json; it holds only
                                            "deprecated-key-path": the daemon's identity key, key.json
                                            (20.10 would create /etc/docker/key.json otherwise)

and it is kept off the host's network: --bridge=none (no docker0), --iptables=false --ip6tables=false
--ip-masq=false (no firewall rules), --ip-forward=false (net.ipv4.ip_forward is left alone). dockerd
starts its own containerd as its child (the "managed" containerd, a config under exec/containerd).

`HostSnapshot` records what the host looks like before (links, nft and iptables rules, a few sysctls,
the directories docker and containerd use by default), so that the benchmark can show afterwards that
nothing was left behind.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
MNT_DETACH = 2
#: Host state dockerd may change by default; the flags above keep it as it is, and the check proves it.
SYSCTLS = ("net/ipv4/ip_forward", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
DEFAULT_DIRS = ("/run/docker", "/var/run/docker.sock", "/var/lib/docker", "/var/lib/containerd", "/etc/docker",
                "/run/containerd")


class Unavailable(Exception):
    """dockerd could not start here; the message is one line saying why."""


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


class PrivateDockerd:
    def __init__(self, work: Path):
        self.root = work / "dockerd"
        self.root.mkdir()
        (self.root / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}))
        self.socket = self.root / "docker.sock"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(self.root))
        self.process: subprocess.Popen | None = None
        self.started: dict[int, str | None] = {}       # PID -> start time, of dockerd and all it started

    def start(self, timeout: float = 60) -> None:
        r = self.root
        argv = [DOCKERD, "--host", f"unix://{self.socket}", "--data-root", str(r / "data"),
                "--exec-root", str(r / "exec"), "--pidfile", str(r / "exec" / "dockerd.pid"),
                "--config-file", str(r / "daemon.json"),
                "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
                "--bridge=none", "--userland-proxy=false"]
        log = open(r / "dockerd.log", "wb")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.remember()
            if self.process.poll() is not None:
                raise Unavailable(f"dockerd exited ({self.process.returncode}): {self.last_error()}")
            if subprocess.run([DOCKER, "version"], env=self.env, capture_output=True).returncode == 0:
                self.remember()
                return
            time.sleep(0.3)
        raise Unavailable(f"dockerd did not answer in {timeout:.0f} s: {self.last_error()}")

    def last_error(self) -> str:
        lines = (self.root / "dockerd.log").read_text(errors="replace").splitlines()
        errors = [line for line in lines if "level=error" in line or "level=fatal" in line]
        return (errors[-1] if errors else lines[0] if lines else "no log")[-200:]

    def remember(self) -> None:
        """Record dockerd and its descendants (containerd, shims) with their start times, to stop them by PID."""
        if self.process is None:
            return
        tree, todo = _children(), [self.process.pid]
        while todo:
            pid = todo.pop()
            self.started.setdefault(pid, _start_time(pid))
            todo.extend(tree.get(pid, []))

    def alive(self) -> list[int]:
        """The recorded processes still running (same PID and the same start time: not a reused PID)."""
        return [pid for pid, start in self.started.items() if start is not None and _start_time(pid) == start]

    def pss_kib(self, pss) -> tuple[int, list[str]]:
        self.remember()
        total, names = 0, []
        for pid in self.alive():
            total += pss(pid)[0]
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        return total, names

    def docker(self, *args: str) -> str:
        result = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("See '")]
            raise Unavailable(f"docker {args[0]} failed: {(lines or ['no message'])[-1][:200]}")
        return result.stdout

    def stop(self) -> None:
        """SIGTERM dockerd (it stops its containerd), wait; then whatever of ours still runs, by PID;
        then unmount what is left under the private root (deepest first) and remove it."""
        self.remember()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.alive():
                os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        libc = ctypes.CDLL(None, use_errno=True)
        for mount in sorted(mounts_under(self.root), key=len, reverse=True):
            libc.umount2(mount.encode(), MNT_DETACH)


def mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix) or point == str(root):
            found.append(point)
    return found


class HostSnapshot:
    """What dockerd could change on the host: network links, firewall rules, sysctls, default dirs."""

    def __init__(self):
        self.state = self.take()

    @staticmethod
    def take() -> dict[str, str]:
        def out(argv: list[str]) -> str:
            try:
                return subprocess.run(argv, capture_output=True, text=True).stdout
            except FileNotFoundError:
                return ""
        state = {"links": "\n".join(line.split()[0] for line in out(["ip", "-br", "link"]).splitlines()),
                 "nft": out(["nft", "list", "ruleset"])}
        for save in ("iptables-save", "ip6tables-save"):     # without its "# Generated ... on <date>" lines
            state[save] = "\n".join(line for line in out([save]).splitlines() if not line.startswith("#"))
        for name in SYSCTLS:
            state[name] = Path("/proc/sys", name).read_text().strip()
        for path in DEFAULT_DIRS:
            state[path] = out(["find", path]) if os.path.exists(path) else "(absent)"
        return state

    def remove_created_dirs(self) -> None:
        """dockerd 20.10 creates /run/docker/plugins whatever its --exec-root (the plugin sockets' fixed
        place): remove such default directories if they were absent before and hold only empty directories."""
        for path in DEFAULT_DIRS:
            if self.state[path] == "(absent)" and os.path.isdir(path):
                for parent, _, _ in sorted(os.walk(path), key=lambda walked: len(walked[0]), reverse=True):
                    try:
                        os.rmdir(parent)
                    except OSError:
                        break

    def changes(self, work: Path, leftover: list[int]) -> list[str]:
        now = self.take()
        found = [f"{key} changed" for key in self.state if now[key] != self.state[key]]
        found += [f"mount left: {point}" for point in mounts_under(work)]
        found += [f"process left: {pid}" for pid in leftover]
        return found
