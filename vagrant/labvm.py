"""The classroom VM under QEMU, for the VM test tier (tests/test_vm.py) and for a look by hand.

The image comes from vagrant/build-image.sh (cached). Each boot gets a throw-away qcow2 overlay on top of
it, so the cached image is never written. QEMU emulates the CPU in software (TCG): these machines' /dev/kvm
cannot boot a stock Debian kernel, and a guest under TCG runs code 10-20x slower than the host.

    python3 vagrant/labvm.py                    # boot, copy this tree in, provision, open a shell
    python3 vagrant/labvm.py -- uname -r        # ...or run one command as root and power off

The VM lives exactly as long as the `GuestVM` context: QEMU's PID is recorded, QEMU is killed by that PID
on the way out (pass, fail or Ctrl-C), and dies with its parent too (PR_SET_PDEATHSIG); the overlay disk
and the temporary directory are removed.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILDER = REPO / "vagrant" / "build-image.sh"

#: The test files (or single tests, file::name) that depend on the kernel, in the order the guest runs
#: them: cgroups first, since the cgroup v2 code paths are why this tier exists. Files that do not exist
#: (yet) are left out.
GUEST_TEST_FILES = ["tests/test_cgroups.py", "tests/test_namespaces.py", "tests/test_rootfs.py",
                    "tests/test_overlay.py", "tests/test_tracing.py", "tests/test_container.py",
                    "tests/test_run_speed.py", "tests/test_security_userns.py",
                    "tests/test_security_devices.py", "tests/test_oci_runtime.py",
                    "tests/test_oci_cleanup.py",
                    # step 13 on cgroup v2 and kernel 6.1's VXLAN: containers on an overlay on three hosts,
                    # in their hosts' cgroup prefixes; `cluster down` leaves no cgroup, link or namespace
                    "tests/test_cluster_containers.py::test_cluster_down_leaves_no_container_link_or_cgroup"]
#: Slow tests stay on the host: the guest is 10-20x slower.
GUEST_MARKERS = "not slow and not vm"
#: What is not copied into the guest (the guest keeps the venv it was built with).
COPY_EXCLUDES = ["./.venv", "./.git", "__pycache__", ".pytest_cache", "*.egg-info", "./vagrant/.cache",
                 ".ipynb_checkpoints"]

QEMU = "qemu-system-x86_64"
ACCEL = os.environ.get("LABCTL_VM_ACCEL", "tcg,thread=multi")
NICE = int(os.environ.get("LABCTL_VM_NICE", "0"))
# The guest must not spend its scarce CPU on services the tests do not use. labctl-jupyter.service runs:
# tests/test_jupyter.py opens it in a browser, and its first start is where the VM's token is made.
KERNEL_ARGS = ("root=LABEL=labroot rw console=ttyS0 net.ifnames=0 systemd.mask=docker-registry.service")


class VMError(RuntimeError):
    """The VM could not be built, booted or reached."""


def guest_test_args(repo: Path = REPO) -> list[str]:
    """The pytest arguments for the guest: $LABCTL_VM_TESTS, else the kernel test files that exist."""
    if os.environ.get("LABCTL_VM_TESTS"):
        return shlex.split(os.environ["LABCTL_VM_TESTS"])
    files = [f for f in GUEST_TEST_FILES if (repo / f.partition("::")[0]).exists()]
    if not files:   # fallback: everything fast, minus the notebooks
        files = ["tests/", "--ignore-glob=tests/test_notebook*"]
    return [*files, "-m", GUEST_MARKERS]


def build_image() -> Path:
    """Build the lab image (or reuse the cached one): its directory. Installs QEMU and debootstrap first."""
    proc = subprocess.run([str(BUILDER)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise VMError(f"{BUILDER.name} failed with status {proc.returncode} (its output is above)")
    return Path(proc.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the QEMU child before exec: prctl(PR_SET_PDEATHSIG, SIGKILL), so QEMU never outlives us."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    if NICE:
        os.nice(NICE)


class GuestVM:
    """One boot of the lab image: `with GuestVM(image_dir) as vm: vm.run("uname -r")`."""

    def __init__(self, image: Path, memory_mb: int = 2048, cpus: int = 2):
        self.image = Path(image)
        self.memory_mb, self.cpus = memory_mb, cpus
        self.tmp: Path | None = None
        self.qemu: subprocess.Popen | None = None
        self.port = 0
        self.boot_seconds = 0.0

    # -- lifetime ------------------------------------------------------------------------------------

    def __enter__(self) -> "GuestVM":
        try:
            self.start()
            self.wait_for_ssh()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if not shutil.which(QEMU):
            raise VMError(f"{QEMU} not found (fix: apt-get install qemu-system-x86, or run {BUILDER})")
        self.tmp = Path(tempfile.mkdtemp(prefix="labctl-vm-"))
        overlay = self.tmp / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                        "-b", str(self.image / "disk.raw"), str(overlay)], check=True)
        self.port = _free_port()
        cmd = [QEMU, "-accel", ACCEL, "-cpu", "max", "-m", str(self.memory_mb), "-smp", str(self.cpus),
               "-kernel", str(self.image / "vmlinuz"), "-initrd", str(self.image / "initrd.img"),
               "-append", KERNEL_ARGS,
               "-drive", f"file={overlay},if=virtio,format=qcow2,discard=unmap",
               "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
               "-device", "virtio-net-pci,netdev=net0",
               "-display", "none", "-monitor", "none", "-no-reboot",
               "-serial", f"file:{self.tmp / 'console.log'}"]
        self.started_at = time.monotonic()
        self.qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.tmp / "qemu.stderr", "w"),
                                     preexec_fn=_die_with_parent)
        (self.tmp / "qemu.pid").write_text(f"{self.qemu.pid}\n")

    def stop(self) -> None:
        """Kill QEMU by its recorded PID and remove the overlay disk: nothing of this boot is left."""
        if self.qemu is not None and self.qemu.poll() is None:
            os.kill(self.qemu.pid, signal.SIGTERM)
            try:
                self.qemu.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.qemu.pid, signal.SIGKILL)
                self.qemu.wait()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def console_tail(self, lines: int = 30) -> str:
        try:
            text = (self.tmp / "console.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_ssh(self, timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.qemu.poll() is not None:
                stderr = (self.tmp / "qemu.stderr").read_text(errors="replace")
                raise VMError(f"QEMU exited with status {self.qemu.returncode}: {stderr.strip()}\n"
                              f"console:\n{self.console_tail()}")
            probe = subprocess.run(self._ssh_argv("true", connect_timeout=10), capture_output=True,
                                   stdin=subprocess.DEVNULL, timeout=60)
            if probe.returncode == 0:
                self.boot_seconds = time.monotonic() - self.started_at
                return
            time.sleep(3)
        raise VMError(f"no ssh from the guest after {timeout:.0f} s; console:\n{self.console_tail()}")

    # -- talking to the guest ------------------------------------------------------------------------

    def _ssh_argv(self, command: str, connect_timeout: int = 20) -> list[str]:
        return ["ssh", "-i", str(self.image / "ssh" / "id_ed25519"), "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8",
                "vagrant@127.0.0.1", command]

    def run(self, script: str, timeout: float = 600, check: bool = False, stream=None,
            stdin=None) -> subprocess.CompletedProcess:
        """Run a shell script as root in the guest. `stream(line)` sees each output line as it comes."""
        argv = self._ssh_argv("sudo -n bash -c " + shlex.quote(script))
        proc = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            for line in proc.stdout:
                lines.append(line)
                if stream:
                    stream(line.rstrip("\n"))
                if time.monotonic() > deadline:
                    break
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                lines.append(f"\n[labvm: killed after {timeout:.0f} s]\n")
                proc.returncode = 124
        if proc.returncode in (124, 255):   # killed, or ssh itself failed: what the guest's kernel said last
            lines.append(f"\n[labvm: the guest's serial console, last lines]\n{self.console_tail()}\n")
        result = subprocess.CompletedProcess(argv, proc.returncode, "".join(lines), "")
        if check and result.returncode != 0:
            raise VMError(f"in the guest, `{script}` failed ({result.returncode}):\n{result.stdout[-3000:]}")
        return result

    def copy_tree(self, repo: Path = REPO) -> None:
        """Replace /vagrant in the guest with this working tree (tar over ssh), keeping the guest's venv."""
        excludes = [f"--exclude={pattern}" for pattern in COPY_EXCLUDES]
        self._send_tar(["-C", str(repo), *excludes, "."],
                       "find /vagrant -mindepth 1 -maxdepth 1 ! -name .venv ! -name '*.egg-info' "
                       "-exec rm -rf {} + && tar -C /vagrant -xf - --no-same-owner")

    def copy_files(self, src: Path, names: list[str], guest_dir: str) -> None:
        """Copy these files (paths relative to src) into guest_dir, under the same relative paths."""
        self._send_tar(["-C", str(src), *names],
                       f"mkdir -p {shlex.quote(guest_dir)} && tar -C {shlex.quote(guest_dir)} -xf - --no-same-owner")

    def _send_tar(self, tar_args: list[str], unpack: str) -> None:
        tar = subprocess.Popen(["tar", "-cf", "-", *tar_args], stdout=subprocess.PIPE)
        try:
            self.run(unpack, stdin=tar.stdout, timeout=600, check=True)
        finally:
            tar.stdout.close()
            tar.wait()

    def fetch_dir(self, guest_dir: str, host_dir: Path) -> list[Path]:
        """Copy the files of a guest directory (screenshots, say) into `host_dir` (tar over ssh): their
        paths on the host. Nothing when the guest directory does not exist."""
        argv = self._ssh_argv(f"sudo -n tar -C {shlex.quote(guest_dir)} -cf - . 2>/dev/null || true")
        archive = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=300).stdout
        if not archive:
            return []
        host_dir = Path(host_dir)
        host_dir.mkdir(parents=True, exist_ok=True)
        untar = subprocess.run(["tar", "-C", str(host_dir), "--no-same-owner", "-xvf", "-"], input=archive,
                               capture_output=True, timeout=300)
        if untar.returncode != 0:
            raise VMError(f"could not unpack {guest_dir} from the guest: {untar.stderr.decode(errors='replace')}")
        names = untar.stdout.decode().split()
        return [host_dir / name for name in names if not name.endswith("/")]

    def provision(self) -> subprocess.CompletedProcess:
        """provision.sh with the copied tree: quick, since the venv was built into the image."""
        return self.run("/vagrant/vagrant/provision.sh", timeout=900, check=True)


