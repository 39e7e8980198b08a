"""GET /_ping, /version, /info: what a client asks first (the docker CLI pings, then negotiates the API
version from the `API-Version` header), GET /events (events.py), and POST /auth (`docker login`)."""
from __future__ import annotations

import os
import platform

from aiohttp import web

import labctl
from labctl.daemon.api import API_VERSION, MIN_API_VERSION, ApiError, blocking
from labctl.daemon.events import handle_events

#: The headers every _ping answer carries: the docker CLI reads the API version from them.
PING_HEADERS = {"API-Version": API_VERSION, "Docker-Experimental": "false", "OSType": "linux",
                "Builder-Version": "1", "Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK" if request.method == "GET" else "", headers=PING_HEADERS,
                        content_type="text/plain")


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


async def version(request: web.Request) -> web.Response:
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": _arch(),
               "KernelVersion": platform.release(), "GoVersion": f"python{platform.python_version()}",
               "GitCommit": "labctl", "BuildTime": "", "Experimental": "false"}
    return web.json_response({
        "Platform": {"Name": "labctl (kernel-primitives-lab)"},
        "Components": [{"Name": "Engine", "Version": labctl.__version__, "Details": details}],
        "Version": labctl.__version__, **{k: v for k, v in details.items() if k != "Experimental"},
        "Experimental": False})


def _counts() -> dict:
    from labctl.containers import reconcile
    from labctl.images.store import ImageStore
    containers = reconcile.reconcile_all()
    statuses = [c.status for c in containers]
    return {"Containers": len(statuses), "ContainersRunning": statuses.count("running"), "ContainersPaused": 0,
            "ContainersStopped": len(statuses) - statuses.count("running"),
            "Images": len({i.digest for i in ImageStore().images()})}


def _cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


async def info(request: web.Request) -> web.Response:
    from labctl import state
    counts = await blocking(_counts)
    with open("/proc/meminfo") as f:
        mem_total = int(f.readline().split()[1]) * 1024
    return web.json_response({
        "ID": "labctl", **counts, "Driver": "overlay", "DriverStatus": [["Backing Filesystem", "overlayfs"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["local"]},
        "MemoryLimit": True, "SwapLimit": True, "CpuShares": True, "CpuCfsPeriod": True, "CpuCfsQuota": True, "PidsLimit": True,
        "IPv4Forwarding": True, "Debug": False, "NFd": len(os.listdir("/proc/self/fd")),
        "NGoroutines": len(request.app["engine"].tasks), "SystemTime": "", "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs", "CgroupVersion": _cgroup_version(), "NEventsListener":
            len(request.app["engine"].bus.subscribers), "KernelVersion": platform.release(),
        "OperatingSystem": _os_name(), "OSVersion": "", "OSType": "linux", "Architecture": platform.machine(),
        "NCPU": os.cpu_count(), "MemTotal": mem_total, "IndexServerAddress": "", "RegistryConfig": None,
        "DockerRootDir": str(state.state_dir()), "Name": platform.node(), "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": labctl.__version__,
        "Runtimes": _runtimes(), "DefaultRuntime": "labctl",
        "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False, "NodeID": "", "NodeAddr": ""},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "tini",
        "SecurityOptions": ["name=seccomp,profile=default", "name=no-new-privileges"], "Warnings": []})


def _runtimes() -> dict:
    """The runtimes `docker run --runtime` may name: labctl's own, and the OCI runtimes installed here."""
    import shutil
    from labctl.containers.shim import RUNTIMES
    paths = {"labctl": "labctl.runtime", "labctl-oci": "labctl.runtime.ocicli"}
    return {name: {"path": paths.get(name) or shutil.which(name)} for name in RUNTIMES
            if name in paths or shutil.which(name)}


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        return fields.get("PRETTY_NAME", "Linux").strip('"')
    except OSError:
        return "Linux"


async def auth(request: web.Request) -> web.Response:
    """POST /auth, `docker login`: the daemon tries the credentials against the registry (GET /v2/ and its
    challenge, as `labctl login` does); the CLI then keeps them itself and sends them with every pull and
    push (the X-Registry-Auth header). The daemon stores nothing."""
    import urllib.parse
    from labctl.images import distribution
    from labctl.images.auth import RegistryError
    body = await request.json()
    server = body.get("serveraddress") or ""
    server = urllib.parse.urlsplit(server).netloc if "://" in server else server.rstrip("/")
    if not server or not body.get("username"):
        raise ApiError(400, "a login needs serveraddress and username")
    try:
        await blocking(distribution.check_login, server, body["username"], body.get("password") or "")
    except RegistryError as exc:
        raise ApiError(401, str(exc)) from None
    return web.json_response({"Status": "Login Succeeded", "IdentityToken": ""})


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_post(prefix + "/auth", auth)
    router.add_route("GET", prefix + "/_ping", ping)
    router.add_route("HEAD", prefix + "/_ping", ping)
    router.add_get(prefix + "/version", version, allow_head=False)
    router.add_get(prefix + "/info", info, allow_head=False)
    router.add_get(prefix + "/events", handle_events, allow_head=False)
