"""Step 4: OverlayFS. The demo, the check, and the reference solution of lab/04-overlayfs/exercise.py."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from labctl.steps import checking
from labctl.images import archive as imageimport
from labctl.demos import overlay as measurements
from labctl.kernel import overlay
from labctl import state, ui
from labctl.errors import CheckFailed, require_root
from labctl.images.store import ImageStore
from labctl.kernel.syscalls import mount

EXPLANATION = """
An image is a stack of **layers**, each a tar of the files it adds or changes. The image store unpacks
each layer once, into a directory named by its `diff_id` (the sha256 of the uncompressed tar), and
every container of every image using that layer shares it. **OverlayFS** joins them:

    mount -t overlay overlay -o lowerdir=TOP:MIDDLE:BOTTOM,upperdir=UPPER,workdir=WORK MERGED

| in the merged view you... | OverlayFS, in the **upperdir** |
|---|---|
| read a file | takes it from the topmost layer that has it; nothing is copied |
| write to a lower file | **copy-up**: copies the whole file into upperdir first, then writes there |
| delete a lower file | leaves a **whiteout**: a character device 0/0 with the file's name |
| replace a lower directory | marks the new directory **opaque**: xattr `trusted.overlay.opaque=y` |

Image layers use the same ideas in tar form: `.wh.NAME` deletes NAME, `.wh..wh..opq` makes its
directory opaque; the lab turns them into the kernel's whiteouts while unpacking. The lower layers are
never written, so N containers of one image cost one copy of the image plus N small upper layers.
"""

DEMO_IMAGE = "localhost/layered:latest"


def _show_upper_entry(upper: Path, rel: str) -> str:
    path = upper / rel
    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode):
        return (f"stat {rel} in upperdir: character device {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
                " → a whiteout")
    if stat.S_ISDIR(st.st_mode):
        opaque = os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False).decode() \
            if overlay.is_opaque(path) else "(none)"
        return f"getxattr({rel}, trusted.overlay.opaque) in upperdir = {opaque!r}"
    return f"stat {rel} in upperdir: regular file, {st.st_size} bytes"


def _show_mount(store: ImageStore, merged: Path, opts: dict[str, str]) -> None:
    """The overlay's directories as /proc/self/mountinfo lists them, each lower one named by its layer."""
    from labctl.images import inspect
    layers = {str(layer.directory): (i, layer) for i, layer in enumerate(inspect.describe(store, DEMO_IMAGE).layers)}
    lowers = opts["lowerdir"].split(":")
    ui.kernel(f"/proc/self/mountinfo: {merged} type overlay, with")
    for n, lower in enumerate(lowers):
        i, layer = layers.get(lower, (None, None))
        ui.kernel(f"  lowerdir {n + 1} of {len(lowers)}{' (top)' if n == 0 else ''}: {lower}"
                  + (f"  = image layer {i + 1}, diff_id {layer.diff_id[:19]}…" if layer else ""))
    ui.kernel(f"  upperdir: {opts.get('upperdir')}")
    ui.kernel(f"  workdir:  {opts.get('workdir')}")
    ui.say(f"  (`labctl image inspect {DEMO_IMAGE}` follows the image's manifest and config to these directories)")