def copy_back(vm: GuestVM, guest_dir: str, dest: Path) -> list[Path]:
    """Copy the files of `guest_dir` in the guest into `dest` on the host (tar over ssh); returns them.
    notebooks/execute_in_vm.py uses it to bring the executed notebooks home."""
    dest.mkdir(parents=True, exist_ok=True)
    argv = vm._ssh_argv("sudo -n tar -C " + shlex.quote(guest_dir) + " -cf - .")
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) as ssh:
        subprocess.run(["tar", "-C", str(dest), "-xf", "-", "--no-same-owner"], stdin=ssh.stdout, check=True)
    if ssh.returncode != 0:
        raise VMError(f"copying {guest_dir} out of the guest failed (ssh/tar status {ssh.returncode})")
    return sorted(p for p in dest.rglob("*") if p.is_file())


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    image = build_image()
    with GuestVM(image) as vm:
        print(f"labvm: guest up in {vm.boot_seconds:.0f} s (ssh on 127.0.0.1:{vm.port}, QEMU pid {vm.qemu.pid})")
        vm.copy_tree()
        vm.provision()
        if command:
            script = command[0] if len(command) == 1 else shlex.join(command)
            return vm.run(script, timeout=3600, stream=print).returncode
        interactive = vm._ssh_argv("cd /vagrant && sudo -s")
        interactive.insert(1, "-t")
        return subprocess.run(interactive).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
