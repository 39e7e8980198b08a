"""Where each cgroup controller lives on this host, and where the lab may create its cgroups.

A controller (memory, cpu, pids, ...) is attached to exactly one hierarchy: a cgroup v1 hierarchy of
its own (`/sys/fs/cgroup/memory`, sometimes shared, as in `cpu,cpuacct`), or the single cgroup v2
tree. Which one is read from two files, never guessed:

  /proc/self/mountinfo   `... /sys/fs/cgroup/memory ... - cgroup cgroup rw,memory`   (v1: controllers
                         in the super options) or `... - cgroup2 cgroup2 rw` (v2: the tree's
                         cgroup.controllers lists what it holds)
  /proc/self/cgroup      `4:memory:/process_api/880c...` (v1) and `0::/user.slice/...` (v2): the cgroup
                         this process is in, per hierarchy

The lab nests its cgroups beneath the cgroup the calling process is in: `<own cgroup>/labctl/<name>`
in each hierarchy, so it never needs a cgroup it was not given. On cgroup v2 the no-internal-processes
rule applies: a non-root cgroup whose cgroup.subtree_control enables controllers may hold no processes.
So before the lab can enable controllers for its children, every process in its own cgroup moves into
a leaf, `<own>/labctl/supervisor` (the way docker-in-docker moves itself into `/init`); when the lab's
last cgroup goes, they move back and the tree is as it was.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator

from labctl.errors import LabError

#: The lab's node in each hierarchy, and on v2 the leaf the supervisor moves into.
LAB_NODE = "labctl"
SUPERVISOR_LEAF = "supervisor"

#: The controllers the lab uses, by their v2 names; v1 calls io "blkio" and splits cpuacct from cpu.
#: v1's devices controller has no v2 counterpart: there a BPF program does its work (security/devices.py).
V1_NAMES = {"memory": "memory", "cpu": "cpu", "cpuacct": "cpuacct", "pids": "pids", "io": "blkio",
            "devices": "devices"}
V2_CONTROLLERS = ("memory", "cpu", "pids", "io")


@dataclass
class Hierarchy:
    """One mounted cgroup hierarchy as this process sees it."""
    version: int                       # 1 or 2
    mountpoint: Path
    controllers: frozenset[str]        # lab names ("io", not "blkio"); v2: what its root offers
    own_path: str                      # this process's cgroup in it, from /proc/self/cgroup
    mount_root: str = "/"

    @property
    def own_dir(self) -> Path:
        """The directory of the cgroup this process is in (or, if it is in a lab cgroup, the cgroup
        the lab hangs from: a labctl process started inside a lab cgroup nests beside it)."""
        rel = self.own_path
        if self.mount_root != "/" and rel.startswith(self.mount_root):
            rel = rel[len(self.mount_root):]
        parts = [p for p in rel.split("/") if p]
        if LAB_NODE in parts:
            parts = parts[:parts.index(LAB_NODE)]
        return self.mountpoint.joinpath(*parts)

    @property
    def lab_dir(self) -> Path:
        return self.own_dir / LAB_NODE

    @property
    def is_root(self) -> bool:
        return self.own_dir == self.mountpoint


@dataclass
class Layout:
    """Every hierarchy, and which one each controller is in (the per-controller choice of backend)."""
    by_controller: dict[str, Hierarchy] = field(default_factory=dict)
    unified: Hierarchy | None = None   # the cgroup2 mount, if any (on hybrid hosts: without controllers)

    def version_of(self, controller: str) -> int | None:
        h = self.by_controller.get(controller)
        return h.version if h else None

    def can_limit(self, controller: str) -> bool:
        """Is the controller here, and (on v2) offered to the cgroup the lab nests in?"""
        h = self.by_controller.get(controller)
        if h is None or h.version == 1:
            return h is not None
        return controller in _read(h.own_dir / "cgroup.controllers").split()

    @property
    def mode(self) -> str:
        versions = {h.version for h in self.by_controller.values()}
        if versions == {2}:
            return "v2"
        if versions == {1}:
            return "hybrid" if self.unified else "v1"
        return "mixed" if versions else "none"

    def hierarchies(self) -> list[Hierarchy]:
        """Distinct hierarchies the lab creates a node in: those holding its controllers, plus the
        unified tree (on a hybrid host it tracks processes and offers cgroup.kill, as systemd uses it)."""
        seen: dict[Path, Hierarchy] = {}
        for h in list(self.by_controller.values()) + ([self.unified] if self.unified else []):
            seen.setdefault(h.mountpoint, h)
        return list(seen.values())


def _own_cgroups(pid: int | str = "self") -> tuple[dict[str, str], str | None]:
    """({v1 controller: path}, v2 path) from /proc/<pid>/cgroup."""
    v1: dict[str, str] = {}
    v2 = None
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            hid, controllers, path = line.rstrip("\n").split(":", 2)
            if hid == "0" and controllers == "":
                v2 = path
            else:
                for c in controllers.split(","):
                    v1[c] = path
    return v1, v2


def detect() -> Layout:
    """Read /proc/self/mountinfo and /proc/self/cgroup: which hierarchy holds each controller."""
    own_v1, own_v2 = _own_cgroups()
    layout = Layout()
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        root, mountpoint = fields[3], Path(fields[4].replace("\\040", " "))
        if fstype == "cgroup":
            names = [o for o in options if o in V1_NAMES.values()]
            if not names or names[0] not in own_v1:
                continue
            lab_names = frozenset(k for k, v in V1_NAMES.items() if v in names)
            h = Hierarchy(1, mountpoint, lab_names, own_v1[names[0]], root)
            for c in lab_names:
                if c not in layout.by_controller or root == "/":
                    layout.by_controller[c] = h
        elif fstype == "cgroup2" and own_v2 is not None:
            if layout.unified is not None and root != "/":
                continue
            offered = set(_read(mountpoint / "cgroup.controllers").split())
            h = Hierarchy(2, mountpoint, frozenset(c for c in V2_CONTROLLERS if c in offered), own_v2, root)
            layout.unified = h
    if layout.unified:
        for c in layout.unified.controllers:
            layout.by_controller.setdefault(c, layout.unified)
        if "cpu" in layout.unified.controllers or "cpu" not in layout.by_controller:
            # v2 has no cpuacct: every cgroup's cpu.stat counts usage_usec, with or without the cpu controller
            layout.by_controller.setdefault("cpuacct", layout.unified)
    return layout


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read().strip()


def write(path: Path, value: str | int) -> None:
    """Write one value to a cgroup control file (one write(2), as the kernel expects)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def procs(directory: Path) -> list[int]:
    """The PIDs in a cgroup (its cgroup.procs), [] if it is gone."""
    try:
        return [int(x) for x in _read(directory / "cgroup.procs").split()]
    except (FileNotFoundError, ProcessLookupError, OSError):
        return []


