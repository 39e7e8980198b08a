"""Step 3: control groups. One interface for a container's cgroup, on cgroup v1, v2 or both at once.

    from labctl.kernel.cgroups import Cgroup, parse_limits

    with Cgroup.create("web", parse_limits(memory="64m", cpus="0.5", pids_limit=32)) as cg:
        proc = cg.spawn(["sh", "-c", "..."])        # starts in new namespaces, inside the cgroup
        print(cg.stats().memory_bytes)              # memory.current or memory.usage_in_bytes
    # leaving the block kills whatever is left in the cgroup and removes it

A cgroup is a directory in a cgroup filesystem. Creating one is mkdir(2), adding a process is writing
its PID into `cgroup.procs`, a limit is a write to a control file, statistics are reads, and removing
it is rmdir(2) once no process is left. The rest is knowing which directory: each controller is in a
v1 hierarchy of its own or in the v2 tree, and the choice is made per controller (hierarchy.detect),
so a hybrid host (v1 controllers, an empty cgroup2 beside them) and a pure v2 host use the same code.
The lab's cgroups are `<the caller's own cgroup>/labctl/<name>` in each hierarchy, and nothing
outside `<own>/labctl/` is written (on v2, see hierarchy.py for the one exception delegation needs).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Sequence   # not typing: ~2 ms to import on every `labctl run`
from pathlib import Path

from labctl import state
from labctl.kernel.cgroups import hierarchy, v1, v2
from labctl.kernel.cgroups.hierarchy import Hierarchy, Layout, detect
from labctl.kernel.cgroups.limits import Limits, add_arguments, format_bytes, from_arguments, parse_bytes, parse_limits
from labctl.kernel.cgroups.stats import Sampler, Stats, cpu_rate
from labctl.errors import LabError

TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing (see above)
if TYPE_CHECKING:
    import subprocess

__all__ = ["Cgroup", "Limits", "Layout", "Sampler", "Stats", "detect", "parse_limits", "parse_bytes",
           "format_bytes", "add_arguments", "from_arguments", "cpu_rate", "remove_cgroup", "cgroup_of", "describe_hierarchy"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Cgroup:
    """One lab cgroup: a directory per hierarchy, `<own cgroup>/labctl/<name>`."""

    def __init__(self, name: str, layout: Layout, dirs: dict[Path, Path], record: state.Record | None = None):
        self.name = name
        self.layout = layout
        self.dirs = dirs            # hierarchy mount point -> this cgroup's directory in it
        self.record = record

    # -- creating and removing ------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, limits: Limits | None = None, layout: Layout | None = None) -> "Cgroup":
        """mkdir `<own>/labctl/<name>` in every hierarchy the lab uses, then write the limits.
        A limit whose controller this host cannot give is a LabError naming the controller."""
        if not _NAME.fullmatch(name) or name == hierarchy.SUPERVISOR_LEAF:
            raise LabError(f"{name!r} is not a usable cgroup name",
                           "use letters, digits, '-', '_' and '.', at most 64 characters")
        layout = layout or detect()
        limits = limits or Limits()
        needed = limits.controllers()
        for controller in sorted(needed):
            if controller not in layout.by_controller:
                raise LabError(f"cannot apply the limit ({limits.describe()}): this host has no {controller} "
                               "cgroup controller (no v1 hierarchy mounts it, and cgroup v2 does not offer it)",
                               f"drop the {controller} limit, or use a kernel with the {controller} controller "
                               "(`labctl cgroup info` shows what is available)")
        hierarchies = layout.hierarchies()
        rec = state.record("cgroup", remove_cgroup, name=name,
                           hierarchies=[describe_hierarchy(h) for h in hierarchies])
        created: dict[Path, Path] = {}
        try:
            with hierarchy.locked([h.own_dir for h in hierarchies]):
                for h in hierarchies:
                    directory = _make_node(h, name, _v2_controllers(h, layout, needed))
                    created[h.mountpoint] = directory
            cgroup = cls(name, layout, created, rec)
            cgroup.set_limits(limits)
        except BaseException:
            remove_cgroup(name, [describe_hierarchy(h) for h in hierarchies if h.mountpoint in created])
            rec.forget()
            raise
        return cgroup

    def remove(self) -> None:
        """Kill every process left in the cgroup, rmdir it, and remove `labctl/` if it is now empty."""
        remove_cgroup(self.name, [describe_hierarchy(h) for h in self.layout.hierarchies() if h.mountpoint in self.dirs])
        if self.record:
            self.record.forget()
            self.record = None

    def __enter__(self) -> "Cgroup":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- where things are -----------------------------------------------------------------------

    def path(self, controller: str) -> Path | None:
        """This cgroup's directory in the hierarchy that holds `controller` (None if it has none)."""
        h = self.layout.by_controller.get(controller)
        return self.dirs.get(h.mountpoint) if h else None

    def version(self, controller: str) -> int | None:
        return self.layout.version_of(controller)

    def pids(self) -> list[int]:
        """Every process in the cgroup, in any of its hierarchies (host PIDs)."""
        found: set[int] = set()
        for directory in self.dirs.values():
            found.update(hierarchy.procs(directory))
        return sorted(found)

    # -- processes ------------------------------------------------------------------------------

    def add(self, pid: int) -> None:
        """Move a process into the cgroup: write its PID into cgroup.procs of each hierarchy (0: the caller)."""
        for directory in self.dirs.values():
            try:
                hierarchy.write(directory / "cgroup.procs", pid)
            except ProcessLookupError:
                raise LabError(f"no process {pid} to add to cgroup {self.name}", "is it still running?") from None

    def spawn(self, argv: Sequence[str], **spawn_options):
        """namespaces.spawn(argv, ...) with PID 1 put into the cgroup before it execs: the child waits
        after its set-up (spawn(start=False)), we add it, then let it go."""
        from labctl.kernel import namespaces
        proc = namespaces.spawn(argv, start=False, **spawn_options)
        try:
            self.add(proc.pid)
            proc.start()
        except BaseException:
            proc.kill()
            raise
        return proc

    def join(self) -> None:
        """Move the calling process in (writes 0 to cgroup.procs): for a child between fork and exec,
        e.g. as (part of) namespaces.spawn's `setup`, before pivot_root hides /sys/fs/cgroup."""
        for directory in self.dirs.values():
            fd = os.open(directory / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def popen(self, argv: Sequence[str], **popen_options) -> subprocess.Popen:
        """A plain child process that joins the cgroup before exec (subprocess's preexec_fn)."""
        import subprocess   # here, not at the top: `labctl run` creates cgroups but starts no subprocess
        return subprocess.Popen(list(argv), preexec_fn=self.join, **popen_options)

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup, until none is left (cgroup.kill where v2 has it)."""
        _kill_all(list(self.dirs.values()), timeout)

    # -- limits and statistics ------------------------------------------------------------------

    def set_limits(self, limits: Limits) -> None:
        by_version: dict[int, dict[str, Path]] = {1: {}, 2: {}}
        for controller, h in self.layout.by_controller.items():
            if h.mountpoint in self.dirs:
                by_version[h.version][controller] = self.dirs[h.mountpoint]
        if by_version[1]:
            v1.apply(by_version[1], limits)
        if by_version[2]:
            directory = next(iter(by_version[2].values()))
            v2.apply(directory, set(by_version[2]), limits)

    def stats(self) -> Stats:
        """Read every counter the cgroup's controllers offer (see stats.Stats for which file is which)."""
        stats = Stats()
        v1_dirs, v2_dir, v2_controllers = {}, None, set()
        for controller, h in self.layout.by_controller.items():
            if h.mountpoint not in self.dirs:
                continue
            if h.version == 1:
                v1_dirs[controller] = self.dirs[h.mountpoint]
            else:
                v2_dir = self.dirs[h.mountpoint]
                v2_controllers.add(controller)
        v1.read(v1_dirs, stats)
        if v2_dir is not None:
            v2.read(v2_dir, v2_controllers, stats)
        return stats

    def sampler(self, interval: float = 0.05, per_process: bool = False) -> Sampler:
        return Sampler(self, interval, per_process)

    def __repr__(self) -> str:
        return f"Cgroup({self.name!r}, {[str(d) for d in self.dirs.values()]})"


def _make_node(h: Hierarchy, name: str, v2_controllers: set[str]) -> Path:
    """mkdir <own>/labctl/<name> (with the lock held)."""
    for attempt in range(5):
        directory = hierarchy.ensure_lab_dir(h, v2_controllers) / name
        try:
            directory.mkdir()
            return directory
        except FileNotFoundError:  # a labctl that does not take our lock removed an empty labctl/: again
            if attempt == 4:
                raise
        except FileExistsError:
            raise LabError(f"a lab cgroup named {name!r} already exists ({directory})",
                           "pick another name, or `labctl cleanup` if a crashed run left it") from None
        except PermissionError:
            raise LabError(f"cannot create {directory}: the {', '.join(sorted(h.controllers)) or 'cgroup2'} "
                           "hierarchy is not delegated to this user", "run as root, in a cgroup you may write to") from None
    raise AssertionError("unreachable")


def _v2_controllers(h: Hierarchy, layout: Layout, needed: set[str]) -> set[str]:
    """On v2, the controllers to enable for the lab's node: those the lab wants that the own cgroup
    offers, plus the ones a limit needs (ensure_lab_dir fails clearly if those are not offered)."""
    if h.version != 2:
        return set()
    mine = {c for c, hh in layout.by_controller.items() if hh.mountpoint == h.mountpoint} & set(hierarchy.V2_CONTROLLERS)
    try:
        offered = set((h.own_dir / "cgroup.controllers").read_text().split())
    except OSError:
        offered = set()
    return (mine & offered) | (mine & needed)


def describe_hierarchy(h: Hierarchy) -> dict:
    """What the journal keeps of a hierarchy so that cleanup finds the lab's node in it again."""
    own = hierarchy.cgroup_path(h, h.own_dir)
    return {"version": h.version, "mountpoint": str(h.mountpoint), "own_path": own}


def _kill_all(directories: list[Path], timeout: float) -> None:
    for directory in directories:
        kill_file = directory / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                hierarchy.write(kill_file, 1)
    deadline = time.monotonic() + timeout
    while True:
        pids = {pid for d in directories for sub in _tree(d) for pid in hierarchy.procs(sub)}
        if not pids:
            return
        if time.monotonic() > deadline:
            raise LabError(f"processes {sorted(pids)[:10]} survived SIGKILL in {directories[0]}",
                           "they may be stuck in the kernel (state D); try `labctl cleanup` again later")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _tree(directory: Path) -> list[Path]:
    """A cgroup and every cgroup below it, deepest first (rmdir order)."""
    # os.scandir, not Path.iterdir + is_dir: the directory entries carry their type, so the ~40 control
    # files of a v1 cgroup cost no stat(2) each (twice per hierarchy on every container's teardown)
    try:
        with os.scandir(directory) as entries:
            below = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [d for child in below for d in _tree(child)] + [directory]


def remove_cgroup(name: str, hierarchies: list[dict]) -> None:
    """The journal's undo for a lab cgroup: kill what is left in it, rmdir it (and any cgroups made
    below it), then remove `labctl/` if it is empty. Tolerates everything being gone already."""
    hs = [Hierarchy(d["version"], Path(d["mountpoint"]), frozenset(), d["own_path"]) for d in hierarchies]
    hs = [h for h in hs if h.own_dir.is_dir()]
    dirs = [h.lab_dir / name for h in hs]
    _kill_all([d for d in dirs if d.is_dir()], timeout=5.0)
    with hierarchy.locked([h.own_dir for h in hs]):
        for directory in dirs:
            for sub in _tree(directory):
                hierarchy.rmdir(sub)
        for h in hs:
            hierarchy.prune_lab_dir(h)


def cgroup_of(pid: int | str) -> dict[str, str]:
    """{controller: cgroup path} of a process, from /proc/<pid>/cgroup ("" key: the v2 path)."""
    own_v1, own_v2 = hierarchy._own_cgroups(pid)
    result = dict(own_v1)
    if own_v2 is not None:
        result[""] = own_v2
    return result
