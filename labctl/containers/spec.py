"""What a container runs: the image's config merged with the command line, the way Docker merges them.

The rules (docker run reference, "Defaults set by the image"):
  argv      = Entrypoint + (the command-line CMD if one is given, else the image's Cmd);
              --entrypoint replaces Entrypoint and drops the image's Cmd
  Env       = the image's Env, then each -e K=V replacing the variable of the same name
              (-e K alone copies K from labctl's own environment); PATH and HOSTNAME are always set,
              HOME from the user's passwd entry, TERM=xterm with -t
  WorkingDir= -w, else the image's WorkingDir, else "/" (created if missing)
  User      = -u, else the image's User, else root; "name", "uid", "name:group" or "uid:gid", names
              looked up in the *image's* /etc/passwd and /etc/group (inside.py does that after pivot_root)
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

from labctl.errors import LabError
from labctl.network.ports import PortMapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Mount:
    """A volume (named or bind) or a tmpfs at `target` inside the container."""
    kind: str            # bind | volume | tmpfs
    source: str          # host path, volume name, or "" for tmpfs
    target: str
    readonly: bool = False


@dataclass
class Limits:
    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.memory_bytes, self.cpus, self.pids))


@dataclass
class ContainerSpec:
    """Everything needed to create a container; stored as JSON in its record."""
    image: str
    argv: list[str]
    env: list[str]
    workdir: str
    user: str
    hostname: str
    name: str = ""
    tty: bool = False
    interactive: bool = False
    detach: bool = False
    auto_remove: bool = False
    init: bool = False
    network: str = "none"
    limits: Limits = field(default_factory=Limits)
    mounts: list[Mount] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ContainerSpec":
        data = dict(data)
        data["limits"] = Limits(**data.get("limits", {}))
        data["mounts"] = [Mount(**m) for m in data.get("mounts", [])]
        data["ports"] = [PortMapping(**p) for p in data.get("ports", [])]
        return cls(**data)


def command_line(image_config: dict, cmd: list[str], entrypoint: list[str] | None = None) -> list[str]:
    """Entrypoint + Cmd, with Docker's precedence rules (see the module docstring)."""
    if entrypoint is not None:
        argv = list(entrypoint) + list(cmd)
    else:
        argv = list(image_config.get("Entrypoint") or []) + (list(cmd) or list(image_config.get("Cmd") or []))
    if not argv:
        raise LabError("no command specified: the image has no Entrypoint or Cmd, and none was given",
                       "give one after the image, e.g. `labctl run busybox sh -c 'echo hi'`")
    return argv


def merge_env(image_env: list[str], overrides: list[str], hostname: str, tty: bool) -> list[str]:
    """The image's Env, overridden by -e K=V (by name), plus PATH, HOSTNAME and TERM as Docker sets them."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    if tty:
        env["TERM"] = "xterm"
    for item in image_env or []:
        key, _, value = item.partition("=")
        env[key] = value
    for item in overrides:
        key, sep, value = item.partition("=")
        if not key:
            raise LabError(f"bad -e {item!r}", "write -e NAME=VALUE, or -e NAME to copy it from your environment")
        if not sep:
            if key not in os.environ:
                continue  # Docker skips a -e NAME that is not set on the host
            value = os.environ[key]
        env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")   # Docker's rule for --name


def check_name(name: str) -> str:
    """A container name as Docker allows it: it names a file in the state directory, so no `/`, no `..`."""
    if not _NAME.match(name):
        raise LabError(f"bad container name {name!r}",
                       "use letters, digits, _ . - (two characters at least, starting with a letter or digit)")
    return name


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Docker's memory sizes: "64m", "1g", "512k", "1048576" (binary units, like Docker)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise LabError(f"bad size {text!r}", "write a number with an optional unit: 64m, 1g, 512k")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_volume(text: str) -> Mount:
    """-v SRC:DST[:ro|rw]. SRC starting with / or . is a host path (bind), else a named volume."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise LabError(f"bad -v {text!r}", "write -v /host/path:/in/container[:ro] or -v VOLUME:/in/container")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise LabError(f"bad -v mode {mode!r} in {text!r}", "the mode is ro or rw")
    source = parts[0]
    if source.startswith(("/", ".")):
        source = os.path.abspath(source)
        if not os.path.exists(source):
            raise LabError(f"bind mount source {source} does not exist", "create it first, or use a named volume")
        kind = "bind"
    else:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", source):
            raise LabError(f"bad volume name {source!r}", "volume names use letters, digits, _ . -")
        kind = "volume"
    return Mount(kind, source, os.path.normpath(parts[1]), mode == "ro")


def parse_tmpfs(text: str) -> Mount:
    target = text.split(":", 1)[0]
    if not target.startswith("/"):
        raise LabError(f"bad --tmpfs {text!r}", "give an absolute path inside the container, e.g. --tmpfs /run")
    return Mount("tmpfs", "", os.path.normpath(target))


parse_port = PortMapping.parse   # -p [IP:]HOST:CONTAINER[/tcp|udp]: the one parser is labctl.network.ports


# ---------------------------------------------------------------------------------------------
# Users: resolved inside the container, from the image's own /etc/passwd and /etc/group.


@dataclass
class ResolvedUser:
    uid: int
    gid: int
    groups: list[int]
    home: str


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def resolve_user(user: str, passwd: str = "/etc/passwd", group: str = "/etc/group") -> ResolvedUser:
    """"name" | "uid" | "name:group" | "uid:gid" -> uid, gid, supplementary groups, home (as runc does)."""
    who, _, grp = (user or "root").partition(":")
    users = _read_db(passwd)
    groups = _read_db(group)
    entry = next((u for u in users if len(u) >= 7 and (u[0] == who or u[2] == who)), None)
    if entry is None:
        if not who.isdigit():
            raise LabError(f"unable to find user {who}: no matching entries in the image's passwd file",
                           "use a user the image defines, or a numeric uid like -u 1000")
        uid, gid, home, name = int(who), 0, "/", None
    else:
        uid, gid, home, name = int(entry[2]), int(entry[3]), entry[5] or "/", entry[0]
    if grp:
        g = next((g for g in groups if len(g) >= 3 and (g[0] == grp or g[2] == grp)), None)
        if g is None and not grp.isdigit():
            raise LabError(f"unable to find group {grp}: no matching entries in the image's group file",
                           "use a group the image defines, or a numeric gid")
        gid = int(g[2]) if g else int(grp)
    supplementary = sorted({int(g[2]) for g in groups
                            if len(g) >= 4 and name and name in g[3].split(",")} | {gid})
    return ResolvedUser(uid, gid, supplementary, home)
