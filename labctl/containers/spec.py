"""What a container runs: the image's config merged with the command line, the way Docker merges them.

The rules (docker run reference, "Defaults set by the image"):
  argv      = Entrypoint + (the command-line CMD if one is given, else the image's Cmd);
              --entrypoint replaces Entrypoint and drops the image's Cmd
  Env       = the image's Env, then each -e K=V replacing the variable of the same name
              (-e K alone copies K from labctl's own environment); PATH and HOSTNAME are always set,
              HOME from the user's passwd entry, TERM=xterm with -t
  WorkingDir= -w, else the image's WorkingDir, else "/" (created if missing)
  User      = -u, else the image's User, else root; "name", "uid", "name:group" or "uid:gid", names
              looked up in the *image's* /etc/passwd and /etc/group (labctl/runtime/user.py, after pivot_root)
  Limits    = -m, --cpus, --pids-limit, parsed as `labctl cgroup run` parses them (kernel/cgroups/limits.py)
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

from labctl.errors import LabError
from labctl.kernel.cgroups.limits import Limits
from labctl.network.ports import PortMapping
from labctl.runtime.config import Mount
from labctl.security.profile import SecurityProfile

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    security: SecurityProfile = field(default_factory=SecurityProfile)   # step 9
    runtime: str = "labctl"   # step 10: labctl (in-process), or an OCI runtime given the bundle (shim.py)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ContainerSpec":
        data = dict(data)
        limits = dict(data.get("limits", {}))
        if "pids" in limits:   # a record written before the one Limits class (kernel/cgroups/limits.py)
            limits["pids_max"] = limits.pop("pids")
        data["limits"] = Limits(**limits)
        data["mounts"] = [Mount(**m) for m in data.get("mounts", [])]
        data["ports"] = [PortMapping(**p) for p in data.get("ports", [])]
        data["security"] = SecurityProfile.from_json(data.get("security"))
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
#: Docker sets no length; the lab does, so that every name derived from it fits: the file
#: containers-by-name/<name> (NAME_MAX 255), the network's owner "<name>-<pid>-<hex>" and its nftables
#: comment "labctl:<owner>" (nft keeps comments of at most 128 bytes).
NAME_MAX_LENGTH = 64
HOSTNAME_MAX_LENGTH = 64          # the kernel's __NEW_UTS_LEN: sethostname(2) refuses more bytes
ID_MAX = 2**32 - 2                # a uid or gid: 32 bits, and (uid_t)-1 means "no change" to setuid(2)
#: Where nothing may be mounted, as Docker refuses: the root itself, and the kernel's filesystems
#: that PID 1 mounts there (a mount over /proc would hide procfs, silently).
RESERVED_TARGETS = ("/", "/proc", "/sys", "/dev")


def check_name(name: str) -> str:
    """A container name as Docker allows it: it names a file in the state directory, so no `/`, no `..`."""
    if not _NAME.match(name):
        raise LabError(f"bad container name {name!r}",
                       "use letters, digits, _ . - (two characters at least, starting with a letter or digit)")
    if len(name) > NAME_MAX_LENGTH:
        raise LabError(f"the container name is {len(name)} characters long; the lab allows {NAME_MAX_LENGTH}",
                       "choose a shorter --name")
    return name


def check_hostname(hostname: str) -> str:
    """-h: the kernel keeps at most 64 bytes of hostname (sethostname(2) fails with EINVAL above)."""
    if len(hostname.encode()) > HOSTNAME_MAX_LENGTH:
        raise LabError(f"the hostname is {len(hostname.encode())} bytes long; the kernel allows {HOSTNAME_MAX_LENGTH}",
                       "give a shorter -h")
    return hostname


def check_user(user: str) -> str:
    """-u user[:group]: a numeric uid or gid must be one the kernel can hold (0 to 2^32-2). Names are
    looked up later, in the image's own /etc/passwd (runtime/user.py)."""
    for part, what in zip(user.split(":", 1), ("uid", "gid")):
        if part.isdigit() and int(part) > ID_MAX:
            raise LabError(f"-u {user}: the {what} {part} is out of range",
                           f"a {what} is a number from 0 to {ID_MAX}")
    return user


def check_memory(memory_bytes: int | None, given: str | None = None) -> None:
    """-m: the kernel's largest limit is PAGE_COUNTER_MAX pages (LONG_MAX bytes, in whole pages); it
    takes a larger value as "no limit", so `inspect` would show one number and the kernel another."""
    page = os.sysconf("SC_PAGE_SIZE")
    largest = (2**63 - 1) // page * page
    if memory_bytes is not None and memory_bytes > largest:
        raise LabError(f"-m {given or memory_bytes}: above the kernel's largest memory limit, {largest} bytes",
                       "give a real limit such as -m 512m, or leave -m out for no limit")


def check_target(target: str, flag: str) -> str:
    """A mount target inside the container: not /, /proc, /sys or /dev, nor below /proc (Docker's rules)."""
    target = os.path.normpath(target)
    if target in RESERVED_TARGETS or target.startswith("/proc/"):
        raise LabError(f"{flag}: cannot mount over {target} in the container",
                       "choose another target: / is the image's root, /proc, /sys and /dev are the kernel's")
    return target


def parse_volume(text: str) -> Mount:
    """-v SRC:DST[:ro|rw]. SRC starting with / or . is a host path (bind), else a named volume."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise LabError(f"bad -v {text!r}", "write -v /host/path:/in/container[:ro] or -v VOLUME:/in/container")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise LabError(f"bad -v mode {mode!r} in {text!r}", "the mode is ro or rw")
    target = check_target(parts[1], f"-v {text}")
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
    return Mount(kind, source, target, mode == "ro")


def parse_tmpfs(text: str) -> Mount:
    target = text.split(":", 1)[0]
    if not target.startswith("/"):
        raise LabError(f"bad --tmpfs {text!r}", "give an absolute path inside the container, e.g. --tmpfs /run")
    return Mount("tmpfs", "", check_target(target, f"--tmpfs {text}"))


parse_port = PortMapping.parse   # -p [IP:]HOST:CONTAINER[/tcp|udp]: the one parser is labctl.network.ports