@contextlib.contextmanager
def locked(directories: list[Path]) -> Iterator[None]:
    """flock(2) the lab's parent cgroup directories (sorted, so two processes never deadlock), so
    one labctl does not remove `labctl/` while another is creating a cgroup in it."""
    fds = []
    try:
        for d in sorted(set(directories)):
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)


def ensure_lab_dir(h: Hierarchy, controllers: set[str]) -> Path:
    """Create `<own>/labctl` in a hierarchy (call with the lock held); on v2 make `controllers`
    available to its children, moving this cgroup's processes into the supervisor leaf if needed."""
    lab = h.lab_dir
    if h.version == 1:
        lab.mkdir(exist_ok=True)
        return lab
    base = h.own_dir
    offered = set(_read(base / "cgroup.controllers").split())
    missing = controllers - offered
    if missing:
        raise LabError(f"the cgroup v2 controller(s) {', '.join(sorted(missing))} are not delegated to {base} "
                       f"(its cgroup.controllers: {' '.join(sorted(offered)) or 'none'})",
                       "run labctl in a delegated cgroup, e.g. "
                       "`systemd-run --scope -p Delegate=yes labctl ...`, or as a service with Delegate=yes")
    needed = controllers - set(_read(base / "cgroup.subtree_control").split())
    lab.mkdir(exist_ok=True)
    if needed:
        if not h.is_root and procs(base):
            move_all(base, lab / SUPERVISOR_LEAF)
        for attempt in range(50):
            try:
                write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(needed)))
                break
            except OSError as exc:  # a process forked into the base meanwhile: move it too, retry
                if exc.errno != errno.EBUSY or attempt == 49:
                    raise
                move_all(base, lab / SUPERVISOR_LEAF)
    enabled = set(_read(lab / "cgroup.subtree_control").split())
    if controllers - enabled:
        write(lab / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(controllers - enabled)))
    return lab


