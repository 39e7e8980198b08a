"""The lab's own registry: Debian's docker-registry (the real distribution registry) on 127.0.0.1,
its storage in the state directory, seeded with the lab's images built locally. No internet needed.

    labctl registry start [--port 5000]     start it (about 65 ms) and push lab/busybox, lab/layered,
                                            lab/multiarch (an index: amd64 + arm64/v8) into it
    labctl pull 127.0.0.1:5000/lab/busybox  pull from it, exactly as from Docker Hub
    labctl registry stop                    stop it and remove its storage

The process and its storage are recorded in the journal before they exist, so `labctl cleanup`
stops it too. The same RegistryServer runs the test fixtures' registries (anonymous, htpasswd,
token auth) and the one `labctl check 5` starts.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from labctl.images import mediatypes, ocilayout
from labctl import state
from labctl.errors import LabError, MissingRequirementError

REGISTRY_BINARY = "/usr/bin/docker-registry"
DEFAULT_PORT = 5000
LAB_NAMESPACE = "lab"


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it: bind to port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether the process `pid` holds the socket listening on 127.0.0.1:`port` (/proc/net/tcp: the
    listener's inode; /proc/PID/fd: the process's sockets)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":   # 127.0.0.1:port, LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:   # the process has ended (or one of its descriptors was closed meanwhile)
        return False


def _yaml(obj, indent: int = 0) -> str:
    """The registry's config is YAML; JSON-style scalars are valid YAML, so this small writer does."""
    pad = "  " * indent
    lines = []
    for key, value in obj.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:" + (" {}" if not value else ""))
            if value:
                lines.append(_yaml(value, indent + 1))
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")
    return "\n".join(lines)


class RegistryServer:
    """One docker-registry process serving `root`/storage on 127.0.0.1:`port`.

    `auth` is the config's auth section: None (anonymous), {"htpasswd": {"realm":..., "path":...}},
    or {"token": {...}} (see labctl.images.tokenserver). `detach` lets it outlive this process (labctl registry
    start); the journal records it either way."""

    def __init__(self, root: str | os.PathLike, port: int | None = None, auth: dict | None = None,
                 detach: bool = False, extra: dict | None = None):
        self.root = Path(root)
        self.extra = extra or {}
        self.port = port or free_port()
        self.port_chosen = port is None   # free_port()'s: another may take it before the registry binds it
        self.auth = auth
        self.detach = detach
        self.process: subprocess.Popen | None = None
        self.records: list[state.Record] = []

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def config(self) -> dict:
        cfg = {"version": "0.1",
               "log": {"level": "error", "accesslog": {"disabled": True}},
               "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
               "http": {"addr": self.host, "secret": secrets.token_hex(16)},
               "health": {"storagedriver": {"enabled": False}}}
        if self.auth:
            cfg["auth"] = self.auth
        cfg.update(self.extra)   # e.g. storage middleware, compatibility (the tests use these)
        return cfg

    def start(self, timeout: float = 10.0) -> "RegistryServer":
        """Start docker-registry and wait until it answers. A port free_port() chose can be taken by
        someone else before the registry binds it (any outgoing connection's local port comes from the
        same range): then the registry exits at once, and it is started again on another port."""
        if not os.access(REGISTRY_BINARY, os.X_OK):
            raise MissingRequirementError(f"{REGISTRY_BINARY} is missing",
                                          "install Debian's docker-registry: `apt-get install docker-registry`")
        self.records.append(state.record_path(str(self.root), "registry storage"))
        self.storage.mkdir(parents=True, exist_ok=True)
        attempts = 3 if self.port_chosen else 1
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
            if self._start_once(timeout, last=attempt == attempts - 1):
                return self
        raise AssertionError("unreachable: the last attempt raises")

    def _start_once(self, timeout: float, last: bool) -> bool:
        config = self.root / "config.yml"
        config.write_text(_yaml(self.config()) + "\n")
        log = open(self.root / "registry.log", "ab")
        with log:
            self.process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=self.detach)
        record = state.record_process(self.process.pid, f"docker-registry on {self.host}")
        self.records.append(record)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if not last:   # the port was taken: forget this process, try another port
                    state.undo_record(record)
                    self.records.remove(record)
                    return False
                tail = (self.root / "registry.log").read_text(errors="replace")[-400:]
                self.stop()
                raise LabError(f"docker-registry exited at once (status {self.process.returncode}): {tail.strip()}",
                               f"is port {self.port} taken? `ss -ltnp | grep {self.port}`")
            # the answer must come from this process: another server on the port would answer too
            if listens(self.process.pid, self.port) and self.answers():
                return True
            time.sleep(0.01)
        self.stop()
        raise LabError(f"docker-registry did not answer on {self.host} within {timeout} s", "look at its log")

    def answers(self) -> bool:
        """Does GET /v2/ answer (200 or 401)?"""
        conn = http.client.HTTPConnection(self.host, timeout=1)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status in (200, 401)
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        """Kill the registry, remove its storage, drop the records (newest first)."""
        for rec in reversed(self.records):
            state.undo_record(rec)
        self.records = []
        if self.process:
            with contextlib.suppress(ChildProcessError):
                self.process.wait(timeout=5)

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- content ---------------------------------------------------------------------------------
    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob (tests corrupt it there)."""
        hexpart = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def skopeo_copy(source: str, destination: str, *, creds: tuple[str, str] | None = None, all_images: bool = False,
                docker_v2s2: bool = False) -> None:
    """`skopeo copy` an image into a registry (plain HTTP to 127.0.0.1). --format v2s2 converts the OCI
    manifest into a Docker v2 schema 2 one; --all copies an index with all its manifests."""
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
    if creds:
        argv += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    if all_images:
        argv.append("--all")
    if docker_v2s2:
        argv += ["--format", "v2s2"]
    argv += [source, destination]
    if not shutil.which("skopeo"):
        raise MissingRequirementError("skopeo is missing", "`apt-get install skopeo`")
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"skopeo copy {source} -> {destination} failed: {done.stderr.strip()[-300:]}",
                       "is the registry running? `labctl registry status`")


def write_lab_layout(dest: str | os.PathLike) -> Path:
    """The lab's images as an OCI layout (ref names busybox, layered, multiarch)."""
    return ocilayout.write_layout(dest, ocilayout.lab_images())


