"""Docker's JSON <-> labctl: a create request's Config and HostConfig -> lifecycle.build_spec's arguments
(the same arguments `labctl run`'s flags become), and a container record -> what `docker ps` and
`docker inspect` read.

    docker run -m 64m --cpus 0.5 -p 8080:80 -v data:/data --rm busybox sh
      POST /containers/create {"Image": "busybox", "Cmd": ["sh"], "HostConfig": {"Memory": 67108864,
        "NanoCpus": 500000000, "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}, "Binds": ["data:/data"],
        "AutoRemove": true}}
      -> build_spec("busybox", ["sh"], memory="67108864", cpus=0.5, ports=["8080:80/tcp"], volumes_=[...])
"""
from __future__ import annotations

import datetime

from labctl.daemon.api import ApiError

#: The fields of a create request's body (Docker's ContainerConfig plus HostConfig and NetworkingConfig).
CONFIG_FIELDS = {
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty",
    "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes", "WorkingDir",
    "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell",
    "HostConfig", "NetworkingConfig", "Platform"}
#: HostConfig fields that change what runs and that the lab does not do: refused when set, not ignored.
UNSUPPORTED_HOST = ("Devices", "VolumesFrom", "Links", "PidMode", "IpcMode", "UTSMode", "UsernsMode",
                    "CgroupParent", "ExtraHosts", "Dns", "DnsSearch", "DnsOptions", "GroupAdd", "Sysctls",
                    "DeviceRequests", "PublishAllPorts", "VolumeDriver", "CpusetCpus", "CpuQuota", "CpuPeriod",
                    "BlkioWeight", "OomKillDisable", "ShmSize")


def _strslice(value, what: str) -> list[str] | None:
    """Docker's strslice: a string or a list of strings (null: not given)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ApiError(400, f"{what} must be a string or a list of strings")


def ports_of(bindings: dict | None) -> list[str]:
    """HostConfig.PortBindings {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]} -> ["8080:80/tcp"]."""
    out = []
    for port, hosts in (bindings or {}).items():
        number, _, protocol = port.partition("/")
        for host in hosts or [{}]:
            host_port = (host or {}).get("HostPort") or number
            ip = (host or {}).get("HostIp") or ""
            out.append(f"{ip + ':' if ip and ip != '0.0.0.0' else ''}{host_port}:{number}/{protocol or 'tcp'}")
    return out


def mounts_of(host: dict) -> tuple[list[str], list[str]]:
    """HostConfig.Binds, Mounts and Tmpfs -> (-v values, --tmpfs values)."""
    volumes = list(host.get("Binds") or [])
    tmpfs = list((host.get("Tmpfs") or {}).keys())
    for m in host.get("Mounts") or []:
        kind, target = m.get("Type", "volume"), m.get("Target", "")
        if kind == "tmpfs":
            tmpfs.append(target)
        elif kind in ("bind", "volume"):
            volumes.append(f"{m.get('Source', '')}:{target}{':ro' if m.get('ReadOnly') else ''}")
        else:
            raise ApiError(400, f"mount type {kind!r} is not supported by the lab (bind, volume, tmpfs)")
    return volumes, tmpfs


def network_of(mode: str | None, ports: list[str]) -> str:
    """NetworkMode -> labctl's --network. "default" is the lab's default, none (containers reach nothing
    but themselves), and bridge when ports are published, since a published port needs the bridge.
    A user-defined network's name stays as it is: labctl run joins it by name (network/named.py)."""
    if mode in (None, "", "default"):
        return "bridge" if ports else "none"
    if mode in ("none", "host", "bridge"):
        return mode
    from labctl.network.named import find_record, records
    if find_record(mode) is not None:   # a user-defined network (`docker network create NAME`), by its name
        return mode
    by_id = [name for name, r in records().items() if len(mode) >= 12 and r.get("Id", "").startswith(mode)]
    if len(by_id) == 1:   # or by its ID (at least the 12 digits `docker network ls` shows): labctl joins by name
        return by_id[0]
    from labctl.cluster.endpoint import is_overlay
    if is_overlay(mode):   # step 13: an overlay network of the cluster this daemon is a host of
        if ports:
            raise ApiError(400, f"published ports need a bridge network: {mode} is an overlay network (drop -p)")
        return mode
    # (Docker says 404; the CLI takes any 404 from create for a missing image and pulls, and the
    # pull's failure would hide this line: 400 gives it to the user as it is)
    raise ApiError(400, f"network {mode} not found: create it first (docker network create {mode})")


