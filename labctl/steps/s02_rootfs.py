"""Step 2: the root filesystem. The demo, the check, and the reference solution of lab/02-rootfs/exercise.py."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from labctl.steps import checking
from labctl.images import labimage
from labctl.kernel import namespaces, rootfs
from labctl import state, ui
from labctl.errors import CheckFailed, require_root

EXPLANATION = """
A container needs its own root filesystem. The lab's is a busybox userland built locally
(`labctl prepare`): one static binary and a symlink per command.

**chroot(2)** changes a process's root *directory*, nothing more. A root process inside can
`chroot` again into a subdirectory while its working directory stays outside, then walk up with
`..` to the real root: the classic *chroot escape*.

**pivot_root(2)** swaps the root *mount* of the whole mount namespace. The sequence (runc does the
same): make mount propagation private, bind-mount the new root onto itself (pivot_root needs a mount
point), mount `/proc` (a procfs of the new PID namespace, so `ps` shows only the container), a
minimal `/dev` (tmpfs with null, zero, full, random, urandom, tty; devpts; shm), `/sys` read-only;
then `pivot_root(".", ".")` and `umount2(".", MNT_DETACH)`: the old root is gone, and no `..`
leads back to the host.
"""


def _host_probe() -> Path:
    probe_dir = state.new_tmpdir("probe-")
    probe = probe_dir / "host-secret.txt"
    probe.write_text("a file on the host, outside the container\n")
    return probe


def demo() -> None:
    require_root("the root filesystem demo")
    root = labimage.ensure_busybox_rootfs()
    ui.kernel(f"the lab image: {root} ({sum(1 for _ in root.rglob('*'))} entries, one static busybox)")
    probe = _host_probe()
    try:
        ui.say("\n[bold]1. chroot[/bold] into the image, then try the escape "
               "(chroot into a subdirectory, `..` x 64, chroot(\".\")):")
        leaked = rootfs.chroot_escape(str(root), str(probe))
        if leaked:
            ui.bad(f"escaped: read the host's {probe} from inside the chroot: {leaked.strip()!r}")
        else:
            ui.ok("the escape did not work this time")

        ui.say("\n[bold]2. pivot_root[/bold] in new mount, PID, UTS and IPC namespaces:")
        with namespaces.spawn(["sleep", "30"], hostname="lab-rootfs",
                              setup=lambda: rootfs.setup_container_root(root), what="step 2 demo") as proc:
            mounts = rootfs.mount_points_of(proc.pid)
            ui.table(("mount point", "type", "options"), mounts,
                     title=f"/proc/{proc.pid}/mountinfo: the container's whole mount table")
            ui.kernel(f"{len(mounts)} mounts inside; the host has {len(rootfs.mount_points_of(os.getpid()))}: "
                      "none of the host's is visible, the old root is gone")
            seen = rootfs.processes_seen_by(proc.pid)
            ui.kernel(f"processes in the container's /proc: {seen} (the host has {len(os.listdir('/proc'))} "
                      "entries in its /proc)")
            dev = sorted(os.listdir(f"/proc/{proc.pid}/root/dev"))
            ui.kernel(f"/dev inside: {' '.join(dev)}")
            leaked = namespaces.run_in_namespaces_of(
                proc.pid, lambda: rootfs.chroot_escape("/", str(probe)) or "", kinds=("mnt",))
            if leaked:
                ui.bad(f"escape worked inside the pivoted root: {leaked.strip()!r}")
            else:
                ui.ok("the same escape inside the pivoted root finds no host file: / is the image, all the way up")
        from labctl.demos.mounts import around_pivot_root
        from labctl.plots.mounts import mount_trees
        from labctl.steps import save_figure
        before, after, root_path = around_pivot_root(root)
        ui.kernel(f"the same container's mount table just before pivot_root: {len(before)} mounts; after: "
                  f"{len(after)}; mount {next(m.id for m in after if m.point == '/')} (the image's bind mount) is /")
        save_figure(mount_trees(before, after, root_path), "02-mount-tree")
    finally:
        shutil.rmtree(probe.parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The check

ALLOWED_MOUNTS = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/tmp", "/run"}


def check(command: list[str]) -> list[str]:
    """Judge `command ROOTFS sleep N` from /proc/<pid>/root, /proc/<pid>/mountinfo and its /proc.

    The exercise runs in a mount namespace of the check's own whose mounts are *shared*, as systemd
    makes them on most hosts (this machine's / may be private, which would hide a missing
    MS_PRIVATE): a mount the exercise makes without making its namespace private first propagates
    back there, where the check sees it; and it all goes when that namespace ends."""
    verified: list[str] = []
    work = state.new_tmpdir("check2-")
    root = work / "rootfs"
    labimage.build_busybox_rootfs(root)   # a fresh copy: a half-done exercise cannot damage the lab image
    host_mounts_before = _host_mounts_under(root)
    argv = ["sleep", "1002"]
    try:
        with _shared_mount_namespace() as holder:
            enter = ["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--"]
            with checking.running(enter + command + [str(root)] + argv) as run:
                try:
                    pid = checking.process_with_argv(run, argv)
                finally:
                    _expect_no_propagation(holder, root)
                verified.append(f"the exercise started `{' '.join(argv)}` (host PID {pid})")
                _judge_root(pid, root, verified)
                _expect_no_propagation(holder, root)
                verified.append("started where mounts are shared, no mount of its namespace propagated back")
    finally:
        leaked = _host_mounts_under(root) - host_mounts_before
        for target in sorted(leaked, key=len, reverse=True):
            state.unmount(target)
        shutil.rmtree(work, ignore_errors=True)
    if leaked:
        raise CheckFailed(f"mounts leaked to the host: {', '.join(sorted(leaked))} (removed now)",
                          "make propagation private first: mount(None, \"/\", None, MS_REC | MS_PRIVATE)")
    verified.append("no mount leaked to the host")
    return verified


@contextlib.contextmanager
def _shared_mount_namespace():
    """A process (`sleep`) in a new mount namespace whose mounts are all MS_SHARED (`unshare
    --propagation shared`); yields its PID and SIGKILLs it on the way out, which ends the namespace."""
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "shared", "sleep", "100000"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec = state.record_process(holder.pid, "step 2 check: a mount namespace with shared propagation")
    try:
        if not checking.wait_until(lambda: _cmdline(holder.pid)[:1] == ["sleep"] or holder.poll() is not None):
            raise CheckFailed("`unshare --mount --propagation shared` did not start", "is util-linux installed?")
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        rec.forget()


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode() for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _expect_no_propagation(holder: int, root: Path) -> None:
    """The exercise's mounts must stay in its own namespace: none may appear where it was started."""
    with open(f"/proc/{holder}/mountinfo") as f:
        seen = sorted({line.split()[4] for line in f if line.split()[4].startswith(str(root))})
    if seen:
        raise CheckFailed(
            f"the mounts the exercise made in its new namespace ({', '.join(seen[:4])}) appeared in the "
            "namespace it was started from: its mounts were still shared with it (the check starts it "
            "where / is shared, as systemd makes it), and pivot_root refuses a shared root with EINVAL",
            "before mounting anything in the new namespace, make all its mounts private: "
            "mount(2) on / with MS_REC | MS_PRIVATE (TODO 1)")


