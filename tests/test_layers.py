"""Layer unpacking: malicious layers are refused and leave nothing; good ones keep every bit of metadata.

Each malicious layer is aimed at a sentinel directory beside the store. The tests prove, by walking
the filesystem, that the sentinel is untouched, that nothing outside the store's tmp/ changed, and that
tmp/ and layers/ are empty after the rejection.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import layerbuild
from layerbuild import entry as e, tar_of
from labctl.images import archive as imageimport, ocilayout
from labctl.images.store import ImageStore, sha256_digest
from labctl.images.layers import LayerRejected


pytestmark = pytest.mark.root


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every path below root with its type, mode, owner, size, mtime and content hash."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            if skip and (p == skip or skip in p.parents):
                continue
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, digest, target)
    return out


@pytest.fixture
def arena(tmp_path):
    """A store and, beside it, a sentinel directory that a malicious layer would like to write into."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "file").write_text("precious\n")
    store = ImageStore(tmp_path / "store")
    return tmp_path, store, sentinel


def store_layer(store: ImageStore, tar: bytes, compress: bool = True) -> tuple[str, str]:
    blob = gzip.compress(tar, mtime=0) if compress else tar
    return store.put_blob(blob), sha256_digest(tar)


def assert_rejected_leaving_nothing(arena, tar: bytes, match: str):
    base, store, sentinel = arena
    blob, diff_id = store_layer(store, tar)
    before = snapshot(base, skip=store.root / "tmp")
    with pytest.raises(LayerRejected, match=match) as info:
        store.ensure_layer(blob, diff_id)
    assert snapshot(base, skip=store.root / "tmp") == before, "something outside the temp area changed"
    assert list((store.root / "tmp").iterdir()) == [], "the rejected layer's temporary tree was left"
    assert not store.has_layer(diff_id)
    assert sorted(os.listdir(sentinel)) == ["file"] and (sentinel / "file").read_text() == "precious\n"
    assert "(fix:" in str(info.value)  # the CLI prints cause and fix on one line
    return info.value


def test_absolute_path_is_rejected(arena):
    _, _, sentinel = arena
    assert_rejected_leaving_nothing(arena, tar_of([e(str(sentinel / "pwned"), data=b"x")]), "absolute path")


@pytest.mark.parametrize("name", ["../../../sentinel/pwned", "a/../../../../sentinel/pwned", "./../x"])
def test_path_traversal_is_rejected(arena, name):
    assert_rejected_leaving_nothing(arena, tar_of([e("a", "dir"), e(name, data=b"x")]), "path traversal")


def test_symlink_escaping_the_layer_is_rejected(arena):
    tar = tar_of([e("d", "dir"), e("d/up", "symlink", link="../../../../sentinel")])
    assert_rejected_leaving_nothing(arena, tar, "climbs above the layer root")


def test_write_through_absolute_symlink_is_rejected(arena):
    _, _, sentinel = arena
    tar = tar_of([e("evil", "symlink", link=str(sentinel)), e("evil/pwned", data=b"gotcha")])
    assert_rejected_leaving_nothing(arena, tar, "which is a symlink")


def test_write_through_symlinked_parent_deeper_is_rejected(arena):
    # the classic: plant `etc -> /`, later write `etc/sentinel/file` hoping to land on the host
    base, _, _ = arena
    tar = tar_of([e("etc", "symlink", link=str(base)), e("etc/sentinel/file", data=b"overwritten")])
    assert_rejected_leaving_nothing(arena, tar, "which is a symlink")


def test_symlink_replaced_by_file_does_not_write_through(arena):
    # a later regular-file entry with the symlink's own name replaces the link; it never follows it
    base, store, sentinel = arena
    tar = tar_of([e("x", "symlink", link=str(sentinel / "file")), e("x", data=b"mine\n")])
    blob, diff_id = store_layer(store, tar)
    path = store.ensure_layer(blob, diff_id)
    assert (sentinel / "file").read_text() == "precious\n"
    assert not (path / "x").is_symlink() and (path / "x").read_text() == "mine\n"


@pytest.mark.parametrize("link", ["../../../sentinel/file", "/sentinel/file", "SENTINEL_ABS"])
def test_hardlink_out_of_the_layer_is_rejected(arena, link):
    _, _, sentinel = arena
    link = str(sentinel / "file") if link == "SENTINEL_ABS" else link
    # the temporary tree is store/tmp/layer-X: three `..` reach the directory holding the sentinel
    assert_rejected_leaving_nothing(arena, tar_of([e("h", "hardlink", link=link)]),
                                    "path traversal|absolute path|not in this layer")
    assert os.stat(sentinel / "file").st_nlink == 1


def test_hardlink_through_a_symlink_is_rejected(arena):
    _, _, sentinel = arena
    tar = tar_of([e("s", "symlink", link=str(sentinel)), e("h", "hardlink", link="s/file")])
    assert_rejected_leaving_nothing(arena, tar, "which is a symlink")
    assert os.stat(sentinel / "file").st_nlink == 1


