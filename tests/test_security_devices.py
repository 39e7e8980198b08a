"""Step 9's device allowlist, judged by the errno of real mknod(2) and open(2) attempts, the kernel's
own view of the cgroup (devices.list, BPF_PROG_QUERY, `bpftool`), and what is left after the end.

The device read is of a block device the host itself may read: the root disk, and a loop device made
for the test over a small file with known bytes (when the host's own cgroup already denies the root
disk, as inside another container, only the loop device can tell our rules from the host's). Nothing is
ever written to a device. On the hybrid host both mechanisms run (the v1 devices controller and the
BPF program on the container's cgroup2 directory); in the VM tier (pure cgroup v2) the BPF one.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl.kernel import cgroups
from labctl.security import devices

pytestmark = pytest.mark.root

LAYOUT = cgroups.detect()
EPERM = os.strerror(errno.EPERM)   # how busybox (through libc's strerror) reports the errno
MARKER = b"LABCTL-DEVICE-TEST"


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def host_can_read(major: int, minor: int, directory: Path) -> bool:
    """The control: may this test process (outside any lab cgroup) open the device for reading?"""
    node = directory / f"control-{major}-{minor}"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    try:
        os.close(os.open(node, os.O_RDONLY))
        return True
    except PermissionError:
        return False
    finally:
        node.unlink()


@pytest.fixture
def loop_device(tmp_path):
    """(major, minor, content) of a loop device over a 1 MiB file that starts with MARKER; detached after."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(MARKER + bytes(1024 * 1024 - len(MARKER)))
    made = subprocess.run(["losetup", "--find", "--show", "--read-only", str(backing)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no loop device here: {made.stderr.strip()}")
    device = made.stdout.strip()
    try:
        rdev = os.stat(device).st_rdev
        yield os.major(rdev), os.minor(rdev), MARKER
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


def root_disk() -> tuple[int, int]:
    """MAJ:MIN of the block device the host's / is on (a partition or a whole disk)."""
    dev = os.stat("/").st_dev
    if not Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").exists():
        pytest.skip("the host's / is not on a block device (overlay, tmpfs, ...)")
    return os.major(dev), os.minor(dev)


@pytest.fixture(params=["loop device", "root disk"])
def block_device(request, tmp_path):
    """(major, minor, first bytes or None) of a block device this test process may read."""
    if request.param == "root disk":
        major, minor = root_disk()
        content = None
    else:
        major, minor, content = request.getfixturevalue("loop_device")
    if not host_can_read(major, minor, tmp_path):
        pytest.skip(f"the host itself may not open {major}:{minor} (its own cgroup denies it: inside another "
                    "container?), so a denial in the container would prove nothing")
    return major, minor, content


def in_container(*args: str, script: str) -> str:
    result = run_labctl("run", "--rm", *args, "busybox", "sh", "-c", script + "\nexit 0", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def attack(major: int, minor: int) -> str:
    """mknod a node for the device in /tmp (on the overlay: no nodev) and read 18 bytes of it."""
    return (f"mknod /tmp/disk b {major} {minor} && echo MKNOD-OK; "
            "head -c 18 /tmp/disk > /tmp/out && echo READ-OK && cat /tmp/out; echo")


# ---------------------------------------------------------------------------------------------
# `labctl run`: the default container and --privileged


def test_default_container_may_mknod_a_disk_but_not_open_it(block_device):
    major, minor, _ = block_device
    out = in_container(script=attack(major, minor))
    assert "MKNOD-OK" in out, out                           # 'm' is allowed for every device, as Docker does
    assert "READ-OK" not in out and f"/tmp/disk: {EPERM}" in out, out


def test_privileged_container_reads_the_disk(block_device):
    major, minor, content = block_device
    out = in_container("--privileged", script=attack(major, minor))
    assert "MKNOD-OK" in out and "READ-OK" in out, out
    if content is not None:
        assert content.decode() in out


def test_the_allowed_devices_work_in_a_default_container():
    out = in_container(script="echo x > /dev/null && echo NULL-OK; head -c 5 /dev/zero | wc -c; "
                              "head -c 7 /dev/urandom | wc -c; head -c 3 /dev/random | wc -c; echo x > /dev/full")
    lines = out.split("\n")
    assert lines[:4] == ["NULL-OK", "5", "7", "3"], out
    # /dev/full opens (no EPERM) and then refuses the write as it should: ENOSPC
    assert os.strerror(errno.ENOSPC) in out and EPERM not in out, out


@pytest.mark.parametrize("privileged", [False, True], ids=["default", "privileged"])
def test_a_character_device_outside_the_list(privileged):
    """/dev/loop-control (10:237) has the major of /dev/net/tun (10:200), which is allowed: the minor
    decides. (Opening it does nothing by itself.)"""
    loop_control = os.stat("/dev/loop-control").st_rdev if os.path.exists("/dev/loop-control") else None
    if loop_control is None:
        pytest.skip("no /dev/loop-control here")
    os.close(os.open("/dev/loop-control", os.O_RDONLY))   # the control: the host may open it
    major, minor = os.major(loop_control), os.minor(loop_control)
    out = in_container(*(["--privileged"] if privileged else []),
                       script=f"mknod /tmp/lc c {major} {minor} && echo MKNOD-OK; true < /tmp/lc && echo OPEN-OK")
    assert "MKNOD-OK" in out, out
    if privileged:
        assert "OPEN-OK" in out, out
    else:
        assert "OPEN-OK" not in out and EPERM in out, out


# ---------------------------------------------------------------------------------------------
# What the kernel holds for a running container, and that exec'd processes are held too


@pytest.fixture
def names():
    used = []
    yield lambda suffix: used.append(f"t9dev-{suffix}-{os.getpid()}") or used[-1]
    for name in used:
        run_labctl("rm", "-f", name)


def start(name: str) -> dict:
    result = run_labctl("run", "-d", "--name", name, "busybox", "sleep", "60")
    assert result.returncode == 0, result.stderr
    from labctl.containers import store
    return store.find(name).state["cgroup"]


def v2_dir(cgroup: dict) -> str | None:
    return next((cgroup["dirs"][h["mountpoint"]] for h in cgroup["hierarchies"] if h["version"] == 2), None)


def v1_devices_dir(cgroup: dict) -> str | None:
    h = LAYOUT.by_controller.get("devices")
    return cgroup["dirs"].get(str(h.mountpoint)) if h else None


def program_loaded(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True).returncode == 0


def device_programs() -> set[int]:
    """The ids of every BPF_PROG_TYPE_CGROUP_DEVICE program loaded on the host."""
    out = subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out) if p.get("type") == "cgroup_device"}


def test_the_kernel_holds_the_rules_of_a_running_container(names):
    cgroup = start(names("held"))
    if v1_devices_dir(cgroup):   # v1: the controller's own list, rule for rule (the "a" deny emptied it first)
        listed = Path(v1_devices_dir(cgroup), "devices.list").read_text().split("\n")
        assert [line for line in listed if line] == [str(r) for r in devices.RULES[1:]]
    if v2_dir(cgroup):           # v2: one device program on the container's cgroup, and it is ours
        attached = devices.attached_programs(v2_dir(cgroup))
        assert attached == [cgroup["devices"]["bpf_program"]]
        dump = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(attached[0])],
                              capture_output=True, text=True, check=True).stdout
        # the kernel's disassembly of what it loaded is, line for line, the program listing() teaches
        assert [line.split(":", 1)[1].strip() for line in dump.splitlines() if line.strip()] == \
            [insn.text() for insn in devices.instructions(devices.RULES)]
    if not v1_devices_dir(cgroup) and not v2_dir(cgroup):
        pytest.fail("the container's cgroup has neither a v1 devices directory nor a cgroup2 one")