def seed(server_host: str, layout: str | os.PathLike, names: list[str] | None = None, *,
         creds: tuple[str, str] | None = None, docker_v2s2: bool = False, namespace: str = LAB_NAMESPACE,
         suffix: str = "") -> list[str]:
    """Push images from an OCI layout into a registry as NAMESPACE/NAME{suffix}:latest."""
    tags = ocilayout.read_layout_index(layout)
    pushed = []
    for name in names or list(tags):
        target = f"{server_host}/{namespace}/{name}{suffix}:latest"
        is_index = tags[name]["mediaType"] in mediatypes.INDEX_TYPES
        skopeo_copy(f"oci:{layout}:{name}", f"docker://{target}", creds=creds, all_images=is_index,
                    docker_v2s2=docker_v2s2)   # an index becomes a Docker manifest list
        pushed.append(target)
    return pushed


# ---------------------------------------------------------------------------------------------
# The lab registry: `labctl registry start|stop|status`


def _lab_dir() -> Path:
    return state.state_dir() / "registry"


def _info_path() -> Path:
    return state.state_dir() / "registry.json"


def status() -> dict | None:
    """{pid, port, host, storage, images} of the running lab registry, or None."""
    try:
        info = json.loads(_info_path().read_text())
    except (FileNotFoundError, ValueError):
        return None
    if state.process_start_time(info["pid"]) != info["start_time"] or _zombie(info["pid"]):
        return None
    return info


def _zombie(pid: int) -> bool:
    """Killed but not reaped yet (its parent is whoever adopted it when labctl exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def start(port: int = DEFAULT_PORT) -> dict:
    """Start the lab registry (detached: it outlives labctl) and seed it with the lab's images."""
    if not 1 <= port <= 65535:
        raise LabError(f"port {port} is not a TCP port", "choose one from 1 to 65535, e.g. --port 5000")
    running = status()
    if running:
        raise LabError(f"the lab registry is already running on {running['host']} (PID {running['pid']})",
                       "`labctl registry stop` first, or just use it")
    with contextlib.suppress(FileNotFoundError):
        _info_path().unlink()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the registry (Go) does: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise LabError(f"port {port} on 127.0.0.1 is taken", "choose another with --port") from None
    server = RegistryServer(_lab_dir(), port, detach=True).start()
    try:
        layout = state.new_tmpdir("lab-layout-")
        try:
            pushed = seed(server.host, write_lab_layout(layout))
        finally:
            shutil.rmtree(layout, ignore_errors=True)
    except BaseException:
        server.stop()
        raise
    info = {"pid": server.process.pid, "start_time": state.process_start_time(server.process.pid),
            "port": port, "host": server.host, "storage": str(server.storage), "images": pushed,
            "records": [str(r.path) for r in server.records]}
    state.atomic_write_json(_info_path(), info)
    return info


def stop() -> dict | None:
    """Stop the lab registry and remove its storage (its journal records go with it)."""
    info = status()
    for rec in reversed(state.records()):
        if str(rec.path) in (json.loads(_info_path().read_text()).get("records", []) if _info_path().exists() else []):
            state.undo_record(rec)
    with contextlib.suppress(FileNotFoundError):
        _info_path().unlink()
    return info


@contextlib.contextmanager
def token_auth_registry(images: tuple[str, ...] = ("busybox", "multiarch")):
    """A throwaway registry with bearer-token auth, as Docker Hub runs it, seeded with lab images:
    yields (server, (username, password), token_server). The step 5 demo and notebook use it."""
    from labctl.images.tokenserver import TokenServer
    root = state.new_tmpdir("registry-demo-")
    credentials = ("student", secrets.token_urlsafe(12))
    try:
        with TokenServer(users={credentials[0]: credentials[1]}) as tokens:
            with RegistryServer(root / "registry", auth=tokens.registry_auth_config(root)) as server:
                layout = write_lab_layout(root / "layout")
                seed(server.host, layout, list(images), creds=credentials)
                yield server, credentials, tokens
    finally:
        shutil.rmtree(root, ignore_errors=True)
