"""Step 12: `labctl build`, judged by the image it stores (read back by umoci and by a real overlay
mount of its layers), by `labctl run` of it, and by the host left clean after a failure."""
from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl.errors import LabError

pytestmark = pytest.mark.root


def build(tmp_path: Path, dockerfile: str, tag: str = "t12:1", **kw):
    from labctl.build.builder import build as do_build
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return do_build(tmp_path / "Dockerfile", tmp_path, tag, **kw)


@contextlib.contextmanager
def image_root(reference: str):
    """The image's root filesystem as the kernel shows it: its layers from the store, overlay-mounted
    read-only (top first), unmounted after."""
    from labctl import state
    from labctl.images.store import ImageStore
    from labctl.kernel.overlay import mount_overlay
    lowers = ImageStore().layer_dirs(reference)
    target = state.new_tmpdir("t12-root-")
    try:
        mount_overlay(list(reversed(lowers)), target)
        try:
            yield target
        finally:
            state.unmount(str(target))
    finally:
        os.rmdir(target)


def tree(root: Path) -> dict[str, tuple]:
    """Every entry below root: type, mode, owner, and the bytes or the link target (not mtimes)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = os.lstat(path)
            what = os.readlink(path) if stat.S_ISLNK(st.st_mode) else \
                path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                                st.st_gid, what)
    return out


def labctl_run(image: str, *command: str) -> str:
    result = run_labctl("run", "--rm", image, *command)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


STAMPED = """FROM busybox
RUN cat /proc/sys/kernel/random/uuid > /first
COPY data.txt /data.txt
RUN cat /proc/sys/kernel/random/uuid > /second
ENV WHO=lab
CMD ["cat", "/data.txt"]
"""


def test_a_rebuild_with_no_change_runs_no_RUN_and_gives_the_same_digest(tmp_path):
    (tmp_path / "data.txt").write_text("one\n")
    first = build(tmp_path, STAMPED)
    with image_root(first.image) as root:
        stamps = (root / "first").read_text(), (root / "second").read_text()
    again = build(tmp_path, STAMPED)
    assert again.digest == first.digest
    assert [s.cached for s in again.steps] == [False] + [True] * 5
    with image_root(again.image) as root:   # a RUN run again would have read a new random uuid
        assert ((root / "first").read_text(), (root / "second").read_text()) == stamps
    fresh = build(tmp_path, STAMPED, no_cache=True)   # the RUNs do run without the cache: the check can fail
    assert fresh.digest != first.digest and not any(s.cached for s in fresh.steps)


def test_a_changed_COPY_source_reruns_exactly_the_steps_from_that_COPY_on(tmp_path):
    (tmp_path / "data.txt").write_text("one\n")
    first = build(tmp_path, STAMPED)
    with image_root(first.image) as root:
        before = (root / "first").read_text(), (root / "second").read_text()
    (tmp_path / "data.txt").write_text("two\n")
    second = build(tmp_path, STAMPED)
    assert [s.cached for s in second.steps] == [False, True, False, False, False, False]
    with image_root(second.image) as root:
        assert (root / "first").read_text() == before[0]     # from the cache: the same layer
        assert (root / "second").read_text() != before[1]    # ran again
        assert (root / "data.txt").read_text() == "two\n"
    assert labctl_run(second.image) == "two\n"


def test_identical_builds_give_one_digest_even_without_the_cache(tmp_path):
    dockerfile = "FROM busybox\nRUN mkdir -p /srv/x && echo hi > /srv/x/f && rm /etc/os-release\nCMD [\"ls\"]\n"
    one = build(tmp_path, dockerfile, "t12-repro:1", no_cache=True)
    two = build(tmp_path, dockerfile, "t12-repro:2", no_cache=True)
    assert one.digest == two.digest


WHITEOUTS = """FROM busybox
RUN mkdir -p /srv/data && echo old > /srv/data/old.txt && echo keep > /srv/keep.txt
RUN rm /etc/os-release && rm -rf /srv/data && mkdir /srv/data && echo new > /srv/data/new.txt
RUN ln -s /srv/keep.txt /srv/link && chmod 0751 /srv
"""


def test_the_built_root_equals_umoci_unpack_of_its_OCI_layout_and_what_run_sees(tmp_path):
    from labctl.images.store import ImageStore
    result = build(tmp_path, WHITEOUTS, "t12-wh:1")
    store = ImageStore()
    layer = store.read_blob(result.steps[2].layer)
    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))).getnames()
    assert "etc/.wh.os-release" in names and "srv/data/.wh..wh..opq" in names   # the kernel's marks, translated
    layout = tmp_path / "layout"
    saved = run_labctl("save", "--format", "oci", "-o", str(layout), result.image)   # the layout, as a user exports it
    assert saved.returncode == 0, saved.stderr
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1", str(bundle)], check=True, capture_output=True)
    with image_root(result.image) as root:
        ours = tree(root)
    theirs = tree(bundle / "rootfs")
    assert "etc/os-release" not in theirs and "srv/data/old.txt" not in theirs and "srv/data/new.txt" in theirs
    assert ours == theirs
    seen = labctl_run(result.image, "sh", "-c", "ls /srv/data; cat /srv/link; test -e /etc/os-release || echo gone")
    assert seen.split() == ["new.txt", "keep", "gone"]


def test_labctl_save_writes_what_skopeo_reads_and_never_overwrites(tmp_path):
    import json
    result = build(tmp_path, "FROM busybox\nRUN echo saved > /saved.txt\n", "t12-save:1")
    layout, archive = tmp_path / "oci", tmp_path / "image.tar"
    assert run_labctl("save", "--format", "oci", "-o", str(layout), result.image).returncode == 0
    assert run_labctl("save", "-o", str(archive), "t12-save:1").returncode == 0   # as `labctl run` names it
    seen = [json.loads(subprocess.run(["skopeo", "inspect", "--raw", where], check=True, capture_output=True,
                                      text=True).stdout) for where in (f"oci:{layout}:1", f"docker-archive:{archive}")]
    stored = json.loads(subprocess.run(["skopeo", "inspect", "--config", "--raw", f"oci:{layout}:1"], check=True,
                                       capture_output=True, text=True).stdout)
    from labctl.images.store import ImageStore
    manifest = ImageStore().manifest(result.image)
    assert seen[0] == manifest                                    # the OCI layout: the stored manifest, byte for byte
    assert seen[1]["config"]["digest"] == manifest["config"]["digest"]   # docker-archive: the same image ID
    assert len(stored["rootfs"]["diff_ids"]) == len(manifest["layers"])
    again = run_labctl("save", "-o", str(archive), result.image)
    assert again.returncode != 0 and "exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []   # no temporary left


def test_a_Dockerfile_error_names_its_line(tmp_path):
    with pytest.raises(LabError, match=r"^Dockerfile:3: unknown instruction FOO"):
        build(tmp_path, "FROM busybox\n# comment\nFOO bar\n")
    with pytest.raises(LabError, match=r"^Dockerfile:2: ENV"):
        build(tmp_path, "FROM busybox\nENV LONELY\n")
    result = run_labctl("build", "-t", "t12-bad:1", str(tmp_path))
    assert result.returncode == 2 and "Dockerfile:2:" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("source", ["../outside.txt", "/../outside.txt", "sub/../../outside.txt", "link-out"])
def test_COPY_from_outside_the_context_is_refused(tmp_path, source):
    from labctl.images.store import ImageStore
    context = tmp_path / "ctx"
    context.mkdir()
    (tmp_path / "outside.txt").write_text("secret\n")
    (context / "link-out").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(LabError, match="outside|leading out"):
        build(context, f"FROM busybox\nCOPY {source} /x\n", "t12-out:1")
    assert "localhost/t12-out:1" not in ImageStore().refs()


def test_COPY_never_writes_through_a_symlink_it_copied(tmp_path):
    context, victim = tmp_path / "ctx", tmp_path / "victim"
    (context / "one").mkdir(parents=True)
    (context / "two" / "d").mkdir(parents=True)
    victim.mkdir()
    (context / "one" / "d").symlink_to(victim)             # data in the image: a link to /…/victim
    (context / "two" / "d" / "planted").write_text("x\n")  # would land in the host's victim/ if followed
    with pytest.raises(LabError, match=r"^Dockerfile:2: COPY would write through the symlink /x/d"):
        build(context, "FROM busybox\nCOPY one two /x/\n", "t12-link:1")
    assert not (victim / "planted").exists()


def test_a_failing_RUN_stops_with_its_exit_code_and_leaves_nothing(tmp_path):
    from labctl import state
    from labctl.containers import store
    before = set(os.listdir(state.subdir("overlay")))
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo before\nRUN echo doomed > /f; exit 7\nRUN echo after\n")
    result = run_labctl("build", "-t", "t12-fail:1", str(tmp_path))
    assert result.returncode == 7, result.stdout + result.stderr
    assert "before" in result.stdout and "Step 4/4" not in result.stdout
    assert set(os.listdir(state.subdir("overlay"))) == before        # no upper dir, no mount point
    assert not [c for c in store.all_containers() if c.spec.image.startswith("sha256:")]
    assert not list((state.state_dir() / "images" / "incoming").iterdir())   # no half layer


def test_dockerignore_build_args_chown_and_ADD_of_a_tar(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.sh").write_text("echo main\n")
    (tmp_path / "app" / "deep" / "logs").mkdir(parents=True)
    (tmp_path / "app" / "deep" / "logs" / "x.log").write_text("log\n")
    (tmp_path / "app" / "keep.log").write_text("kept\n")
    (tmp_path / "secret.key").write_text("k\n")
    (tmp_path / ".dockerignore").write_text("# not for the image\n*.key\n**/*.log\n!app/keep.log\n")
    with tarfile.open(tmp_path / "bundle.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("pkg/readme")
        info.size, info.uid, info.gid = 3, 0, 0
        tar.addfile(info, io.BytesIO(b"hi\n"))
    result = build(tmp_path, "FROM busybox\nARG WHO=nobody\nARG UNSET\nCOPY --chown=student . /ctx/\n"
                             "COPY --chown=1000:0 app/main.sh /bin/\nADD bundle.tar.gz /opt/\n"
                             "RUN echo \"$WHO${UNSET:-!}\" > /who\n",
                   "t12-misc:1", build_args={"WHO": "student"})
    with image_root(result.image) as root:
        copied = sorted(str(p.relative_to(root / "ctx")) for p in (root / "ctx").rglob("*"))
        assert copied == [".dockerignore", "Dockerfile", "app", "app/deep", "app/deep/logs", "app/keep.log", "app/main.sh",
                          "bundle.tar.gz"]
        st = os.stat(root / "ctx" / "app" / "main.sh")
        assert (st.st_uid, st.st_gid) == (1000, 1000)                     # --chown=student: its uid, as gid too
        st = os.stat(root / "bin" / "main.sh")
        assert (st.st_uid, st.st_gid) == (1000, 0)
        assert (root / "opt" / "pkg" / "readme").read_text() == "hi\n"   # unpacked, not copied
        assert (root / "who").read_text() == "student!\n"


def test_the_cache_lives_only_as_long_as_its_layers(tmp_path):
    (tmp_path / "data.txt").write_text("one\n")
    own = STAMPED.replace("FROM busybox\n", "FROM busybox\nENV TEST=gc\n")   # layers no other test's image has
    first = build(tmp_path, own, "t12-gc:1")
    assert all(s.cached for s in build(tmp_path, own, "t12-gc:1").steps[1:])
    result = run_labctl("rmi", first.image)   # the reference goes, then every blob nothing references
    assert result.returncode == 0, result.stdout + result.stderr
    again = build(tmp_path, own, "t12-gc:1")
    # ENV on busybox: its one layer is still stored (localhost/busybox has it), so the entry holds;
    # the RUN's layer was collected, so from there on everything runs again
    assert [s.cached for s in again.steps[:3]] == [False, True, False]
    assert not any(s.cached for s in again.steps[3:]) and again.digest != first.digest


def test_ctrl_c_during_a_RUN_removes_its_container(tmp_path):
    import signal
    import sys
    from labctl import state
    before = set(os.listdir(state.subdir("overlay")))
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo started; sleep 60\n")
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "build", "-t", "t12-int:1", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "started":   # PID 1 of the RUN's container is running
            break
    assert len(set(os.listdir(state.subdir("overlay"))) - before) == 1
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert set(os.listdir(state.subdir("overlay"))) == before


def test_FROM_an_image_not_in_the_store_pulls_it(tmp_path, tmp_path_factory):
    from labctl.images import labregistry
    from labctl.images.store import ImageStore
    from test_registry import _serve
    server = _serve(tmp_path_factory, "build-from")
    try:
        labregistry.seed(server.host, labregistry.write_lab_layout(tmp_path / "layout"), ["layered"])
        reference = f"{server.host}/lab/layered:latest"
        assert reference not in ImageStore().refs()
        result = build(tmp_path, f"FROM {reference}\nRUN ls /srv/data > /seen\n", "t12-pulled:1")
        assert reference in ImageStore().refs()                           # pulled, as `labctl pull` does
        with image_root(result.image) as root:
            assert (root / "seen").read_text() == "new.txt\n"             # the pulled layers, whiteouts applied
    finally:
        server.stop()