def test_an_execd_process_is_held_by_the_same_rules(names, loop_device):
    major, minor, _ = loop_device
    name = names("exec")
    start(name)
    result = run_labctl("exec", name, "sh", "-c", attack(major, minor))
    assert "MKNOD-OK" in result.stdout and "READ-OK" not in result.stdout, result.stdout + result.stderr
    assert f"/tmp/disk: {EPERM}" in result.stderr


def _gone(cgroup: dict, before: set[int]) -> None:
    """No directory of the cgroup left, and no device program but those loaded before the test."""
    prog_id = cgroup["devices"].get("bpf_program")
    if prog_id is not None:   # freed by the kernel's workqueue a moment after the rmdir
        assert wait_for(lambda: not program_loaded(prog_id)), f"device program {prog_id} still loaded"
    assert wait_for(lambda: device_programs() <= before), device_programs() - before
    assert not any(Path(d).exists() for d in cgroup["dirs"].values())


def test_nothing_is_left_after_rm(names):
    before = device_programs()
    name = names("rm")
    cgroup = start(name)
    if cgroup["devices"].get("bpf_program") is not None:
        assert program_loaded(cgroup["devices"]["bpf_program"])
    assert run_labctl("rm", "-f", name).returncode == 0
    _gone(cgroup, before)


