"""Step 2: the root filesystem, judged by /proc/<pid>/root, /proc/<pid>/mountinfo and the container's /proc."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from helpers import run_labctl, student_lab
from labctl.images import labimage
from labctl.kernel import namespaces, rootfs
from labctl import state
from labctl.errors import LabError

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def image_root():
    return labimage.ensure_busybox_rootfs()


@pytest.fixture
def host_probe():
    d = state.new_tmpdir("test-probe-")
    probe = d / "secret"
    probe.write_text("host only\n")
    yield probe
    shutil.rmtree(d)


def test_busybox_rootfs_has_applets_and_users(image_root):
    assert os.path.islink(image_root / "bin/sh")
    assert (image_root / "bin" / os.readlink(image_root / "bin/sh")).resolve() == image_root / "bin/busybox"
    assert "root:x:0:0" in (image_root / "etc/passwd").read_text()
    assert "root:x:0:" in (image_root / "etc/group").read_text()


def test_chroot_escape_reaches_the_host(image_root, host_probe):
    assert rootfs.chroot_escape(str(image_root), str(host_probe)) == "host only\n"


def test_pivot_root_hides_host_mounts_and_processes(image_root, host_probe):
    with namespaces.spawn(["sleep", "30"], setup=lambda: rootfs.setup_container_root(image_root)) as proc:
        mounts = {m: (t, o) for m, t, o in rootfs.mount_points_of(proc.pid)}
        assert set(mounts) == {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/tmp"}
        assert mounts["/proc"][0] == "proc"
        assert mounts["/sys"][1].startswith("ro")
        assert mounts["/"][1].startswith("ro")            # the shared image stays unchanged
        assert rootfs.processes_seen_by(proc.pid) == [(1, "sleep")]
        own = os.stat(image_root / "bin/busybox")
        seen = os.stat(f"/proc/{proc.pid}/root/bin/busybox")
        assert (own.st_dev, own.st_ino) == (seen.st_dev, seen.st_ino)
        escaped = namespaces.run_in_namespaces_of(
            proc.pid, lambda: rootfs.chroot_escape("/", str(host_probe)) or "", kinds=("mnt",))
        assert escaped == ""


def test_minimal_dev_has_exactly_the_devices(image_root):
    with namespaces.spawn(["sleep", "30"], setup=lambda: rootfs.setup_container_root(image_root)) as proc:
        dev = Path(f"/proc/{proc.pid}/root/dev")
        for name, (major, minor) in rootfs.DEVICES.items():
            st = os.stat(dev / name)
            assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor)
            assert stat.S_IMODE(st.st_mode) == 0o666
        chars = {p.name for p in dev.iterdir() if stat.S_ISCHR(os.lstat(p).st_mode)}
        assert chars == set(rootfs.DEVICES)


def test_no_mount_leaks_to_the_host(image_root):
    def host_mounts():
        with open("/proc/self/mountinfo") as f:
            return {line.split()[4] for line in f}
    before = host_mounts()
    with namespaces.spawn(["sleep", "30"], setup=lambda: rootfs.setup_container_root(image_root)):
        assert host_mounts() == before


def test_missing_rootfs_is_one_clear_error(tmp_path):
    with pytest.raises(LabError, match="does not look like a root filesystem"):
        namespaces.spawn(["true"], setup=lambda: rootfs.setup_container_root(tmp_path / "nope"))


def test_check_fails_on_skeleton_with_a_hint(tmp_path):
    """Step 1 done, step 2's part still the skeleton."""
    result = run_labctl("check", "2", env=student_lab(tmp_path, take=[1]))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is not" in result.stdout and "pivot_root" in result.stdout


def test_check_passes_on_reference():
    result = run_labctl("check", "2", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_passes_on_a_completed_exercise(tmp_path):
    """The student's parts of steps 1 and 2 (the reference parts, taken as `labctl lab take N` does)."""
    result = run_labctl("check", "2", env=student_lab(tmp_path, take=[1, 2]))
    assert result.returncode == 0, result.stdout + result.stderr


CHROOT = [('    os.chdir(rootfs)\n    pivot_root(".", ".")\n    umount2(".", MNT_DETACH)\n',
           '    os.chroot(rootfs)\n')]


def test_check_catches_a_chroot_only_solution(tmp_path):
    result = run_labctl("check", "2", env=student_lab(tmp_path, take=[1, 2], edits={"rootfs.py": CHROOT}))
    assert result.returncode == 1
    assert "chroot" in result.stdout


def test_the_runtime_refuses_to_mount_in_the_hosts_mount_namespace(tmp_path):
    """Step 2 done, step 1 not: the given spawn() stops before rootfs.py's mounts reach the host."""
    def mount_table():
        with open("/proc/self/mountinfo") as f:
            return sorted(line.split()[4] for line in f)
    before = mount_table()
    result = run_labctl("check", "2", env=student_lab(tmp_path, take=[2]))
    assert result.returncode == 1 and "still in the host's mount namespace" in result.stdout, result.stdout
    assert mount_table() == before


def test_step_2_demo_shows_escape_then_none():
    result = run_labctl("step", "2", "--no-explain")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "escaped" in result.stdout and "finds no host file" in result.stdout
