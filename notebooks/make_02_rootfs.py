"""Writes notebooks/02-rootfs.ipynb (without outputs). Run: python notebooks/make_02_rootfs.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
    new_markdown_cell("""# Step 2 — the root filesystem

`chroot(2)` changes one process's root directory and can be escaped; `pivot_root(2)` swaps the root
mount of a mount namespace, and after the old root is detached nothing leads back to the host.
This notebook uses the same library calls as `labctl step 2` and counts what each side can see."""),
    new_code_cell("""%matplotlib inline
import os
from labctl.images import labimage
from labctl.kernel import namespaces, rootfs
from labctl import state
from labctl.plots.namespaces import visibility
root = labimage.ensure_busybox_rootfs()
print("lab image:", root)"""),
    new_markdown_cell("""First the escape from a plain chroot: a file that exists only on the host is read from inside."""),
    new_code_cell("""probe_dir = state.new_tmpdir("nb-probe-")
probe = probe_dir / "host-only.txt"
probe.write_text("this file is on the host\\n")
print("escape from chroot read:", rootfs.chroot_escape(str(root), str(probe)))"""),
    new_markdown_cell("""Now a container with pivot_root, /proc, a minimal /dev and a read-only /sys."""),
    new_code_cell("""box = namespaces.spawn(["sleep", "120"], hostname="rootfs-nb", setup=lambda: rootfs.setup_container_root(root))
for mount_point, fstype, options in rootfs.mount_points_of(box.pid):
    print(f"{mount_point:10} {fstype:8} {options}")
print("escape inside the pivoted root read:",
      repr(namespaces.run_in_namespaces_of(box.pid, lambda: rootfs.chroot_escape("/", str(probe)) or "", kinds=("mnt",))))"""),
    new_code_cell("""host_procs = sum(1 for e in os.listdir("/proc") if e.isdigit())
box_procs = len(rootfs.processes_seen_by(box.pid))
host_mounts = len(rootfs.mount_points_of(os.getpid()))
box_mounts = len(rootfs.mount_points_of(box.pid))
host_dev = len(os.listdir("/dev"))
box_dev = len(os.listdir(f"/proc/{box.pid}/root/dev"))
visibility({"host": [host_procs, host_mounts, host_dev], "container": [box_procs, box_mounts, box_dev]},
           ["processes in /proc", "mounts", "entries in /dev"],
           "What the host and the container can see", "count (log scale)");"""),
    new_markdown_cell("""## The mount tree, before and after pivot_root
One more container, whose setup copies its own `/proc/self/mountinfo` just before `pivot_root`; then
we read it again from the host once the container runs. Each mount has an id and the id of the mount
it sits on: before, the image's root is a bind mount deep in a copy of the host's tree; after, the same
mount (same id) is `/`, and the host's mounts are gone with the detached old root."""),
    new_code_cell("""from labctl.demos import mounts
from labctl.plots.mounts import mount_trees
before, after, root_path = mounts.around_pivot_root(root)
print(f"before pivot_root: {len(before)} mounts; after: {len(after)}")
mount_trees(before, after, root_path);"""),
    new_code_cell("""box.kill()
import shutil; shutil.rmtree(probe_dir)
print("container stopped, exit status", box.returncode)"""),
]

write_notebook(cells, "02-rootfs.ipynb")
