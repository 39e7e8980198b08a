"""A bundle's cgroup: step 3's files, placed by linux.cgroupsPath and filled from linux.resources.

The spec: a relative cgroupsPath is relative to the runtime's own cgroup, an absolute one to the
hierarchy's root. labctl writes nowhere outside `<its own cgroup>/labctl/` (the rule that keeps the
host clean, DESIGN.md), so both are placed there: "testdir/cgrouptest/container" becomes
`<own>/labctl/testdir/cgrouptest/container` in every hierarchy the lab uses (and in cpuset's when
linux.resources.cpu.cpus or mems are given), "/cgrouptest" `<own>/labctl/cgrouptest`. A relative path
is thus where the spec puts it (the runtime's own cgroup is the lab's node); an absolute one is not.

    memory.limit, memory.swap   memory.limit_in_bytes / memory.max, memsw / memory.swap.max
    cpu.shares, quota, period   cpu.shares / cpu.weight, cpu.cfs_quota_us + cfs_period_us / cpu.max
    cpu.cpus, cpu.mems          cpuset.cpus, cpuset.mems (cgroup v1: a new cpuset has none, so each
                                level is first given its parent's, or no process could join it)
    pids.limit                  pids.max
    devices                     step 9's allowlist: devices.allow/deny (v1), a BPF program (v2)
The journal records the cgroup by its whole path, so `labctl cleanup` finds it after a crash; delete
removes the directories it made above the leaf too, once empty.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

from labctl.errors import LabError


def limits_of(resources: dict):
    from labctl.kernel.cgroups.limits import Limits
    mem, cpu, pids = resources.get("memory") or {}, resources.get("cpu") or {}, resources.get("pids") or {}
    limits = Limits(memory_bytes=mem["limit"] if (mem.get("limit") or -1) > 0 else None,
                    memory_swap_bytes=mem.get("swap") if (mem.get("swap") or 0) > 0 else None,
                    cpu_shares=cpu.get("shares") or None, pids_max=pids["limit"] if (pids.get("limit") or 0) > 0 else None)
    if (cpu.get("quota") or 0) > 0:
        limits.cpu_period_us = cpu.get("period") or 100_000
        limits.cpus = cpu["quota"] / limits.cpu_period_us
    return limits


def relative_path(container_id: str, cgroups_path: str) -> str:
    parts = [re.sub(r"[^A-Za-z0-9_.:-]+", "-", p) for p in (cgroups_path or "").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or f"oci-{container_id}"


def _cpuset_hierarchy():
    """The v1 cpuset hierarchy, as a labctl Hierarchy, or None (v2: the lab delegates no cpuset)."""
    from labctl.kernel.cgroups.hierarchy import Hierarchy, _own_cgroups
    own_v1, _ = _own_cgroups()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup" and "cpuset" in fields[sep + 3].split(",") and "cpuset" in own_v1:
                return Hierarchy(1, Path(fields[4]), frozenset(), own_v1["cpuset"], fields[3])
    return None


def _inherit_cpuset(directory: Path) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not (directory / name).read_text().strip():
            (directory / name).write_text((directory.parent / name).read_text())


def create(container_id: str, linux: dict) -> dict:
    """mkdir the cgroup in each hierarchy, write the limits; what the state keeps (runtime/cgroup.py's
    form: name, dirs, hierarchies, journal)."""
    from labctl import state
    from labctl.kernel import cgroups
    from labctl.kernel.cgroups import hierarchy
    resources = linux.get("resources") or {}
    cpu = resources.get("cpu") or {}
    limits = limits_of(resources)
    layout = cgroups.detect()
    hs = layout.hierarchies()
    cpuset = _cpuset_hierarchy() if cpu.get("cpus") or cpu.get("mems") else None
    if cpuset is not None:
        hs.append(cpuset)
    name = relative_path(container_id, linux.get("cgroupsPath", ""))
    described = [cgroups.describe_hierarchy(h) for h in hs]
    rec = state.record("cgroup", cgroups.remove_cgroup, name=name, hierarchies=described)
    info = {"name": name, "dirs": {}, "hierarchies": described, "journal": str(rec.path)}
    try:
        with hierarchy.locked([h.own_dir for h in hs]):
            for h in hs:
                info["dirs"][str(h.mountpoint)] = str(_make(h, name, layout, limits, h is cpuset))
        cg = cgroups.Cgroup(name, layout, {Path(k): Path(v) for k, v in info["dirs"].items() if
                                           cpuset is None or k != str(cpuset.mountpoint)}, rec)
        cg.set_limits(limits)
        if resources.get("devices"):
            info["devices"] = apply_devices(cg, resources["devices"])
        if cpuset is not None:
            leaf = Path(info["dirs"][str(cpuset.mountpoint)])
            for key in ("cpus", "mems"):
                if cpu.get(key):
                    (leaf / f"cpuset.{key}").write_text(cpu[key])
    except OSError as exc:
        remove(info)
        raise LabError(f"cannot make the container's cgroup {name}: {exc.strerror} ({exc.filename})",
                       "check linux.resources and linux.cgroupsPath (`labctl cgroup info` shows the controllers)") from None
    except BaseException:
        remove(info)
        raise
    return info


def apply_devices(cg, entries: list[dict]) -> dict:
    """linux.resources.devices, in order, with step 9's mechanisms (security/devices.py): the v1 devices
    controller's list and, where the cgroup has a cgroup2 directory, a BPF device program."""
    from labctl.security import devices
    rules = [devices.Rule(e.get("type") or "a", e.get("major"), e.get("minor"), e.get("access") or "rwm",
                          allow=bool(e.get("allow"))) for e in entries]
    given = {(str(r), r.allow) for r in rules}
    rules += [r for r in devices.RULES[1:] if (str(r), r.allow) not in given]   # runc's AllowedDevices, always
    v1 = cg.path("devices")
    unified = cg.layout.unified
    v2 = cg.dirs.get(unified.mountpoint) if unified else None
    done = {"rules": [r.describe() for r in rules]}
    if v1 is not None:
        devices.write_v1(v1, rules)
    if v2 is not None and rules != devices.PRIVILEGED:
        try:
            done["bpf_program"] = devices.attach_program(v2, rules)
        except OSError as exc:
            if v1 is None:
                raise LabError(f"cannot attach the device filter to {v2}: {exc.strerror}",
                               "cgroup v2 needs CONFIG_CGROUP_BPF and bpf(2)") from None
    return done


