"""`labctl doctor`: one row per requirement, each judged on the running kernel, with the fix for each.

Status: pass, warn (the lab works, with less), fail (a step cannot run). The exit status is non-zero
only when something the lab needs is missing.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass

from labctl.kernel.syscalls import NAMESPACE_FLAGS

@dataclass
class Row:
    requirement: str
    status: str          # pass | warn | fail
    detail: str
    fix: str = ""


def check_root() -> Row:
    if os.geteuid() == 0:
        return Row("root", "pass", "running as uid 0")
    return Row("root", "fail", f"running as uid {os.geteuid()}", "run labctl as root (sudo)")


def check_kernel() -> Row:
    release = platform.release()
    major, minor = (int(x) for x in release.split(".")[:2])
    if (major, minor) >= (5, 10):
        return Row("kernel", "pass", release)
    return Row("kernel", "warn", f"{release}: older than 5.10, some features may be missing",
               "use the classroom VM (Debian 12, kernel 6.1)")


def check_namespaces() -> list[Row]:
    rows = []
    for kind in sorted(NAMESPACE_FLAGS):
        present = os.path.exists(f"/proc/self/ns/{kind}")
        rows.append(Row(f"namespace: {kind}", "pass" if present else "fail",
                        f"/proc/self/ns/{kind}" + ("" if present else " missing"),
                        "" if present else f"a kernel built with CONFIG_{kind.upper()}_NS"))
    return rows


def check_cgroups() -> list[Row]:
    """The cgroup mode and, per controller the lab uses, where it is and whether the lab may use it
    (read by labctl.kernel.cgroups, the same code that creates the lab's cgroups)."""
    from labctl.kernel import cgroups
    layout = cgroups.detect()
    mode = layout.mode
    if mode == "none":
        return [Row("cgroups", "fail", "no cgroup filesystem is mounted", "mount cgroup2 at /sys/fs/cgroup")]
    v1 = sorted({c if c != "io" else "blkio" for c, h in layout.by_controller.items() if h.version == 1})
    unified = ""
    if layout.unified:
        offered = (layout.unified.mountpoint / "cgroup.controllers").read_text().split()
        unified = f"cgroup2 at {layout.unified.mountpoint} with {', '.join(offered) or 'no controllers'}"
    detail = {"v2": f"cgroup v2: {unified}", "v1": f"cgroup v1: {', '.join(v1)}",
              "hybrid": f"hybrid: v1 controllers {', '.join(v1)}; {unified}",
              "mixed": f"hybrid (controllers on both): v1 {', '.join(v1)}; {unified}"}[mode]
    rows = [Row("cgroup mode", "pass", detail)]
    for controller in ("memory", "cpu", "pids", "io"):
        label = "blkio" if layout.version_of(controller) == 1 and controller == "io" else controller
        hierarchy = layout.by_controller.get(controller)
        if hierarchy is None:
            rows.append(Row(f"cgroup controller: {label}", "fail", "not mounted in any hierarchy",
                            "boot with the controller enabled (e.g. cgroup_enable=memory)"))
        elif not layout.can_limit(controller):
            rows.append(Row(f"cgroup controller: {label}", "fail",
                            f"v2, but not delegated to {hierarchy.own_dir}",
                            "run the lab in a cgroup with the controller delegated, e.g. "
                            "`systemd-run --scope -p Delegate=yes labctl ...`"))
        else:
            rows.append(Row(f"cgroup controller: {label}", "pass",
                            f"v{hierarchy.version} at {hierarchy.mountpoint}, lab cgroups in {hierarchy.lab_dir}"))
    return rows


def check_overlayfs() -> Row:
    with open("/proc/filesystems") as f:
        if any(line.split()[-1] == "overlay" for line in f):
            return Row("OverlayFS", "pass", "overlay in /proc/filesystems")
    if subprocess.run(["modprobe", "overlay"], capture_output=True).returncode == 0:
        return Row("OverlayFS", "pass", "overlay module loaded")
    return Row("OverlayFS", "fail", "no overlay filesystem", "modprobe overlay, or a kernel with CONFIG_OVERLAY_FS")


def check_userns_remap() -> Row:
    """--userns remap (step 9): the labctl range in /etc/subuid and /etc/subgid, overlay on idmapped layers."""
    from labctl.errors import LabError
    from labctl.security import userns
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    if (major, minor) < (5, 19):
        return Row("userns remap", "warn", "OverlayFS takes idmapped layers from Linux 5.19 on",
                   "use the classroom VM (kernel 6.1), or run without --userns remap")
    try:
        uid_map, gid_map = userns.resolve("remap")
    except LabError as exc:
        return Row("userns remap", "warn", exc.cause, exc.fix)
    return Row("userns remap", "pass", f"root inside is uid {uid_map[0].outside}, gid {gid_map[0].outside} "
               f"(/etc/subuid, /etc/subgid)")


def check_veth_bridge() -> Row:
    """Create and delete a veth pair and a bridge: the real test of what step 6 needs."""
    from labctl import state
    if os.geteuid() != 0:
        return Row("veth + bridge", "warn", "not checked (needs root)", "run doctor as root")
    names = (f"labdoc{os.getpid() % 10000}", f"labdocp{os.getpid() % 10000}", f"labdocb{os.getpid() % 10000}")
    rec = state.record("link", delete_links, names=list(names))
    try:
        veth = subprocess.run(["ip", "link", "add", names[0], "type", "veth", "peer", "name", names[1]],
                              capture_output=True, text=True)
        bridge = subprocess.run(["ip", "link", "add", names[2], "type", "bridge"], capture_output=True, text=True)
    finally:
        delete_links(list(names))
        rec.forget()
    if veth.returncode == 0 and bridge.returncode == 0:
        return Row("veth + bridge", "pass", "created and removed a veth pair and a bridge")
    return Row("veth + bridge", "fail", (veth.stderr or bridge.stderr).strip(),
               "modprobe veth bridge, or a kernel with CONFIG_VETH and CONFIG_BRIDGE")


def delete_links(names: list[str]) -> None:
    for name in names:
        if os.path.exists(f"/sys/class/net/{name}"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def check_tracing() -> list[Row]:
    """tracefs, kernel headers and bcc, probed by labctl.tracing itself (the same probes every tracer
    runs before loading a program); bcc is asked to compile and load one program."""
    from labctl.tracing import requirements
    return [Row(*finding) for finding in requirements.diagnose(compile_program=True)]


def check_btf() -> Row:
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        return Row("BTF", "pass", "/sys/kernel/btf/vmlinux")
    return Row("BTF", "warn", "no /sys/kernel/btf/vmlinux (bcc still works with headers)")


def check_kprobes() -> Row:
    if os.path.exists("/sys/bus/event_source/devices/kprobe"):
        return Row("kprobes", "pass", "available (the lab uses tracepoints either way)")
    return Row("kprobes", "warn", "not in this kernel; the lab uses tracepoints, so nothing is lost")


def check_tools() -> list[Row]:
    rows = []
    for tool, package, needed in (("docker-registry", "docker-registry", True), ("skopeo", "skopeo", True),
                                  ("runc", "runc", True), ("umoci", "umoci", False), ("crun", "crun", False),
                                  ("busybox", "busybox-static", True)):
        path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
        if path:
            rows.append(Row(f"tool: {tool}", "pass", path))
        else:
            rows.append(Row(f"tool: {tool}", "fail" if needed else "warn", "not installed",
                            f"apt-get install {package}"))
    return rows


def check_lab_image() -> Row:
    from labctl.images import labimage
    path = labimage.busybox_rootfs_path()
    if (path / "bin/busybox").exists():
        return Row("lab image", "pass", str(path))
    return Row("lab image", "warn", "not built yet (steps build it on first use)", "labctl prepare")


def run_all() -> list[Row]:
    rows = [check_root(), check_kernel(), *check_namespaces(), *check_cgroups(), check_overlayfs(),
            check_userns_remap()]
    rows.append(check_veth_bridge())
    rows += [*check_tracing(), check_btf(), check_kprobes(), *check_tools(), check_lab_image()]
    return rows


def main(json_output: bool = False) -> int:
    rows = run_all()
    if json_output:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        from labctl import ui
        colour = {"pass": "green", "warn": "yellow", "fail": "red"}
        ui.table(("requirement", "status", "detail", "fix"),
                 [(r.requirement, f"[{colour[r.status]}]{r.status}[/]", r.detail, r.fix) for r in rows],
                 title="labctl doctor")
        failed = [r.requirement for r in rows if r.status == "fail"]
        ui.say(f"[red]missing: {', '.join(failed)}[/red]" if failed else "[green]ready for the lab[/green]")
    return 1 if any(r.status == "fail" for r in rows) else 0