def move_all(source: Path, target: Path) -> None:
    """Move every process of `source` into `target` (created if missing), until none is left."""
    if not target.is_dir():  # no mkdir at all on an existing cgroup: moving back targets our own, outside the lab
        target.mkdir()
    for _ in range(100):
        pids = procs(source)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, OSError):
                write(target / "cgroup.procs", pid)
    raise LabError(f"could not move the processes of {source} into {target}: they keep forking",
                   "stop what is forking there and try again")


def prune_lab_dir(h: Hierarchy) -> None:
    """Remove `<own>/labctl` once no lab cgroup is left in it (call with the lock held). On v2,
    undo the supervisor move: clear subtree_control, move the processes back, remove the leaf."""
    lab = h.lab_dir
    try:
        # scandir: the entries' types come with them, no stat(2) for each control file (see _tree)
        with os.scandir(lab) as entries:
            children = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    if any(name != SUPERVISOR_LEAF for name in children):
        return
    if h.version == 2 and SUPERVISOR_LEAF in children:
        leaf, base = lab / SUPERVISOR_LEAF, h.own_dir
        try:
            for directory in (lab, base):  # the children's controllers must go before the parent's
                enabled = _read(directory / "cgroup.subtree_control").split()
                if enabled:
                    write(directory / "cgroup.subtree_control", " ".join(f"-{c}" for c in enabled))
        except OSError:
            return  # something else now uses these controllers below the base: leave it as it is
        move_all(leaf, base)
        rmdir(leaf)
    rmdir(lab)


def rmdir(directory: Path, timeout: float = 2.0) -> None:
    """rmdir(2) a cgroup, tolerating its absence; retries EBUSY while killed tasks finish exiting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# For the step 3 exercise: where a cgroup for a controller goes, and tidying up after.


def lab_parents(controllers: list[str]) -> dict[str, tuple[int, Path]]:
    """{controller: (cgroup version, the lab's `labctl/` directory in that controller's hierarchy)},
    created (and on v2 delegated) if needed."""
    layout = detect()
    parents = {}
    for controller in controllers:
        h = layout.by_controller.get(controller)
        if h is None:
            raise LabError(f"this host has no {controller} cgroup controller", "`labctl cgroup info` shows what it has")
        with locked([h.own_dir]):
            parents[controller] = (h.version, ensure_lab_dir(h, {controller} if h.version == 2 else set()))
    return parents


def release_lab_parents(controllers: list[str]) -> None:
    """Remove the lab's `labctl/` directories of these controllers if no lab cgroup is left in them."""
    layout = detect()
    for h in {layout.by_controller[c].mountpoint: layout.by_controller[c] for c in controllers
              if c in layout.by_controller}.values():
        with locked([h.own_dir]):
            prune_lab_dir(h)


def cgroup_path(h: Hierarchy, directory: Path) -> str:
    """How /proc/<pid>/cgroup names the cgroup at `directory` of hierarchy `h`."""
    relative = directory.relative_to(h.mountpoint)
    return "/" if relative == Path(".") else f"/{relative}"