@pytest.mark.parametrize("kind,dev", [("chr", (1, 3)), ("blk", (8, 0)), ("chr", (1, 1)), ("blk", (0, 0))])
def test_device_nodes_are_rejected(arena, kind, dev):
    assert_rejected_leaving_nothing(arena, tar_of([e("dev", "dir"), e("dev/x", kind, dev=dev)]), "device")


def test_a_char_device_0_0_is_taken_as_an_overlay_whiteout(arena):
    _, store, _ = arena
    blob, diff_id = store_layer(store, tar_of([e("etc", "dir"), e("etc/gone", "chr", dev=(0, 0), mode=0o600)]))
    st = os.lstat(store.ensure_layer(blob, diff_id) / "etc/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@pytest.mark.parametrize("name", [".wh...", "a/.wh..", "a/.wh.", "../.wh.sentinel"])
def test_whiteout_pointing_outside_is_rejected(arena, name):
    assert_rejected_leaving_nothing(arena, tar_of([e("a", "dir"), e(name)]), "outside its directory|traversal")


def test_a_hardlink_to_itself_is_one_clear_error(arena):
    assert_rejected_leaving_nothing(arena, tar_of([e("h", data=b"x"), e("h", "hardlink", link="h")]),
                                    "could not be unpacked")


def test_forged_overlay_xattr_is_rejected(arena):
    tar = tar_of([e("d", "dir", xattrs={"trusted.overlay.redirect": "/etc"})])
    assert_rejected_leaving_nothing(arena, tar, "forge OverlayFS metadata")


def test_diff_id_mismatch_is_rejected(arena):
    base, store, _ = arena
    blob, _ = store_layer(store, tar_of([e("f", data=b"x")]))
    with pytest.raises(LayerRejected, match="diff_id"):
        store.ensure_layer(blob, sha256_digest(b"something else"))
    assert list((store.root / "tmp").iterdir()) == [] and list((store.root / "layers").iterdir()) == []


def test_garbage_is_rejected(arena):
    _, store, _ = arena
    blob = store.put_blob(b"this is not a tar archive at all" * 40)
    with pytest.raises(LayerRejected, match="not a tar|damaged"):
        store.ensure_layer(blob, sha256_digest(b"x"))
    assert list((store.root / "tmp").iterdir()) == []


def test_metadata_whiteouts_and_opaque_dirs_are_unpacked(arena):
    _, store, _ = arena
    tar = tar_of([
        e("./", "dir", mode=0o755, mtime=1_500_000_000),
        e("bin", "dir", mode=0o751, mtime=1_234_567_890),
        e("bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1001, mtime=1_111_111_111),
        e("bin/cap", data=b"cap", xattrs={"user.lab": "hello", "security.capability":
                                          "\x01\x00\x00\x02\x00\x04\x00\x00" + "\x00" * 12}),
        e("bin/tool2", "hardlink", link="bin/tool"),
        e("rel", "symlink", link="bin/tool", uid=7, gid=8), e("abs", "symlink", link="/bin/tool"),
        e("pipe", "fifo", mode=0o620),
        e("etc/.wh.motd"), e("srv", "dir"), e("srv/.wh..wh..opq"), e("srv/new", data=b"new"),
        e("missing/parent/file", data=b"p"),
    ])
    blob, diff_id = store_layer(store, tar)
    root = store.ensure_layer(blob, diff_id)
    st = os.lstat(root / "bin/tool")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (1000, 1001)
    assert st.st_mtime == 1_111_111_111 and st.st_nlink == 2
    assert os.lstat(root / "bin/tool2").st_ino == st.st_ino
    assert stat.S_IMODE(os.lstat(root / "bin").st_mode) == 0o751
    assert os.lstat(root / "bin").st_mtime == 1_234_567_890  # set after its entries were written
    assert os.lstat(root).st_mtime == 1_500_000_000
    assert os.getxattr(root / "bin/cap", "user.lab") == b"hello"
    assert os.getxattr(root / "bin/cap", "security.capability")[:4] == b"\x01\x00\x00\x02"
    assert os.readlink(root / "rel") == "bin/tool" and os.lstat(root / "rel").st_uid == 7
    assert os.readlink(root / "abs") == "/bin/tool"
    assert stat.S_ISFIFO(os.lstat(root / "pipe").st_mode) and stat.S_IMODE(os.lstat(root / "pipe").st_mode) == 0o620
    wh = os.lstat(root / "etc/motd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert not (root / "etc/.wh.motd").exists()
    assert os.getxattr(root / "srv", "trusted.overlay.opaque") == b"y"
    assert os.listdir(root / "srv") == ["new"]
    assert stat.S_IMODE(os.lstat(root / "missing/parent").st_mode) == 0o755


def test_uncompressed_layer_and_diff_id(arena):
    _, store, _ = arena
    tar = tar_of([e("plain", data=b"not gzipped")])
    blob, diff_id = store_layer(store, tar, compress=False)
    assert blob == diff_id
    assert (store.ensure_layer(blob, diff_id) / "plain").read_bytes() == b"not gzipped"


def test_zstd_layer_is_unpacked_or_refused_clearly(arena, tmp_path):
    _, store, _ = arena
    tar = tar_of([e("z", data=b"zstd")])
    src = tmp_path / "l.tar"
    src.write_bytes(tar)
    if subprocess.run(["which", "zstd"], capture_output=True).returncode != 0:
        pytest.skip("no zstd command to make a zstd layer with")
    subprocess.run(["zstd", "-q", str(src), "-o", str(tmp_path / "l.tar.zst")], check=True)
    blob = store.put_blob((tmp_path / "l.tar.zst").read_bytes())
    try:
        import zstandard  # noqa: F401
    except ImportError:
        with pytest.raises(Exception, match="zstandard"):
            store.ensure_layer(blob, sha256_digest(tar))
        assert list((store.root / "tmp").iterdir()) == []
    else:
        assert (store.ensure_layer(blob, sha256_digest(tar)) / "z").read_bytes() == b"zstd"


_IMPORT_SCRIPT = """
import sys
from labctl.images import archive as imageimport
from labctl.images.store import ImageStore
print(imageimport.import_path(ImageStore(sys.argv[1]), sys.argv[2])[0].manifest_digest)
"""


def test_two_concurrent_imports_leave_one_consistent_copy(tmp_path):
    from layerbuild import rich_image
    layout = ocilayout.write_layout(tmp_path / "layout", {"rich": rich_image()})
    for round_ in range(3):
        root = tmp_path / f"store{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", _IMPORT_SCRIPT, str(root), f"{layout}:rich"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        store = ImageStore(root)
        digest = outs[0][0].strip()
        assert outs[1][0].strip() == digest
        assert store.refs() == {"localhost/rich:latest": digest}
        diff_ids = [d for _, d in store.image_layers(digest)]
        assert sorted(os.listdir(root / "layers")) == sorted(d[7:] for d in diff_ids)
        assert os.listdir(root / "tmp") == [] and os.listdir(root / "incoming") == []
        for blob in (root / "blobs/sha256").iterdir():  # every blob is intact
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
        # each layer equals a fresh single-process unpack of the same blob
        fresh = ImageStore(tmp_path / f"fresh{round_}")
        for blob_digest, diff_id in store.image_layers(digest):
            fresh.put_blob(store.read_blob(blob_digest))
            assert snapshot(fresh.ensure_layer(blob_digest, diff_id)) == snapshot(store.layer_path(diff_id))


def test_import_oci_archive_and_docker_archive_made_by_skopeo(tmp_path):
    layout = ocilayout.write_layout(tmp_path / "layout", {"layered": ocilayout.whiteout_image()})
    store = ImageStore(tmp_path / "store")
    subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:layered", f"oci-archive:{tmp_path}/img.tar"],
                   check=True)
    subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:layered",
                    f"docker-archive:{tmp_path}/docker.tar:lab/layered:v1"], check=True)
    oci = imageimport.import_path(store, f"{tmp_path}/img.tar", "localhost/from-oci:1")[0]
    docker = imageimport.import_path(store, f"{tmp_path}/docker.tar")[0]
    assert docker.reference == "docker.io/lab/layered:v1"  # skopeo writes the full name in RepoTags
    # same layers, whatever the packaging: the unpacked diff_ids are shared, not duplicated
    assert [d for _, d in store.image_layers(oci.manifest_digest)] == \
        [d for _, d in store.image_layers(docker.manifest_digest)]
    assert len(os.listdir(store.root / "layers")) == 3
    top = store.layer_path(store.image_layers(docker.manifest_digest)[-1][1])
    assert overlay_whiteout(top / "etc/motd")