def run_arguments(body: dict, name: str = "") -> dict:
    """A create request -> the keyword arguments of lifecycle.build_spec (and "security" for from_flags)."""
    unknown = sorted(set(body) - CONFIG_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field(s) in the container config: {', '.join(unknown)}")
    host = body.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise ApiError(400, "HostConfig must be an object")
    refused = [k for k in UNSUPPORTED_HOST if host.get(k) not in (None, "", [], {}, 0, False, -1)]
    if refused:
        raise ApiError(400, f"HostConfig field(s) not supported by the lab's daemon: {', '.join(refused)}")
    runtime = runtime_of(host.get("Runtime"))
    image = body.get("Image")
    if not image or not isinstance(image, str):
        raise ApiError(400, "the container config names no image (\"Image\")")
    ports = ports_of(host.get("PortBindings"))
    volumes, tmpfs = mounts_of(host)
    pids = host.get("PidsLimit")
    return dict(
        image_ref=image, command=_strslice(body.get("Cmd"), "Cmd") or [], name=name,
        env=list(body.get("Env") or []), workdir=body.get("WorkingDir") or None, user=body.get("User") or None,
        hostname=body.get("Hostname") or None, tty=bool(body.get("Tty")), interactive=bool(body.get("OpenStdin")),
        init=bool(host.get("Init")), network=network_of(host.get("NetworkMode"), ports),
        memory=str(host["Memory"]) if host.get("Memory") else None,
        cpus=host["NanoCpus"] / 1e9 if host.get("NanoCpus") else None,
        pids_limit=pids if pids and pids > 0 else None, volumes_=volumes, tmpfs=tmpfs, ports=ports,
        entrypoint=_entrypoint(body.get("Entrypoint")), runtime=runtime,
        security=dict(cap_add=host.get("CapAdd") or [], cap_drop=host.get("CapDrop") or [],
                      privileged=bool(host.get("Privileged")), security_opt=host.get("SecurityOpt") or [],
                      read_only=bool(host.get("ReadonlyRootfs"))))


def runtime_of(name: str | None) -> str:
    """HostConfig.Runtime (`docker run --runtime NAME`) -> labctl run's --runtime: "" is the daemon's
    default, labctl's own; runc, crun and labctl-oci are given the bundle, as `labctl run --runtime` does
    (containers/shim.py: labctl's supervisor in containerd-shim's place)."""
    from labctl.containers.shim import RUNTIMES
    if not name:
        return "labctl"
    if name not in RUNTIMES:
        raise ApiError(400, f"unknown or invalid runtime name: {name} (this daemon has {', '.join(RUNTIMES)})")
    return name


def _entrypoint(value) -> list[str] | None:
    """null: the image's; [""] (docker run --entrypoint ""): none at all."""
    entry = _strslice(value, "Entrypoint")
    if entry is None:
        return None
    return [e for e in entry if e] if entry != [""] else []


# ---------------------------------------------------------------------------------------------
# Records -> Docker's JSON


def timestamp(seconds: float | None) -> str:
    """RFC 3339 with nanoseconds, as Go prints time.Time; Go's zero time for "never"."""
    if not seconds:
        return "0001-01-01T00:00:00Z"
    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}000Z"


def ports_json(container) -> list[dict]:
    return [{"IP": p.host_ip, "PrivatePort": p.container_port, "PublicPort": p.host_port, "Type": p.protocol}
            for p in container.spec.ports]


def status_text(container) -> str:
    """What `docker ps` shows under STATUS ("Up 3 seconds", "Exited (0) 2 seconds ago")."""
    return container.describe_status()


def summary(container, image_id: str) -> dict:
    """One entry of GET /containers/json (`docker ps`)."""
    spec = container.spec
    return {"Id": container.id, "Names": ["/" + container.name], "Image": spec.image, "ImageID": image_id,
            "Command": " ".join(spec.argv), "Created": int(container.state.get("created", 0)),
            "Ports": ports_json(container), "Labels": container.state.get("labels") or {},
            "State": container.status, "Status": status_text(container),
            "HostConfig": {"NetworkMode": spec.network}, "NetworkSettings": {"Networks": networks(container)},
            "Mounts": mounts_json(container)}


def mounts_json(container) -> list[dict]:
    from labctl.containers import volumes
    out = []
    for m in container.spec.mounts:
        source = volumes.volume_path(m.source) if m.kind == "volume" else m.source
        out.append({"Type": m.kind, "Name": m.source if m.kind == "volume" else "", "Source": str(source),
                    "Destination": m.target, "Mode": "ro" if m.readonly else "", "RW": not m.readonly,
                    "Propagation": "rprivate" if m.kind == "bind" else ""})
    return out