def demo() -> None:
    require_root("the OverlayFS demo")
    store = ImageStore()
    imageimport.import_lab_images(store)
    root = overlay.ContainerRoot.create(store, DEMO_IMAGE, f"lab-demo4-{os.getpid()}")
    try:
        opts = overlay.mount_options(root.merged)
        lowers = opts["lowerdir"].split(":")
        ui.say(f"Mounted {DEMO_IMAGE} ({len(lowers)} layers) as a container root filesystem:")
        _show_mount(store, root.merged, opts)
        top = Path(lowers[0])
        ui.kernel(f"in the image's top layer: {_show_upper_entry(top, 'etc/motd').replace('upperdir', 'the layer')}"
                  f"; {_show_upper_entry(top, 'srv/data').replace('upperdir', 'the layer')}")
        ui.kernel(f"merged view: /etc/motd exists? {(root.merged / 'etc/motd').exists()}; "
                  f"/srv/data holds {sorted(os.listdir(root.merged / 'srv/data'))}")

        ui.say("1. Append a line to /srv/keep.txt, a file of a lower layer → copy-up:")
        with open(root.merged / "srv/keep.txt", "a") as f:
            f.write("written in the container\n")
        ui.kernel(_show_upper_entry(root.upper, "srv/keep.txt"))
        ui.say("2. Delete /etc/passwd, a file of the bottom layer → whiteout:")
        os.unlink(root.merged / "etc/passwd")
        ui.kernel(_show_upper_entry(root.upper, "etc/passwd"))
        ui.say("3. Replace the directory /home (rm -r, mkdir) → opaque directory:")
        subprocess.run(["rm", "-r", str(root.merged / "home")], check=True)
        (root.merged / "home").mkdir()
        ui.kernel(_show_upper_entry(root.upper, "home"))
        ui.kernel(f"upperdir now holds: {sorted(str(p.relative_to(root.upper)) for p in root.upper.rglob('*'))}")
        snapshot = measurements.stack_snapshot(root)
        for path, entries in snapshot["lowers"]:
            ui.kernel(f"lowerdir {path}: {len(entries)} entries")
    finally:
        root.remove()
    from labctl.plots.overlay import overlay_stack
    from labctl.steps import save_figure
    save_figure(overlay_stack(snapshot), "04-overlay-stack")

    ui.say("4. Five containers of one image share its layers; each adds only its upper layer:")
    points = measurements.measure_sharing(store, "localhost/busybox:latest", 5, prefix=f"lab-demo4s-{os.getpid()}")
    rows = [(p.containers, f"{p.shared_bytes / 1e6:.2f} MB", f"{p.copies_bytes / 1e6:.2f} MB") for p in points]
    ui.table(("containers", "layers shared (overlay)", "full copies"), rows,
             title="Disk used (st_blocks of every file, each inode once)")
    ui.ok("every overlay was unmounted and its upper and work directories removed")


# ---------------------------------------------------------------------------------------------
# The check: the exercise mounts an overlay of given layers; the kernel's mount table and what a
# write and a delete do to the upper directory decide.


