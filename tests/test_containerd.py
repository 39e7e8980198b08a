"""Step 10 against containerd: Debian's containerd (1.6), started here on a private socket, root and
state directory, runs the lab's busybox image with `ctr` through its runc shim (io.containerd.runc.v2)
pointed at labctl's runtime (`ctr run --runc-binary labctl-runtime`): the seed chapter's
containerd -> shim -> runc picture with labctl in runc's place. Judged by what comes back through
containerd (the output, `ctr task ls`) and by the kernel (PID 1's namespaces); nothing may be left."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]
NAMESPACE = "labctl-test"


#: containerd 1.6's shims make their sockets (s/) and ctr its FIFOs (fifo/) here, whatever the config says.
SHIM_DIR = Path("/run/containerd")


@pytest.fixture
def containerd(tmp_path):
    """containerd on tmp_path/containerd.sock, its CRI plugin off; stopped by its PID at the end, its
    mounts and the runtime's state removed. Yields the `ctr` argv prefix."""
    if not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("containerd is not installed (apt-get install containerd)")
    base = tmp_path / "ctrd"
    base.mkdir()
    sock = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(f'''version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
''')
    shim_dir_existed = SHIM_DIR.exists()
    log = open(base / "containerd.log", "w")
    daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    ctr = ["ctr", "--address", str(sock), "--namespace", NAMESPACE]
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(ctr + ["version"], capture_output=True).returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, (base / "containerd.log").read_text()[-2000:]
            time.sleep(0.1)
        yield ctr, base
    finally:
        for task in subprocess.run(ctr + ["task", "ls", "-q"], capture_output=True, text=True).stdout.split():
            subprocess.run(ctr + ["task", "kill", "-s", "SIGKILL", task], capture_output=True)
            time.sleep(0.3)
            subprocess.run(ctr + ["task", "delete", "-f", task], capture_output=True)
        for name in subprocess.run(ctr + ["container", "ls", "-q"], capture_output=True, text=True).stdout.split():
            subprocess.run(ctr + ["container", "delete", name], capture_output=True)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if str(base) in line.split()[4]]
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        _remove_namespace_cgroups()
        shutil.rmtree(base, ignore_errors=True)
        if not shim_dir_existed:
            _remove_empty_dirs(SHIM_DIR)


def _remove_empty_dirs(top: Path) -> None:
    """`top` and the directories below it, if they hold nothing else (deepest first)."""
    for path in sorted((p for p in top.glob("**/*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


def _remove_namespace_cgroups() -> None:
    """containerd's cgroup for the namespace, where it makes one (one per namespace, empty by now)."""
    for path in Path("/sys/fs/cgroup").glob(f"*/{NAMESPACE}"):
        with contextlib.suppress(OSError):
            path.rmdir()


def _import_busybox(ctr: list[str], base: Path) -> str:
    from labctl.images.ocilayout import busybox_image, write_layout
    layout = write_layout(base / "layout", {"latest": busybox_image()})
    tar = base / "busybox.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(tar), "."], check=True)
    done = subprocess.run(ctr + ["image", "import", "--base-name", "localhost/labbusybox", str(tar)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return "localhost/labbusybox:latest"


def labctl_runtime() -> str:
    path = Path(sys.executable).with_name("labctl-runtime")
    assert path.exists(), "pip install -e . makes the labctl-runtime console script"
    return str(path)


def test_containerd_runs_a_container_through_labctl_runtime(containerd, tmp_path):
    ctr, base = containerd
    image = _import_busybox(ctr, base)
    runtime = ["--runc-binary", labctl_runtime(), "--runc-root", str(base / "runtime-root")]
    done = subprocess.run(ctr + ["run", "--rm", *runtime, image, "oci-echo", "sh", "-c",
                                 "echo hello; readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt; echo $$"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] == "hello" and lines[-1] == "1", done.stdout        # PID 1 of its own PID namespace
    assert lines[1] != os.readlink("/proc/self/ns/pid") and lines[2] != os.readlink("/proc/self/ns/mnt")

    started = subprocess.run(ctr + ["run", "-d", *runtime, image, "oci-sleep", "sleep", "60"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    tasks = subprocess.run(ctr + ["task", "ls"], capture_output=True, text=True).stdout
    row = next(line.split() for line in tasks.splitlines() if line.startswith("oci-sleep"))
    pid, status = int(row[1]), row[2]
    assert status == "RUNNING"
    assert open(f"/proc/{pid}/cmdline").read().split("\0")[:2] == ["sleep", "60"]
    for kind in ("pid", "mnt", "uts", "ipc", "net"):
        assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
    assert subprocess.run(ctr + ["task", "kill", "-s", "SIGKILL", "oci-sleep"], capture_output=True).returncode == 0
    deadline = time.monotonic() + 10
    while "RUNNING" in subprocess.run(ctr + ["task", "ls"], capture_output=True, text=True).stdout and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert subprocess.run(ctr + ["task", "delete", "oci-sleep"], capture_output=True).returncode == 0
    assert subprocess.run(ctr + ["container", "delete", "oci-sleep"], capture_output=True).returncode == 0
    assert not os.path.exists(f"/proc/{pid}")
    assert subprocess.run(ctr + ["task", "ls", "-q"], capture_output=True, text=True).stdout.strip() == ""
    left = list((base / "runtime-root").glob(f"{NAMESPACE}/*")) if (base / "runtime-root").exists() else []
    assert left == [], "the runtime kept state for a deleted container"


def _through_a_terminal(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run argv with a pty as its stdin, stdout and stderr (ctr -t insists on one); its exit status and
    what it wrote, read from the master."""
    import pty
    import select
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:   # EIO: every holder of the slave has closed it
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(10), out.decode(errors="replace")


def test_containerd_exec_with_a_terminal_through_labctl_runtime(containerd):
    """`ctr task exec -t`: containerd's shim runs `labctl-runtime exec --detach --tty --console-socket`
    and copies the master it receives to ctr's terminal; the process inside has a terminal as stdin."""
    ctr, base = containerd
    image = _import_busybox(ctr, base)
    runtime = ["--runc-binary", labctl_runtime(), "--runc-root", str(base / "runtime-root")]
    started = subprocess.run(ctr + ["run", "-d", *runtime, image, "oci-tty", "sleep", "60"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    code, said = _through_a_terminal(ctr + ["task", "exec", "-t", "--exec-id", "tty1", "oci-tty", "sh", "-c",
                                            "tty; readlink /proc/self/fd/0; exit 4"])
    assert code == 4, said
    assert said.split()[:2] == ["/dev/pts/0", "/dev/pts/0"], said