def overlay_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_import_refuses_a_blob_that_does_not_match_its_digest(tmp_path):
    layout = ocilayout.write_layout(tmp_path / "layout", {"busybox": ocilayout.busybox_image()})
    layer_digest = ocilayout.busybox_image().layers[0].descriptor["digest"]
    path = layout / "blobs/sha256" / layer_digest[7:]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    store = ImageStore(tmp_path / "store")
    with pytest.raises(Exception, match="digest mismatch"):
        imageimport.import_path(store, f"{layout}:busybox")
    assert store.refs() == {} and os.listdir(store.root / "layers") == []
    assert os.listdir(store.root / "incoming") == []


def test_importing_an_image_with_a_malicious_layer_stores_no_reference_and_no_layer(arena):
    base, store, sentinel = arena
    good = layerbuild.layer([e("ok", data=b"fine\n")])
    evil = layerbuild.layer([e("lib", "symlink", link=str(sentinel)), e("lib/pwned", data=b"gotcha\n")])
    layout = ocilayout.write_layout(base / "layout", {"evil": ocilayout.Image([good, evil])})
    with pytest.raises(LayerRejected, match="lib/pwned"):
        imageimport.import_path(store, f"{layout}:evil")
    assert store.refs() == {}
    assert os.listdir(store.root / "tmp") == []
    assert [p.name for p in (store.root / "layers").iterdir()] == [good.diff_id[7:]]  # the good one, whole
    assert sorted(os.listdir(sentinel)) == ["file"]
    store.garbage_collect()   # nothing references either layer: both go
    assert os.listdir(store.root / "layers") == [] and os.listdir(store.root / "blobs/sha256") == []