def _make(h, name: str, layout, limits, is_cpuset: bool) -> Path:
    """<own>/labctl/NAME, every level made (v2: each level passes the controllers on to the next)."""
    from labctl.kernel import cgroups
    from labctl.kernel.cgroups import hierarchy
    wanted = cgroups._v2_controllers(h, layout, limits.controllers()) if h.version == 2 else set()
    directory = hierarchy.ensure_lab_dir(h, wanted)
    if is_cpuset:
        _inherit_cpuset(directory)
    parts = name.split("/")
    for i, part in enumerate(parts):
        if h.version == 2 and i > 0 and wanted:
            (directory / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
        directory = directory / part
        directory.mkdir(exist_ok=True)   # an existing one is joined, as runc joins it (labctl run's, with --runtime)
        if is_cpuset:
            _inherit_cpuset(directory)
    return directory


def remove(info: dict | None) -> None:
    """Kill what is left, rmdir the leaf, then the levels above it that are now empty, then labctl/."""
    if not info:
        return
    from labctl.kernel import cgroups
    from labctl.kernel.cgroups import hierarchy
    cgroups.remove_cgroup(info["name"], info["hierarchies"])
    parents = info["name"].split("/")[:-1]
    for directory in info["dirs"].values():
        below = Path(directory).parent
        for _ in parents:
            with contextlib.suppress(OSError):
                below.rmdir()
            below = below.parent
    for h in info["hierarchies"]:
        with contextlib.suppress(OSError):
            hierarchy.prune_lab_dir(hierarchy.Hierarchy(h["version"], Path(h["mountpoint"]), frozenset(), h["own_path"]))
    if info.get("journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(info["journal"]).unlink()