def networks(container) -> dict:
    """NetworkSettings.Networks: the one network the container is on, with its address and gateway
    (from the attachment in its record: the Network's bridge and subnet) and the network's ID."""
    from labctl.network import Network
    from labctl.network.named import find_record
    info = container.state.get("network") or {}
    address, net = info.get("address") or "", info.get("network")
    gateway, prefixlen = "", int(info.get("subnet", "/0").partition("/")[2] or 0)   # (an overlay's: no gateway)
    if address and net:
        bridged = Network(net["bridge"], net["subnet"])
        gateway, prefixlen = bridged.gateway, bridged.prefixlen
    name = container.spec.network
    record = find_record(name) if name not in ("none", "host", "bridge") else None
    out = {name: {"IPAddress": address, "Gateway": gateway, "IPPrefixLen": prefixlen, "MacAddress": info.get("mac", ""),
                  "NetworkID": record["Id"] if record else name}}
    for other, info in (container.state.get("networks") or {}).items():   # `network connect`'s: no gateway
        record = find_record(other) if other != "bridge" else None
        out[other] = {"IPAddress": info.get("address") or "", "Gateway": "", "MacAddress": "",
                      "IPPrefixLen": int((info.get("network") or {}).get("subnet", "/0").partition("/")[2] or 0),
                      "NetworkID": record["Id"] if record else other}
    return out


def inspect(container, image_id: str) -> dict:
    """GET /containers/{id}/json (`docker inspect`): Docker's shape, from the record and the kernel."""
    spec, st = container.spec, container.state
    status = container.status
    running = status == "running"
    limits = spec.limits
    address = (st.get("network") or {}).get("address") or ""
    return {
        "Id": container.id, "Created": timestamp(st.get("created")), "Path": spec.argv[0], "Args": spec.argv[1:],
        "State": {"Status": status, "Running": running, "Paused": False, "Restarting": False,
                  "OOMKilled": False, "Dead": False, "Pid": container.pid if running else 0,
                  "ExitCode": st.get("exit_code") or 0, "Error": st.get("error") or "",
                  "StartedAt": timestamp(st.get("started_at")), "FinishedAt": timestamp(st.get("finished_at"))},
        "Image": image_id, "Name": "/" + container.name, "RestartCount": 0, "Driver": "overlay",
        "Platform": "linux", "LogPath": str(container.dir / "log"),
        "HostConfig": {"NetworkMode": spec.network, "AutoRemove": bool(st.get("auto_remove")),
                       # (docker-py reads logs back only from these two drivers' names; the lab's log is a
                       # plain file of both streams, served by GET /logs like json-file's)
                       "LogConfig": {"Type": "json-file", "Config": {}},
                       "Memory": limits.memory_bytes or 0,
                       "NanoCpus": int((limits.cpus or 0) * 1e9), "PidsLimit": limits.pids_max,
                       "Privileged": spec.security.privileged, "CapAdd": None, "CapDrop": None,
                       "Init": spec.init, "ReadonlyRootfs": spec.security.read_only, "Runtime": spec.runtime,
                       "PortBindings": {f"{p.container_port}/{p.protocol}": [{"HostIp": p.host_ip,
                                                                                "HostPort": str(p.host_port)}]
                                        for p in spec.ports},
                       "Binds": [f"{m.source}:{m.target}{':ro' if m.readonly else ''}"
                                 for m in spec.mounts if m.kind != "tmpfs"],
                       "Tmpfs": {m.target: "" for m in spec.mounts if m.kind == "tmpfs"}},
        "Config": {"Hostname": spec.hostname, "User": spec.user, "Tty": spec.tty, "OpenStdin": spec.interactive,
                   "AttachStdin": spec.interactive, "AttachStdout": True, "AttachStderr": True,
                   "Env": spec.env, "Cmd": spec.argv, "Image": spec.image, "WorkingDir": spec.workdir,
                   "Entrypoint": None, "Labels": st.get("labels") or {}},
        "NetworkSettings": {"IPAddress": address, "Networks": networks(container),
                            "Ports": {f"{p.container_port}/{p.protocol}": [{"HostIp": p.host_ip,
                                                                             "HostPort": str(p.host_port)}]
                                      for p in spec.ports}},
        "Mounts": mounts_json(container),
        "Cgroup": st.get("cgroup"),
    }
