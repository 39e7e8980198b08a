"""Writes notebooks/04-overlayfs.ipynb (without outputs). Run: python notebooks/make_04_overlayfs.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
    new_markdown_cell("""# Step 4 — OverlayFS: layers, copy-up, whiteouts, shared base layers

An image is a stack of layers. The lab's image store unpacks each layer once (named by its `diff_id`)
and a container's root filesystem is an **overlay**: the image's layers as read-only `lowerdir`s
(top first), plus a per-container `upperdir` that receives every change. This notebook mounts one,
changes it, and reads back what the kernel did; then it measures what sharing layers saves and what
copy-up costs. Everything here calls `labctl.kernel.overlay` and `labctl.images.store`, the same code as
`labctl step 4` and `labctl check 4`. Run it as root."""),
    new_code_cell("""import os, stat, subprocess
from pathlib import Path
from labctl.images import archive as imageimport
from labctl.kernel import overlay
from labctl.demos import overlay as measurements
from labctl import state
from labctl.images.store import ImageStore

store = ImageStore()
for imported in imageimport.import_lab_images(store):   # what `labctl prepare` does; quick when present
    print(imported.reference, imported.manifest_digest[:19], imported.layers, "layer(s)")"""),
    new_markdown_cell("""## The layers of `localhost/layered:latest`
Three layers: busybox, a layer adding `/etc/motd` and `/srv/data/old-*`, and a top layer that deletes
`/etc/motd` (OCI whiteout `.wh.motd`) and replaces `/srv/data` (`.wh..wh..opq`). Unpacking turned those
into OverlayFS's own form: a character device 0/0, and the xattr `trusted.overlay.opaque=y`."""),
    new_code_cell("""layers = store.layer_dirs("localhost/layered:latest")   # bottom first
top = layers[-1]
st = os.lstat(top / "etc/motd")
print("top layer etc/motd: char device?", stat.S_ISCHR(st.st_mode), "rdev", os.major(st.st_rdev), os.minor(st.st_rdev))
print("top layer srv/data opaque xattr:", os.getxattr(top / "srv/data", "trusted.overlay.opaque"))"""),
    new_markdown_cell("## Mount a container root, then write, delete, replace a directory"),
    new_code_cell("""root = overlay.ContainerRoot.create(store, "localhost/layered:latest", f"lab-nb4-{os.getpid()}")
try:
    opts = overlay.mount_options(root.merged)            # from /proc/self/mountinfo
    print("lowerdir (top first):", *[Path(p).name[:12] for p in opts["lowerdir"].split(":")])
    print("upperdir:", opts["upperdir"])
    print("merged /etc/motd exists:", (root.merged / "etc/motd").exists(),
          "| /srv/data:", sorted(os.listdir(root.merged / "srv/data")))

    with open(root.merged / "srv/keep.txt", "a") as f:   # copy-up
        f.write("written in the container\\n")
    os.unlink(root.merged / "etc/passwd")                  # whiteout
    subprocess.run(["rm", "-r", str(root.merged / "home")], check=True)
    (root.merged / "home").mkdir()                         # opaque directory

    for rel in ("srv/keep.txt", "etc/passwd", "home"):
        p = root.upper / rel
        st = os.lstat(p)
        kind = ("whiteout (char 0/0)" if overlay.is_whiteout(p) else
                f"directory, opaque={overlay.is_opaque(p)}" if stat.S_ISDIR(st.st_mode) else
                f"regular file, {st.st_size} bytes (copied up)")
        print(f"upperdir/{rel}: {kind}")
    print("the lower layer's keep.txt is unchanged:", repr((layers[1] / "srv/keep.txt").read_text()))
    snapshot = measurements.stack_snapshot(root)   # what upper, each lower and work hold now
finally:
    root.remove()
print("mounted after remove:", state.is_mountpoint(str(root.merged)))"""),
    new_markdown_cell("""## The stack, layer by layer
One row per directory of that overlay, as the kernel stacked them (the merged view on top, then the
upper directory, then the image's layers top first), one column per path some layer changes. The
copy-up, the whiteout (a character device 0/0) and the opaque directories are hatched and named."""),
    new_code_cell("""from labctl.plots import overlay as overlay_plots
overlay_plots.overlay_stack(snapshot);"""),
    new_markdown_cell("""## Shared base layers: N containers vs N full copies
Start 1..20 container roots of busybox (each writes a 4 KiB file), and measure the disk actually used
(`st_blocks`, each inode once), against copying each root filesystem in full."""),
    new_code_cell("""points = measurements.measure_sharing(store, "localhost/busybox:latest", 20, prefix=f"lab-nb4s-{os.getpid()}")
image_bytes = sum(measurements.disk_usage(d) for d in store.layer_dirs("localhost/busybox:latest"))
print(f"20 containers: {points[-1].shared_bytes/1e6:.2f} MB shared vs {points[-1].copies_bytes/1e6:.2f} MB as copies")
overlay_plots.sharing_figure(points, image_bytes);"""),
    new_markdown_cell("""## The cost of copy-up
The first write to a lower-layer file copies the **whole** file into the upper layer, whatever the
write's size; later writes go straight to the copy."""),
    new_code_cell("""timings = measurements.measure_copy_up([1 << 20, 4 << 20, 16 << 20, 64 << 20, 128 << 20])
for t in timings:
    print(f"{t.size_bytes >> 20:4d} MiB: first write {t.first_write_s*1e3:7.2f} ms, later {t.later_write_s*1e3:.3f} ms")
overlay_plots.copy_up_figure(timings);"""),
    new_markdown_cell("""## What to take away
- An image's layers are stored once and shared: a container costs its upper directory only.
- Writes to lower files pay a copy-up of the whole file once (databases in images: use a volume).
- Deletions are whiteouts, replaced directories are opaque: the lower layers are never modified.

Next: `lab/04-overlayfs/README.md`, then `labctl check 4`."""),
]

write_notebook(cells, "04-overlayfs.ipynb")
