"""Step 9's attacks: what a root process that broke into a container tries against the host, run for real.

attacker.c (beside this file, compiled static on first use) makes each attempt and prints one JSON line
with the errno the kernel gave:

  disk     mknod(2) a node for a block device of the host, open(2) it, read(2) its first sector
           (the host's own disk; on a sandbox that denies even its root that, a loop device: target_disk)
  mount    mount(2) a tmpfs
  sysrq    open(2) /proc/sysrq-trigger for writing (never writes: one byte would reboot the host)
  procsys  open(2) /proc/sys/kernel/core_pattern for writing (writing it runs a host program on a crash)
  kcore    read(2) /proc/kcore, the kernel's memory
  module   init_module(2) with an empty image: past the permission check the loader says ENOEXEC
  userns   unshare(CLONE_NEWUSER): a user namespace, where the process has every capability again
  clock    settimeofday(NULL, NULL): changes nothing, but the kernel checks CAP_SYS_TIME first
  setuid   a setuid-root copy of the attacker planted through a volume, run by an unprivileged user
           (Liz Rice's demo): does it come back as euid 0?

A kernel built without the feature (no /proc/kcore, no module loader) reports the attack as absent.
The defences are the fields of labctl.security.profile.SecurityProfile, added one at a time to a
--privileged container, each on top of the ones before (defences()); after the fifth, the container has
`labctl run`'s default profile.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from labctl import state
from labctl.errors import LabError

SOURCE = Path(__file__).with_name("attacker.c")
ATTACKS = ("disk", "mount", "sysrq", "procsys", "kcore", "module", "userns", "clock", "setuid")
PLANT_UID = 1000    # the unprivileged user (the lab image's `student`) who runs the planted setuid binary


@dataclass
class Outcome:
    """One attempt: ok True (the attack worked), False (stopped: `errno` by `call`), None (absent here)."""
    attack: str
    ok: bool | None
    call: str = ""
    errno: str | None = None

    @property
    def text(self) -> str:
        if self.ok is None:
            return "absent"
        return "WORKS" if self.ok else f"{self.call}: {self.errno}"


def build_attacker() -> Path:
    """attacker.c compiled static (any image can run it), cached by its source's hash; built atomically."""
    source = SOURCE.read_bytes()
    target = state.subdir("cache", f"attacker-{hashlib.sha256(source).hexdigest()[:12]}") / "attacker"
    if target.exists():
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise LabError("step 9's attacker is a C program and there is no gcc to build it",
                       "`apt-get install gcc libc6-dev` (vagrant/provision.sh installs them)")
    partial = target.with_suffix(".partial")
    done = subprocess.run([gcc, "-static", "-O2", "-Wall", "-o", str(partial), str(SOURCE)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["gcc failed"])[0]
        raise LabError(f"building the attacker failed: {first}", "`apt-get install libc6-dev` gives the static libc")
    os.replace(partial, target)
    return target


@contextlib.contextmanager
def target_disk() -> Iterator[tuple[int, int, str]]:
    """(major, minor, what) of a block device of the host for the disk attack: the one under / if root on
    the host can read it, else (a sandboxed host that forbids even its own root to open its disk) a loop
    device the demo attaches to a small file of its own, detached on the way out (journaled, so that
    `labctl cleanup` detaches it after a crash)."""
    disk = _root_disk()
    if disk and _readable(f"/sys/dev/block/{disk[0]}:{disk[1]}"):
        yield disk
        return
    backing = state.new_tmpdir("disk-") / "disk.img"
    backing.write_bytes(b"the host's data\n" + bytes(1 << 20))
    done = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(backing.parent, ignore_errors=True)
        raise LabError(f"no block device to attack: losetup failed: {done.stderr.strip()}",
                       "the disk attack needs a loop device where the host's own disk cannot be opened")
    device = done.stdout.strip()
    rec = state.record("loop-device", detach_loop, device=device, backing=str(backing))
    try:
        st = os.stat(device)
        yield os.major(st.st_rdev), os.minor(st.st_rdev), f"{device} (a loop device: this host denies opening its disk)"
    finally:
        detach_loop(device, str(backing))
        rec.forget()


def detach_loop(device: str, backing: str) -> None:
    """Undo of target_disk's loop device: detach it (if it still shows our file), remove the file."""
    with contextlib.suppress(OSError):
        if Path(f"/sys/block/{Path(device).name}/loop/backing_file").read_text().strip() == backing:
            subprocess.run(["losetup", "--detach", device], capture_output=True)
    shutil.rmtree(Path(backing).parent, ignore_errors=True)


def _root_disk() -> tuple[int, int, str] | None:
    """The block device under / (/proc/self/mountinfo, /sys/dev/block), if it is one."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/" and Path(f"/sys/dev/block/{fields[2]}").exists():
                major, minor = fields[2].split(":")
                return int(major), int(minor), "/dev/" + Path(os.readlink(f"/sys/dev/block/{fields[2]}")).name
    return None


def _readable(sys_dev: str) -> bool:
    """Can root on the host open this device? (A node of our own in the state dir, opened and removed.)"""
    major, minor = Path(sys_dev).name.split(":")
    node = state.new_tmpdir("node-") / "dev"
    try:
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(int(major), int(minor)))
        os.close(os.open(node, os.O_RDONLY))
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(node.parent, ignore_errors=True)


def parse(output: str) -> dict[str, Outcome]:
    """The attacker's JSON lines -> {attack: Outcome}; other lines (a shell's error) are ignored."""
    outcomes = {}
    for line in output.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            errno = data.get("errno") if "euid" not in data else f"euid stays {data['euid']}"
            outcomes[data["attack"]] = Outcome(data["attack"], data["ok"], data.get("call", ""), errno)
    return outcomes


# ---------------------------------------------------------------------------------------------
# The defences, one at a time


def privileged():
    """The most open profile: --privileged."""
    from labctl.security.profile import from_flags
    return from_flags(privileged=True)


def _with(**fields):
    return lambda profile: dataclasses.replace(profile, **fields)


def defences() -> list[tuple[str, object]]:
    """(name, profile -> profile with that defence added), in the order the demo adds them to a
    --privileged container, each on top of the ones before: every step stops attacks the ones before
    let through. After "seccomp" the profile is `labctl run`'s default; "userns remap" is the last layer.
    (Seccomp comes after capabilities on purpose: Docker's profile allows mount, unshare and the clock to
    a container that holds CAP_SYS_ADMIN or CAP_SYS_TIME, so alone, on a privileged container, it stops
    nothing those capabilities cover.)"""
    from labctl.security import capabilities, paths
    from labctl.security.profile import from_flags
    default = from_flags()
    return [
        ("device allowlist", _with(privileged=False)),
        ("masked paths", _with(masked_paths=list(paths.MASKED), readonly_paths=list(paths.READONLY))),
        ("no_new_privs", _with(no_new_privileges=True)),
        ("capabilities", _with(capabilities=list(capabilities.DEFAULT))),
        ("seccomp", _with(seccomp=default.seccomp, seccomp_source="default")),
        ("userns remap", lambda p: dataclasses.replace(p, **_userns_fields())),
    ]


def _userns_fields() -> dict:
    from labctl.security import userns
    uid_map, gid_map = userns.resolve("remap")
    return {"userns": "remap", "uid_map": uid_map, "gid_map": gid_map}


def default_profile():
    """What `labctl run` gives when no flag is given."""
    from labctl.security.profile import from_flags
    return from_flags()


# ---------------------------------------------------------------------------------------------
# Running them


def run_in_labctl(profile, image: str = "localhost/busybox:latest") -> dict[str, Outcome]:
    """Every attack in one container with this security profile: the attacker as root, then the planted
    setuid copy as an unprivileged user."""
    from labctl.containers import lifecycle
    attacker = build_attacker()
    with target_disk() as (major, minor, _):
        outcomes = _run(lifecycle, image, profile, ["/attack/attacker", "all", str(major), str(minor)],
                        [f"{attacker.parent}:/attack:ro"], user=None)
    plant = state.new_tmpdir("plant-")
    try:
        planted = plant / "attacker"
        shutil.copy2(attacker, planted)
        os.chown(planted, 0, 0)
        os.chmod(planted, 0o4755)   # setuid root: what an attacker who can write to a volume plants
        os.chmod(plant, 0o755)
        outcomes.update(_run(lifecycle, image, profile, ["/plant/attacker", "whoami"], [f"{plant}:/plant"],
                             user=str(PLANT_UID)))
    finally:
        shutil.rmtree(plant, ignore_errors=True)
    return outcomes


def _run(lifecycle, image: str, profile, argv: list[str], volumes: list[str], user: str | None) -> dict:
    spec, runnable = lifecycle.build_spec(image, argv, volumes_=volumes, tmpfs=["/tmp"], user=user,
                                          auto_remove=True, security=profile)
    code, output = lifecycle.run_capture(spec, runnable)
    outcomes = parse(output)
    if not outcomes:
        raise LabError(f"the attacker printed nothing (exit {code}): {output.strip()[:200]}",
                       "run it by hand: `labctl run --rm -v DIR:/attack busybox /attack/attacker all 1 3`")
    return outcomes


def matrix() -> dict[str, dict[str, Outcome]]:
    """{column: {attack: Outcome}}: --privileged, then each defence added to the ones before (defences()).
    What the step 9 plot draws: which defence stops which attack, measured."""
    profile = privileged()
    columns = {"--privileged": run_in_labctl(profile)}
    for name, add in defences():
        profile = add(profile)
        columns[f"+ {name}"] = run_in_labctl(profile)
    return columns


# ---------------------------------------------------------------------------------------------
# The same attacks in runc, with `runc spec`'s default config on the same root filesystem


def run_in_runc(rootfs: Path | None = None) -> dict[str, Outcome]:
    """Every attack in runc (`runc spec` unchanged but for the command, a tmpfs /tmp and the attacker bound
    on /mnt, a directory the image already has: runc would otherwise create the mount point in the
    shared root filesystem). The planted setuid binary runs as PLANT_UID, as in run_in_labctl."""
    from labctl.images.labimage import busybox_rootfs_path
    runc = shutil.which("runc")
    if runc is None:
        raise LabError("runc is not installed", "`apt-get install runc` (vagrant/provision.sh installs it)")
    rootfs = rootfs or busybox_rootfs_path()
    attacker = build_attacker()
    with target_disk() as (major, minor, _):
        outcomes = _runc(runc, rootfs, attacker.parent, ["/mnt/attacker", "all", str(major), str(minor)], 0)
    plant = state.new_tmpdir("plant-")
    try:
        shutil.copy2(attacker, plant / "attacker")
        os.chmod(plant / "attacker", 0o4755)
        os.chmod(plant, 0o755)
        outcomes.update(_runc(runc, rootfs, plant, ["/mnt/attacker", "whoami"], PLANT_UID))
    finally:
        shutil.rmtree(plant, ignore_errors=True)
    return outcomes


def _runc(runc: str, rootfs: Path, mnt: Path, argv: list[str], uid: int) -> dict[str, Outcome]:
    bundle = state.new_tmpdir("runc-bundle-")
    container_id = bundle.name
    try:
        subprocess.run([runc, "spec", "--bundle", str(bundle)], check=True, capture_output=True)
        config = json.loads((bundle / "config.json").read_text())
        config["root"]["path"] = str(rootfs)
        config["process"].update(args=argv, terminal=False, user={"uid": uid, "gid": uid})
        config["mounts"] += [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
            {"destination": "/mnt", "type": "bind", "source": str(mnt), "options": ["rbind", "ro"]}]
        (bundle / "config.json").write_text(json.dumps(config))
        done = subprocess.run([runc, "run", "--bundle", str(bundle), container_id], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=60)
        outcomes = parse(done.stdout)
        if not outcomes:
            raise LabError(f"runc ran no attack (exit {done.returncode}): {done.stderr.strip()[:200]}",
                           "check that `runc run` works here: `labctl doctor`")
        return outcomes
    finally:
        subprocess.run([runc, "delete", "--force", container_id], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Watching what the kernel refuses, live (step 8's tracers, scoped to the attacked container)


def denied_calls(names: tuple[str, ...] = ("mount", "userns", "clock", "module"), seconds: float = 3.0) -> list[dict]:
    """Run these attacks in a default container under labctl.tracing.denied's tracer: the calls the kernel
    refused it with EPERM or EACCES, as events. The attacker waits for /tmp/go, which is created
    (through /proc/PID/root) once the tracer is attached: bcc compiles for a second or more first."""
    from labctl.containers import lifecycle
    from labctl.tracing import Scope
    from labctl.tracing.denied import DeniedTracer
    attacker = build_attacker()
    script = f"while [ ! -e /tmp/go ]; do sleep 0.1; done; /attack/attacker only {' '.join(names)}; sleep 1"
    spec, image = lifecycle.build_spec("localhost/busybox:latest", ["sh", "-c", script], detach=True,
                                       volumes_=[f"{attacker.parent}:/attack:ro"], tmpfs=["/tmp"])
    container, _ = lifecycle.run(spec, image)
    try:
        with DeniedTracer(Scope.of_pid(container.pid, label=container.name)) as tracer:
            open(f"/proc/{container.pid}/root/tmp/go", "w").close()
            return list(tracer.stream(duration=seconds))
    finally:
        lifecycle.remove(container, force=True)
