"""Step 4: OverlayFS root filesystems, judged by the merged view, mountinfo, and what lands in upperdir.

The oracle for the merged view is umoci (an independent implementation of OCI layer semantics, written
in Go): `umoci unpack` applies the same layers by hand; OverlayFS must show the same tree.
"""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import run_labctl, student_lab
from layerbuild import entry as e, layer, rich_image
from labctl.images import archive as imageimport, ocilayout
from labctl.demos import overlay as measurements
from labctl.kernel import overlay
from labctl import state
from labctl.errors import LabError
from labctl.images.store import ImageStore, remove_image


pytestmark = pytest.mark.root


def tree(root: Path) -> dict[str, tuple]:
    """Every path below root: (type, permission bits, uid, gid, content sha256 or link target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            else:
                what = None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)),
                                             st.st_uid, st.st_gid, what)
    return out


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "store")


@pytest.fixture
def roots():
    """Container roots made by a test; removed after it even if it fails."""
    made: list[overlay.ContainerRoot] = []
    yield made
    for root in made:
        root.remove()


def _import(store: ImageStore, tmp_path: Path, images: dict) -> Path:
    layout = ocilayout.write_layout(tmp_path / "layout", images)
    for name in images:
        imageimport.import_layout(store, layout, name)
    return layout


@pytest.mark.parametrize("name", ["layered", "rich"])
def test_merged_view_equals_umoci_unpack(store, tmp_path, roots, name):
    image = ocilayout.whiteout_image() if name == "layered" else rich_image()
    layout = _import(store, tmp_path, {name: image})
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{name}", str(bundle)], check=True,
                   capture_output=True)
    root = overlay.ContainerRoot.create(store, f"localhost/{name}:latest", f"lab-t4-umoci-{name}")
    roots.append(root)
    ours, theirs = tree(root.merged), tree(bundle / "rootfs")
    assert ours.keys() == theirs.keys(), (sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys()))
    assert {k: v for k, v in ours.items() if v != theirs[k]} == {}
    assert len(ours) > 10


def test_write_copies_up_delete_whites_out_replace_makes_opaque(store, tmp_path, roots):
    _import(store, tmp_path, {"layered": ocilayout.whiteout_image()})
    root = overlay.ContainerRoot.create(store, "localhost/layered:latest", "lab-t4-cow")
    roots.append(root)
    lower_keep = store.layer_path(store.image_layers(root.manifest_digest)[1][1]) / "srv/keep.txt"
    opts = overlay.mount_options(root.merged)
    assert opts["upperdir"] == str(root.upper) and opts["workdir"] == str(root.work)
    assert opts["lowerdir"].split(":") == [str(p) for p in reversed(store.layer_dirs("localhost/layered:latest"))]
    assert os.listdir(root.upper) == []

    with open(root.merged / "srv/keep.txt", "a") as f:
        f.write("appended in the container\n")
    assert (root.upper / "srv/keep.txt").read_text().endswith("appended in the container\n")
    assert lower_keep.read_text() == "kept from the lower layer\n"   # the lower layer is untouched

    os.unlink(root.merged / "etc/passwd")
    st = os.lstat(root.upper / "etc/passwd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert overlay.is_whiteout(root.upper / "etc/passwd")
    assert not (root.merged / "etc/passwd").exists()

    subprocess.run(["rm", "-r", str(root.merged / "home")], check=True)
    (root.merged / "home").mkdir()
    (root.merged / "home/fresh").write_text("new\n")
    assert os.getxattr(root.upper / "home", "trusted.overlay.opaque") == b"y"
    assert os.listdir(root.merged / "home") == ["fresh"]


def test_containers_share_lower_layers_and_add_only_their_upper(store, tmp_path, roots):
    _import(store, tmp_path, {"busybox": ocilayout.busybox_image()})
    for i in range(4):
        roots.append(overlay.ContainerRoot.create(store, "localhost/busybox:latest", f"lab-t4-share-{i}"))
    lowerdirs = {overlay.mount_options(r.merged)["lowerdir"] for r in roots}
    assert len(lowerdirs) == 1  # one set of lower directories for all four
    layer_bytes = measurements.disk_usage(store.root / "layers")
    for r in roots:
        (r.merged / "tmp/note").write_bytes(b"x" * 10000)
    uppers = [measurements.disk_usage(r.upper) for r in roots]
    assert all(u < 64 * 1024 for u in uppers), uppers
    assert layer_bytes > 1_000_000  # busybox itself, on disk once
    assert measurements.disk_usage(store.root / "layers") == layer_bytes


def test_remove_unmounts_and_deletes_and_cleanup_does_too(store, tmp_path):
    _import(store, tmp_path, {"busybox": ocilayout.busybox_image()})
    root = overlay.ContainerRoot.create(store, "localhost/busybox:latest", "lab-t4-remove")
    assert state.is_mountpoint(str(root.merged))
    kinds = {r.kind for r in state.records() if str(root.path) in str(r.data)}
    assert kinds == {"mount", "path"}
    root.remove()
    assert not state.is_mountpoint(str(root.merged)) and not root.path.exists()
    assert not [r for r in state.records() if str(root.path) in str(r.data)]

    crashed = overlay.ContainerRoot.create(store, "localhost/busybox:latest", "lab-t4-crash")
    assert state.cleanup() == []   # as `labctl cleanup` would after a SIGKILL
    assert not state.is_mountpoint(str(crashed.merged)) and not crashed.path.exists()


def test_rmi_refuses_while_a_container_uses_the_image_and_gc_keeps_its_layers(store, tmp_path, roots):
    _import(store, tmp_path, {"layered": ocilayout.whiteout_image()})
    root = overlay.ContainerRoot.create(store, "localhost/layered:latest", "lab-t4-rmi")
    roots.append(root)
    with pytest.raises(LabError, match="used by container"):
        remove_image(store, "localhost/layered:latest")
    remove_image(store, "localhost/layered:latest", force=True)
    assert store.refs() == {}
    assert all(store.has_layer(d) for d in root.diff_ids)   # still mounted, still there
    assert (root.merged / "srv/data/new.txt").exists()
    root.remove()
    roots.clear()
    store.garbage_collect()
    assert os.listdir(store.root / "layers") == [] and os.listdir(store.root / "blobs/sha256") == []


def test_many_layers_fall_back_to_relative_lowerdirs(store, tmp_path, roots):
    count = 60   # 60 absolute lowerdirs under the state dir pass the one-page limit
    image = ocilayout.Image([layer([e(f"f{i:02d}", data=f"{i}\n".encode())]) for i in range(count)])
    _import(store, tmp_path, {"tall": image})
    absolute = ":".join(str(p) for p in store.layer_dirs("localhost/tall:latest"))
    assert len(absolute) > os.sysconf("SC_PAGE_SIZE")
    root = overlay.ContainerRoot.create(store, "localhost/tall:latest", "lab-t4-tall")
    roots.append(root)
    lowers = overlay.mount_options(root.merged)["lowerdir"].split(":")
    assert len(lowers) == count and not lowers[0].startswith("/")
    assert sorted(os.listdir(root.merged)) == [f"f{i:02d}" for i in range(count)]


def test_step_4_demo_runs():
    result = run_labctl("step", "4", "--no-explain")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trusted.overlay.opaque" in result.stdout and "0/0" in result.stdout


def test_check_fails_on_skeleton_with_a_hint():
    result = run_labctl("check", "4")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TODO" in result.stdout


def test_check_passes_on_reference():
    result = run_labctl("check", "4", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


def test_cli_import_images_rmi(tmp_path):
    layout = ocilayout.write_layout(tmp_path / "layout", {"layered": ocilayout.whiteout_image()})
    result = run_labctl("import", f"{layout}:layered", "--name", "localhost/t4-cli:v1")
    assert result.returncode == 0, result.stderr
    assert "localhost/t4-cli:v1" in run_labctl("images", "-q").stdout
    assert ImageStore().refs()["localhost/t4-cli:v1"].startswith("sha256:")
    result = run_labctl("rmi", "localhost/t4-cli:v1")
    assert result.returncode == 0, result.stderr
    assert "localhost/t4-cli:v1" not in ImageStore().refs()
    bad = run_labctl("import", str(tmp_path / "nothing-here"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_check_passes_on_a_completed_exercise(tmp_path):
    """The student's step 4 part (the reference part, taken as `labctl lab take 4` does)."""
    result = run_labctl("check", "4", env=student_lab(tmp_path, take=[4]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_catches_layers_in_image_order(tmp_path):
    env = student_lab(tmp_path, take=[4], edits={"overlay.py": [("reversed(layers)", "layers")]})
    result = run_labctl("check", "4", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "top first" in result.stdout


def _overlay_on(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) and line.split(" - ")[1].startswith("overlay ") for line in f)


@pytest.mark.parametrize("take", [[], [4]], ids=["skeleton", "done"])
def test_the_exercise_says_mounted_only_when_the_kernel_shows_the_mount(tmp_path, take):
    """The driver prints "mounted overlay" only when /proc/self/mountinfo has the overlay: not for the
    skeleton, which mounts nothing (it says so and exits 1)."""
    env = student_lab(tmp_path, take=take)
    merged, upper, work, low1, low2 = (tmp_path / d for d in ("m", "u", "w", "l1", "l2"))
    for d in (merged, upper, work, low1, low2):
        d.mkdir()
    (low1 / "bottom.txt").write_text("1")
    (low2 / "top.txt").write_text("2")
    try:
        result = run_labctl("exercise", "4", "--", str(merged), str(upper), str(work), str(low1), str(low2),
                            env=env)
        mounted = _overlay_on(merged)
    finally:
        if _overlay_on(merged):
            subprocess.run(["umount", str(merged)], check=True)
    assert mounted == bool(take)
    assert ("mounted overlay on" in result.stdout) == mounted, result.stdout + result.stderr
    assert result.returncode == (0 if mounted else 1), result.stdout + result.stderr
    if not mounted:
        assert "no overlay is mounted on" in result.stderr


def test_measurements_and_plots(store, tmp_path):
    from labctl.plots import overlay as plots
    _import(store, tmp_path, {"busybox": ocilayout.busybox_image()})
    points = measurements.measure_sharing(store, "localhost/busybox:latest", 3, prefix="lab-t4-plot")
    assert [p.containers for p in points] == [1, 2, 3]
    assert points[-1].copies_bytes > 2.5 * points[-1].shared_bytes   # three copies vs one + three uppers
    timings = measurements.measure_copy_up([1 << 20, 8 << 20], later_writes=3)
    assert all(t.first_write_s > t.later_write_s for t in timings)
    for fig in (plots.sharing_figure(points, 2_000_000), plots.copy_up_figure(timings)):
        ax = fig.axes[0]
        assert ax.get_title() and "(MB)" in ax.get_ylabel() + ax.get_xlabel() or "(ms)" in ax.get_ylabel()
        assert ax.get_xlabel() and ax.get_ylabel()
    assert not list(overlay.overlays_dir().glob("lab-t4-plot*"))


def test_image_inspect_follows_manifest_and_config_to_the_layer_directories(tmp_path):
    """What `labctl image inspect` prints is what the store's files say: the manifest blob hashes to
    the digest shown, its config entry is the config shown, and each layer directory shown is the
    unpacked diff_id the config lists, in the same order."""
    import json
    import re
    layout = ocilayout.write_layout(tmp_path / "layout", {"layered": ocilayout.whiteout_image()})
    assert run_labctl("import", f"{layout}:layered", "--name", "localhost/t4-inspect:v1").returncode == 0
    try:
        store = ImageStore()
        store.layer_dirs("localhost/t4-inspect:v1")       # unpacked, as a container would have them
        result = run_labctl("image", "inspect", "localhost/t4-inspect:v1", env=dict(os.environ, COLUMNS="400"))
        assert result.returncode == 0, result.stdout + result.stderr
        manifest_digest = re.search(r"manifest \(RepoDigest\)\s+(sha256:\w+)", result.stdout).group(1)
        blob = store.root / "blobs" / "sha256" / manifest_digest[7:]
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == manifest_digest
        manifest = json.loads(blob.read_bytes())
        config_digest = re.search(r"config \(Id\)\s+(sha256:\w+)", result.stdout).group(1)
        assert config_digest == manifest["config"]["digest"]
        config = json.loads((store.root / "blobs" / "sha256" / config_digest[7:]).read_bytes())
        dirs = re.findall(r"dir\s+(/\S+)", result.stdout)
        assert [Path(d).name for d in dirs] == [d[7:] for d in config["rootfs"]["diff_ids"]]
        assert all(Path(d).is_dir() for d in dirs)
        assert re.findall(r"blob\s+(sha256:\w+)", result.stdout) == [l["digest"] for l in manifest["layers"]]
    finally:
        remove_image(ImageStore(), "localhost/t4-inspect:v1")


def test_step_4_demo_prints_each_layer_directory_whole():
    """The demo shows the overlay's lower directories as mountinfo has them: full paths, top first,
    each an unpacked layer of the image (the README's Try it takes them from there)."""
    import re
    result = run_labctl("step", "4", "--no-explain", env=dict(os.environ, COLUMNS="400"))
    assert result.returncode == 0, result.stdout + result.stderr
    shown = re.findall(r"lowerdir (\d) of 3(?: \(top\))?: (/\S+)", result.stdout)
    layers = [str(p) for p in ImageStore().layer_dirs("localhost/layered:latest")]
    assert [path for _, path in shown] == list(reversed(layers))