def test_nothing_is_left_after_the_supervisor_is_killed_and_cleanup(names):
    before = device_programs()
    name = names("crash")
    cgroup = start(name)
    from labctl.containers import store
    container = store.find(name)
    os.kill(container.state["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: not store.find(name).supervisor_alive())
    assert run_labctl("cleanup").returncode == 0
    _gone(cgroup, before)


# ---------------------------------------------------------------------------------------------
# Each mechanism alone, on a plain lab cgroup: a host process's mknod(2) and open(2), and their errno

PROBE = r"""
import json, os, stat, sys
major, minor, node = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def attempt(call):
    try:
        call()
        return 0
    except OSError as exc:
        return exc.errno
result = {"mknod": attempt(lambda: os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor)))}
result["open"] = attempt(lambda: os.close(os.open(node, os.O_RDONLY)))
result["null"] = attempt(lambda: os.close(os.open("/dev/null", os.O_RDWR)))
print(json.dumps(result))
"""


def attach_with_bcc(directory: Path) -> int:
    """The C twin of the program (devices.bcc_source), compiled by bcc's clang, attached the same way."""
    bcc = pytest.importorskip("bcc")
    program = bcc.BPF(text=devices.bcc_source(devices.RULES))
    try:
        function = program.load_func("labctl_devices", bcc.BPF.CGROUP_DEVICE)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            bcc.BPF.attach_func(function, fd, bcc.BPFAttachType.CGROUP_DEVICE, 2)   # BPF_F_ALLOW_MULTI
        finally:
            os.close(fd)
        from labctl.kernel import bpf
        return bpf.prog_id(function.fd)
    finally:
        program.cleanup()   # closes bcc's descriptor: the attachment keeps the program


@pytest.mark.parametrize("mechanism", ["v1", "bpf", pytest.param("bcc", marks=pytest.mark.slow)])
def test_each_mechanism_alone_denies_the_open_and_allows_the_rest(mechanism, loop_device, tmp_path):
    major, minor, _ = loop_device
    if not host_can_read(major, minor, tmp_path):
        pytest.skip("the host itself may not open the loop device")
    if mechanism == "v1" and LAYOUT.version_of("devices") != 1:
        pytest.skip("no cgroup v1 devices controller here (pure cgroup v2: the BPF program does its work)")
    if mechanism in ("bpf", "bcc") and LAYOUT.unified is None:
        pytest.skip("no cgroup2 hierarchy here")
    before = device_programs()
    cg = cgroups.Cgroup.create(f"t9dev-{mechanism}-{os.getpid()}")
    try:
        prog_id = None
        if mechanism == "v1":
            devices.write_v1(cg.path("devices"), devices.RULES)
        else:
            attach = devices.attach_program if mechanism == "bpf" else lambda d, rules: attach_with_bcc(d)
            prog_id = attach(cg.dirs[LAYOUT.unified.mountpoint], devices.RULES)
            assert devices.attached_programs(cg.dirs[LAYOUT.unified.mountpoint]) == [prog_id]
        probe = cg.popen([sys.executable, "-c", PROBE, str(major), str(minor), str(tmp_path / "node")],
                         stdout=subprocess.PIPE, text=True)
        result = json.loads(probe.communicate(timeout=30)[0])
        assert result == {"mknod": 0, "open": errno.EPERM, "null": 0}
    finally:
        cg.remove()
    if prog_id is not None:
        assert wait_for(lambda: not program_loaded(prog_id))
    assert wait_for(lambda: device_programs() <= before)