def _judge_root(pid: int, root: Path, verified: list[str]) -> None:
    """Its root, its mount namespace's root, its mount table, /proc, /sys and /dev."""
    own = os.stat(root / "etc/os-release")
    try:
        theirs = os.stat(f"/proc/{pid}/root/etc/os-release")
        same_root = (own.st_dev, own.st_ino) == (theirs.st_dev, theirs.st_ino)
    except FileNotFoundError:
        same_root = False
    checking.expect(same_root, f"the process's root (/proc/{pid}/root) is not {root}",
                    "make ROOTFS the root: bind-mount it onto itself, chdir into it, pivot_root(\".\", \".\")",
                    verified, "/proc/<pid>/root is the image's root filesystem")
    ns_root_is_image = namespaces.run_in_namespaces_of(
        pid, lambda: os.path.exists("/etc/os-release") and "labctl" in open("/etc/os-release").read(),
        kinds=("mnt",)) == "True"
    checking.expect(ns_root_is_image,
                    "the mount namespace's root is still the host's / (a process joining it lands on the host)",
                    "chroot changes one process's root only: use pivot_root and then umount2 the old root",
                    verified, "the mount namespace's root mount is the image (pivot_root, not chroot)")
    mounts = rootfs.mount_points_of(pid)
    stray = [m for m, _, _ in mounts if m not in ALLOWED_MOUNTS]
    checking.expect(not stray, f"host mounts are still visible inside: {', '.join(stray[:5])}",
                    "after pivot_root(\".\", \".\") detach the old root: umount2(\".\", MNT_DETACH)",
                    verified, f"no host mount is visible: {', '.join(m for m, _, _ in mounts)}")
    types = {m: t for m, t, _ in mounts}
    checking.expect(types.get("/proc") == "proc", "no procfs is mounted at /proc inside",
                    "mount(\"proc\", ROOTFS + \"/proc\", \"proc\") in the child, after the PID namespace exists",
                    verified, "a procfs is mounted at /proc")
    seen = rootfs.processes_seen_by(pid)
    checking.expect(seen and seen[0][0] == 1 and len(seen) <= 3,
                    f"the container's /proc shows {len(seen)} processes, e.g. {seen[:4]}",
                    "mount /proc from the process that is PID 1 in the new PID namespace (after the fork)",
                    verified, f"the container's /proc shows only its own processes: {seen}")
    if "/sys" in types:
        opts = {m: o for m, _, o in mounts}["/sys"]
        checking.expect(opts.split(",")[0] == "ro", "/sys is mounted read-write inside",
                        "mount sysfs with MS_RDONLY", verified, "/sys is read-only")
    if "/dev" in types:
        checking.expect(types["/dev"] != "devtmpfs", "/dev is the host's devtmpfs, with every host device",
                        "mount a tmpfs on /dev and mknod only null, zero, full, random, urandom, tty",
                        verified, "/dev is a minimal tmpfs, not the host's devtmpfs")


def _host_mounts_under(path: Path) -> set[str]:
    prefix = str(path)
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f if line.split()[4].startswith(prefix)}


def reference(argv: list[str]) -> int:
    """Reference solution: `ROOTFS COMMAND [ARGS...]`, same contract as the exercise."""
    if len(argv) < 2:
        print("usage: python -m labctl.steps.s02_rootfs ROOTFS COMMAND [ARGS...]", file=sys.stderr)
        return 2
    root = rootfs.check_rootfs(argv[0])
    proc = namespaces.spawn(argv[1:], setup=lambda: rootfs.setup_container_root(root), what="step 2 reference")
    status = proc.wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
