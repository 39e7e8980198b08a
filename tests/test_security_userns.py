"""Step 9, user namespaces: `labctl run --userns remap`, judged by /proc/PID/{uid_map,gid_map,status},
/proc/PID/ns/user, the owners of files on the host (os.stat), mountinfo and the errno of real attempts.

The range is the `labctl` entry provisioning put in /etc/subuid and /etc/subgid (labctl:100000:65536);
the bad-input tests replace /etc/subuid with a bind mount in a private mount namespace of their own,
so nothing in labctl reads another path for the tests' sake.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl import state
from labctl.security.userns import SIZE, subordinate_range

pytestmark = pytest.mark.root


def _start() -> int:
    try:
        return subordinate_range("/etc/subuid")
    except Exception as exc:   # not provisioned: every remap test would fail for that one reason
        pytest.skip(f"no labctl range in /etc/subuid ({exc}); run vagrant/provision.sh")


@pytest.fixture(scope="module")
def start():
    return _start()


def labctl_ok(*args, timeout=60):
    result = run_labctl(*args, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def record(name):
    from labctl.containers import store
    return store.find(name)


def status_ids(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return [int(x) for x in line.split()[1:]]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def mounts_below(path) -> list[str]:
    prefix = str(path)
    with open("/proc/self/mountinfo") as f:
        return [p for p in (line.split()[4] for line in f) if p == prefix or p.startswith(prefix + "/")]


@pytest.fixture
def names():
    used = []
    yield lambda suffix: used.append(f"t9u-{suffix}-{os.getpid()}") or used[-1]
    for name in used:
        run_labctl("rm", "-f", name)


def test_root_inside_is_the_range_start_on_the_host_and_the_image_still_belongs_to_root(names, start):
    name = names("maps")
    labctl_ok("run", "-d", "--userns", "remap", "--name", name, "busybox", "sleep", "60")
    c = record(name)
    for kind in ("uid_map", "gid_map"):   # the kernel's maps, read on the host
        assert Path(f"/proc/{c.pid}/{kind}").read_text().split() == ["0", str(start), str(SIZE)]
    assert status_ids(c.pid, "Uid") == [start] * 4 and status_ids(c.pid, "Gid") == [start] * 4
    assert os.readlink(f"/proc/{c.pid}/ns/user") != os.readlink("/proc/self/ns/user")
    # the image's files: owned by 0 on the disk (no copy, no chown), by the range's start through the
    # container's root as the host sees it, and by root inside
    from labctl.containers.images import open_image
    from labctl.images.store import ImageStore
    layers = ImageStore().ensure_layers(open_image("busybox").digest)
    assert any((layer / "bin/busybox").exists() for layer in layers)
    assert all(os.stat(layer / "bin/busybox").st_uid == 0 for layer in layers if (layer / "bin/busybox").exists())
    assert os.stat(f"/proc/{c.pid}/root/bin/busybox").st_uid == start
    out = labctl_ok("exec", name, "sh", "-c", "id -u; id -g; stat -c %u:%g /bin/busybox /")
    assert out.split() == ["0", "0", "0:0", "0:0"]
    # nothing is left mounted but the overlay: the idmapped layer mounts were detached, their dir removed
    overlay_dir = Path(c.state["root"]).parent
    assert mounts_below(overlay_dir) == [c.state["root"]]
    assert not (overlay_dir / "idmapped").exists()
    # inspect shows the maps: the record's and the kernel's now
    shown = json.loads(labctl_ok("inspect", name))[0]
    assert shown["spec"]["security"]["uid_map"] == [{"inside": 0, "outside": start, "count": SIZE}]
    assert shown["idmaps"]["uid_map"] == [" ".join(Path(f"/proc/{c.pid}/uid_map").read_text().split())]
    labctl_ok("rm", "-f", name)
    assert mounts_below(overlay_dir) == [] and not overlay_dir.exists()


def test_without_remap_root_is_the_hosts_root(names):
    name = names("host")
    labctl_ok("run", "-d", "--name", name, "busybox", "sleep", "60")
    c = record(name)
    assert os.readlink(f"/proc/{c.pid}/ns/user") == os.readlink("/proc/self/ns/user")
    assert status_ids(c.pid, "Uid") == [0] * 4


def test_exec_joins_the_containers_user_namespace(names, start):
    name = names("exec")
    labctl_ok("run", "-d", "--userns", "remap", "--name", name, "busybox", "sleep", "60")
    c = record(name)
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "exec", name, "sleep", "1009"])
    try:
        assert wait_for(lambda: _in_cgroup(c, "sleep\x001009\x00"))
        joined = _in_cgroup(c, "sleep\x001009\x00")
        for kind in ("user", "mnt", "pid", "net", "uts", "ipc"):
            assert os.readlink(f"/proc/{joined}/ns/{kind}") == os.readlink(f"/proc/{c.pid}/ns/{kind}"), kind
        assert status_ids(joined, "Uid") == [start] * 4
    finally:
        proc.kill()
        proc.wait()


def _in_cgroup(container, cmdline):
    def cmd(p):
        try:
            return Path(f"/proc/{p}/cmdline").read_text()
        except OSError:
            return ""
    return next((int(p) for d in container.state["cgroup"]["dirs"].values()
                 for p in Path(d, "cgroup.procs").read_text().split() if cmd(p) == cmdline), None)


def test_files_root_inside_creates_on_volumes_belong_to_the_range_on_the_host(tmp_path, start):
    volume = f"t9uvol-{os.getpid()}"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    try:
        labctl_ok("run", "--rm", "--userns", "remap", "-v", f"{volume}:/data", "-v", f"{shared}:/shared",
                  "busybox", "sh", "-c", "touch /data/made /shared/made")
        from labctl.containers.volumes import volume_path
        made = os.stat(volume_path(volume) / "made")
        assert (made.st_uid, made.st_gid) == (start, start)
        assert os.stat(volume_path(volume)).st_uid == start   # the volume was made for this root
        assert (os.stat(shared / "made").st_uid, os.stat(shared / "made").st_gid) == (start, start)
    finally:
        run_labctl("volume", "rm", volume)


def test_a_host_root_only_file_bind_mounted_in_is_closed_to_root_inside(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host root only\n")
    secret.chmod(0o600)
    os.chown(secret, 0, 0)
    # without remap, root inside is the host's root: it reads it (CAP_DAC_OVERRIDE would do, it owns it)
    out = labctl_ok("run", "--rm", "-v", f"{secret}:/secret", "busybox", "cat", "/secret")
    assert out == "host root only\n"
    result = run_labctl("run", "--rm", "--userns", "remap", "-v", f"{secret}:/secret", "busybox", "sh", "-c",
                        "stat -c %u /secret; cat /secret")
    assert result.returncode == 1
    assert result.stdout.split() == ["65534"]                     # unmapped owner: the overflow uid
    assert os.strerror(13) in result.stderr and "host root only" not in result.stdout   # EACCES


def test_sigkill_of_the_supervisor_then_cleanup_leaves_nothing(start):
    result = run_labctl("run", "-d", "--userns", "remap", "busybox", "sleep", "60")
    assert result.returncode == 0, result.stderr
    c = record(result.stdout.strip())
    overlay_dir = Path(c.state["root"]).parent
    os.kill(c.state["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: not c.supervisor_alive())
    labctl_ok("cleanup")
    assert wait_for(lambda: not Path(f"/proc/{c.pid}").exists() or
                    Path(f"/proc/{c.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    assert mounts_below(overlay_dir) == [] and not overlay_dir.exists()


def test_a_labctl_killed_while_the_layers_are_idmapped_leaves_nothing_cleanup_misses(tmp_path, start):
    """SIGKILL at the worst moment, in the middle of idmapped_layers: then `labctl cleanup`."""
    into = state.subdir("tmp") / f"t9u-idmap-{os.getpid()}"
    script = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        from labctl.containers.images import open_image
        from labctl.images.store import ImageStore
        from labctl.kernel.overlay import idmapped_layers
        from labctl.security.userns import IdMap
        from labctl.security.userns import SIZE, new_user_namespace
        maps = [IdMap(0, int(sys.argv[2]), SIZE)]
        fd = new_user_namespace(maps, maps)
        layers = ImageStore().ensure_layers(open_image("busybox").digest)
        with idmapped_layers(layers, Path(sys.argv[1]), fd):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(into), str(start)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert mounts_below(into), "the kill came too late: nothing was mounted"
    assert os.stat(Path(mounts_below(into)[0]) / "bin/busybox").st_uid == start   # an idmapped mount
    labctl_ok("cleanup")
    assert mounts_below(into) == [] and not into.exists()


@pytest.mark.parametrize("content, says", [("someone:100000:65536\n", "has no range for labctl"),
                                           ("labctl:100000:1000\n", "is too small")])
def test_a_missing_or_small_range_is_one_line_with_the_fix_and_nothing_is_made(tmp_path, content, says):
    subuid = tmp_path / "subuid"
    subuid.write_text(content)
    before = run_labctl("ps", "-a", "-q").stdout
    # a private mount namespace where /etc/subuid is our file (unshare's default propagation: private)
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", f'mount --bind "$1" /etc/subuid && exec "$2" -m labctl run --rm '
         f'--userns remap busybox true', "sh", str(subuid), sys.executable],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "/etc/subuid" in lines[0] and "labctl:100000:65536" in lines[0]
    assert run_labctl("ps", "-a", "-q").stdout == before


def test_another_user_inside_is_the_same_offset_into_the_range(names, start):
    name = names("user")
    labctl_ok("run", "-d", "--userns", "remap", "-u", "1000:1000", "--name", name, "busybox", "sleep", "60")
    pid = record(name).pid
    assert status_ids(pid, "Uid") == [start + 1000] * 4 and status_ids(pid, "Gid") == [start + 1000] * 4


def test_doctor_names_a_missing_range_and_its_fix(tmp_path):
    subuid = tmp_path / "subuid"
    subuid.write_text("")
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind "$1" /etc/subuid && exec "$2" -m labctl doctor --json',
         "sh", str(subuid), sys.executable], capture_output=True, text=True, timeout=120)
    row = next(r for r in json.loads(result.stdout) if r["requirement"] == "userns remap")
    assert row["status"] == "warn" and "labctl:100000:65536" in row["fix"] and "/etc/subuid" in row["fix"]


def test_what_pid1_creates_belongs_to_root_inside(names, start):
    """--userns remap: PID 1 makes mount points, tmpfs roots and the working directory as the host's root,
    before it joins the user namespace (runtime/ociinit.py, ocimounts.make_target); each must belong to
    root inside, uid `start` on the host, or root inside could not write there. Judged by stat(2) from the
    host, through /proc/PID/root, and by a write inside."""
    name = names("made")
    labctl_ok("run", "-d", "--name", name, "--userns", "remap", "-w", "/made/here", "--tmpfs", "/scratch",
              "-v", "/tmp:/new/mount/point", "busybox", "sleep", "60")
    pid = record(name).pid
    for inside in ("/made/here", "/made", "/scratch", "/dev", "/new/mount", "/new"):
        seen = os.stat(f"/proc/{pid}/root{inside}")
        assert (seen.st_uid, seen.st_gid) == (start, start), inside
    labctl_ok("exec", name, "sh", "-c", "touch /made/here/f /scratch/f /dev/f")