def check(command: list[str]) -> list[str]:
    """Judge `command MERGED UPPER WORK LAYER...` (layers bottom first, as in an image)."""
    verified: list[str] = []
    store = ImageStore()
    imageimport.import_lab_images(store)
    layers = [str(p) for p in store.layer_dirs(DEMO_IMAGE)]
    base = state.new_tmpdir("check4-")
    path_rec = state.record_path(str(base), "step 4 check")
    merged, upper, work = base / "merged", base / "upper", base / "work"
    for d in (merged, upper, work):
        d.mkdir()
    mount_rec = state.record_mount(str(merged), "step 4 check: the exercise's overlay")
    try:
        checking.run_to_end(command + [str(merged), str(upper), str(work)] + layers, timeout=30)
        opts = overlay.mount_options(merged)
        if opts is None:
            said = [line for line in checking.kernel_log() if line.startswith("overlayfs:")]
            raise CheckFailed(f"nothing of type overlay is mounted on {merged}"
                              + (f"; the kernel said why: {said[-1]!r}" if said else ""), _mount_fix(said))
        verified.append(f"an overlay is mounted on {merged} (/proc/self/mountinfo)")
        want_lower = ":".join(reversed(layers))
        checking.expect(opts.get("lowerdir") == want_lower,
                        f"lowerdir is {opts.get('lowerdir')!r}; expected the {len(layers)} layers top first",
                        "the exercise gets the layers bottom first, as an image lists them: overlay wants the "
                        "top layer first in lowerdir (TODO 1)", verified,
                        f"lowerdir lists the {len(layers)} layers top first")
        checking.expect(opts.get("upperdir") == str(upper) and opts.get("workdir") == str(work),
                        f"upperdir={opts.get('upperdir')}, workdir={opts.get('workdir')}; expected {upper} and {work}",
                        "add ,upperdir=UPPER,workdir=WORK to the options: without them the mount is read-only",
                        verified, "upperdir and workdir are the ones given")
        checking.expect(not (merged / "etc/motd").exists() and sorted(os.listdir(merged / "srv/data")) == ["new.txt"],
                        "the merged view still shows what the top layer deletes (/etc/motd, /srv/data/old-*)",
                        "lowerdir order decides which layer wins: top first", verified,
                        "the top layer's whiteout and opaque directory hide what they should")

        with open(merged / "srv/keep.txt", "a") as f:
            f.write("written by the check\n")
        copied = upper / "srv/keep.txt"
        checking.expect(copied.is_file() and copied.read_text().endswith("written by the check\n"),
                        "a write to /srv/keep.txt did not land in the upper directory",
                        "is upperdir the directory you were given?", verified,
                        "a write to a lower file was copied up into upperdir")
        checking.expect(Path(layers[1], "srv/keep.txt").read_text() == "kept from the lower layer\n",
                        "the write changed the lower layer itself", "lower layers must come from lowerdir only",
                        verified, "the lower layer is unchanged")
        os.unlink(merged / "bin/busybox")
        checking.expect(overlay.is_whiteout(upper / "bin/busybox"),
                        "deleting /bin/busybox left no whiteout in the upper directory",
                        "check the upperdir option", verified,
                        "a delete left a whiteout (character device 0/0) in upperdir")
    finally:
        state.unmount(str(merged))
        mount_rec.forget()
        state.remove_path(str(base))
        path_rec.forget()
    return verified


#: What OverlayFS logs when it refuses a mount (fs/overlayfs/params.c, super.c), and what to change.
MOUNT_FIXES = (
    ("missing 'workdir'", "add workdir=WORK to the options: with an upperdir, OverlayFS needs its scratch "
                          "directory (TODO 1)"),
    ("missing 'upperdir'", "add upperdir=UPPER to the options: a workdir needs an upperdir (TODO 1)"),
    ("missing 'lowerdir'", "the options need lowerdir=TOP:...:BOTTOM (TODO 1)"),
    ("failed to resolve", "a directory named in the options does not exist: look at the path the kernel "
                          "quotes (a typo, or a ':' or ',' out of place) (TODO 1)"),
    ("same mount", "workdir must be on the same filesystem as upperdir: use the WORK you were given"),
    ("separate subtrees", "workdir and upperdir must be two separate directories, neither inside the other"),
    ("bad mount option", "an option name is misspelt: lowerdir=, upperdir=, workdir= (TODO 1)"),
)


def _mount_fix(said: list[str]) -> str:
    """The fix for the kernel's last word on the mount, or the general one when it said nothing."""
    for needle, fix in MOUNT_FIXES:
        if said and needle in said[-1]:
            return fix
    if said:
        return "change what the kernel's message names in the option string (TODO 1)"
    return "build the option string (TODO 1) and call mount(\"overlay\", MERGED, \"overlay\", 0, options) (TODO 2)"


def reference(argv: list[str]) -> int:
    """Reference solution: `MERGED UPPER WORK LAYER...` (layers bottom first), same contract as the exercise."""
    if len(argv) < 4:
        print("usage: python -m labctl.steps.s04_overlayfs MERGED UPPER WORK LAYER [LAYER...]", file=sys.stderr)
        return 2
    merged, upper, work, layers = argv[0], argv[1], argv[2], argv[3:]
    options = f"lowerdir={':'.join(reversed(layers))},upperdir={upper},workdir={work}"
    mount("overlay", merged, "overlay", 0, options)
    print(f"mounted overlay on {merged}: {options}")
    return 0


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
