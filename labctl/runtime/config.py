"""What the runtime needs to start a container's process, as Python objects.

The caller (containers/lifecycle.py) fills a Config in from the image's config and the command line;
step 10 writes it as the container's config.json (runtime/oci.py: `process.args`, `process.env`,
`process.cwd`, `process.user`, `root.path`, `hostname`, `mounts`, `linux.namespaces`, ...) and the
runtime is handed the Config read back from that file, so that PID 1 only carries the file out. What
only a config.json says (the mounts as a list, namespaces joined by path, rlimits, sysctl, ...) rides
along in OciExtras.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from labctl.security.profile import SecurityProfile

#: The namespaces of a container: uts, ipc, mnt, pid and time always; net unless it shares the host's
#: (--network host). cgroup too, but PID 1 unshares that itself once it is in its cgroup (ociinit.py).
NAMESPACES = ("uts", "ipc", "mnt", "pid", "time")


@dataclass
class Mount:
    """A volume (named or bind) or a tmpfs at `target` inside the container."""
    kind: str            # bind | volume | tmpfs
    source: str          # host path, volume name, or "" for tmpfs
    target: str
    readonly: bool = False


@dataclass
class Config:
    root: str                          # the root filesystem, mounted (overlay.ContainerRoot's merged dir)
    argv: list[str]                    # the command, as execve(2) gets it
    env: list[str] = field(default_factory=list)
    workdir: str = "/"                 # inside the container; created if missing, as Docker does
    user: str = "root"                 # looked up in the image's own /etc/passwd (user.py)
    hostname: str = ""
    namespaces: tuple[str, ...] = NAMESPACES
    new_cgroup_namespace: bool = True  # done by PID 1 after GO, once it is in its cgroup
    loopback_up: bool = True           # a new network namespace starts with lo down
    files: dict[str, str] = field(default_factory=dict)    # inside path -> host file to bind (hosts, ...)
    mounts: list[Mount] = field(default_factory=list)      # binds/volumes (source resolved) and tmpfs
    init_binary: str | None = None     # --init: a host binary (tini) to run as PID 1, the command its child
    cgroup: dict | None = None         # containers/resources.py's description: {"name", "dirs", "hierarchies"}
    security: SecurityProfile = field(default_factory=SecurityProfile)   # step 9: applied last by PID 1
    userns_fd: int = -1   # --userns remap: an open user namespace for PID 1 to join (OCI: a namespace's "path")
    oci: OciExtras | None = None   # step 10: what only a config.json says (oci.from_oci sets it; the runtime needs it)


@dataclass
class OciExtras:
    """The fields of an OCI config.json that `labctl run`'s flags never set (runtime/oci.py reads them).
    With these, PID 1 follows the spec's mounts list instead of labctl's own layout (ocimounts.py)."""
    mounts: list[dict] = field(default_factory=list)          # config.json "mounts", in order
    namespace_paths: dict[str, str] = field(default_factory=dict)   # kind -> a namespace to join, setns(2)
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    umask: int | None = None
    rlimits: list[tuple[int, int, int]] = field(default_factory=list)   # (RLIMIT_*, soft, hard)
    oom_score_adj: int | None = None
    sysctl: dict[str, str] = field(default_factory=dict)
    devices: list[dict] = field(default_factory=list)        # linux.devices: nodes made in /dev
    rootfs_propagation: str = ""                               # shared | slave | private | unbindable
    start_fifo: int = -1   # an O_PATH descriptor of exec.fifo: PID 1 blocks opening it until `start` (ocistate.py)
    capabilities: dict[str, list[str]] = field(default_factory=dict)   # bounding, effective, ... each as given
    hooks: dict[str, list[dict]] = field(default_factory=dict)   # createContainer, startContainer: run by PID 1
    state: dict = field(default_factory=dict)                    # the state JSON hooks get on stdin
