"""Issue 14's image-store and registry faults, probed as a hostile-but-fair user would: the real CLI in a
subprocess, the real registry behind tests/faults.py's FaultyProxy (trickling, stalling, redirecting),
a real `labctl pull` holding the store's lock, and archives cut short or malformed.

What the tests believe: the exit status, the number of lines on stderr, the clock, and the image
store's own files (blobs/, incoming/, refs.json) before and after.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from faults import FaultyProxy
from labctl.images import labregistry, ocilayout
from labctl.images import store as imagestore
from test_registry import _serve


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return labregistry.write_lab_layout(tmp_path_factory.mktemp("faults-layout"))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, layout):
    server = _serve(tmp_path_factory, "faults-registry")
    labregistry.seed(server.host, layout, ["busybox", "layered"])
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path):
    """A state directory of the test's own, for the labctl subprocesses: their store, their locks."""
    return dict(os.environ, LABCTL_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(REPO))


def labctl(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labctl", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def start_labctl(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labctl", *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def store_files(env: dict) -> dict[str, list[str]]:
    """What the image store holds: every blob, every file being written, every reference."""
    root = Path(env["LABCTL_STATE_DIR"]) / "images"
    refs = root / "refs.json"
    return {"blobs": sorted(os.listdir(root / "blobs/sha256")) if root.exists() else [],
            "incoming": sorted(os.listdir(root / "incoming")) if root.exists() else [],
            "layers": sorted(os.listdir(root / "layers")) if root.exists() else [],
            "refs": sorted(json.loads(refs.read_text())) if refs.exists() else []}


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and all(w in lines[0] for w in words), lines[0]
    return lines[0]


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# 1. A pull stuck on a slow layer can be stopped, and a stalled one gives up


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_pull_trickling_a_layer_ends_within_a_second_of_a_signal_and_stores_nothing(upstream, env, signum):
    empty = store_files(env)
    with FaultyProxy(upstream.port, rate=1, min_blob_size=10_000) as proxy:   # the layer, not the config
        pull = start_labctl(env, "pull", f"127.0.0.1:{proxy.port}/lab/busybox")
        try:
            wait_until(lambda: proxy.slowed >= 1)
            time.sleep(0.5)                       # in the middle of the layer, in a download thread
            sent = time.monotonic()
            pull.send_signal(signum)
            pull.wait(timeout=30)
            took = time.monotonic() - sent
        finally:
            pull.kill()
            _, err = pull.communicate()
    assert took < 1.0, f"the pull took {took:.2f} s to end"
    assert pull.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert store_files(env) == dict(empty, blobs=[], incoming=[], refs=[])   # nor its config blob


def test_a_stalled_transfer_fails_with_one_line_after_the_stall_timeout(upstream, env):
    with FaultyProxy(upstream.port, stall_after=100, min_blob_size=10_000) as proxy:
        started = time.monotonic()
        result = labctl(env, "pull", "--stall-timeout", "2", f"127.0.0.1:{proxy.port}/lab/busybox")
        took = time.monotonic() - started
    one_line_error(result, "stalled", "nothing for 2 s")
    assert 2 <= took < 8, took
    assert store_files(env)["blobs"] == [] and store_files(env)["incoming"] == []


def test_a_trickle_below_the_floor_counts_as_stalled(upstream, env):
    with FaultyProxy(upstream.port, rate=200, min_blob_size=10_000) as proxy:
        started = time.monotonic()
        result = labctl(dict(env, LABCTL_PULL_STALL_TIMEOUT="2"), "pull", f"127.0.0.1:{proxy.port}/lab/busybox")
        took = time.monotonic() - started
    one_line_error(result, "stalled", "bytes/s")
    assert took < 8, took
    assert store_files(env)["blobs"] == [] and store_files(env)["refs"] == []


def test_a_redirect_loop_fails_with_one_line(upstream, env):
    with FaultyProxy(upstream.port, redirect_loop=True) as proxy:
        result = labctl(env, "pull", f"127.0.0.1:{proxy.port}/lab/busybox")
    one_line_error(result, "too many redirects")
    assert proxy.redirects_sent >= 6 and store_files(env)["refs"] == []


# ---------------------------------------------------------------------------------------------
# 2. A command kept waiting for the store's lock says who holds it, and gives up


def test_rmi_waiting_for_a_pull_names_it_and_gives_up_with_one_line(upstream, env, layout):
    assert labctl(env, "import", f"{layout}:busybox").returncode == 0
    before = store_files(env)
    with FaultyProxy(upstream.port, stall_after=0) as proxy:
        pull = start_labctl(env, "pull", "--stall-timeout", "60", f"127.0.0.1:{proxy.port}/lab/layered")
        try:
            wait_until(lambda: proxy.slowed >= 1)       # the pull holds the store's lock, stuck
            started = time.monotonic()
            rmi = labctl(dict(env, LABCTL_STORE_LOCK_TIMEOUT="1"), "rmi", "localhost/busybox:latest")
            took = time.monotonic() - started
            assert pull.poll() is None
        finally:
            pull.send_signal(signal.SIGTERM)
            pull.communicate(timeout=10)
    waiting, error = rmi.stderr.strip().splitlines()
    assert waiting == f"labctl: waiting for the image store, held by `labctl pull` pid {pull.pid}"
    assert rmi.returncode == 2 and "gave up after 1 s" in error and f"pid {pull.pid}" in error, rmi.stderr
    assert took < 5, took
    assert store_files(env) == before


# ---------------------------------------------------------------------------------------------
# 3. Imports: one line, and nothing stored


def test_import_of_a_truncated_tar_is_one_line_and_stores_nothing(layout, env, tmp_path):
    archive = tmp_path / "busybox.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    archive.write_bytes(archive.read_bytes()[:archive.stat().st_size // 3])
    one_line_error(labctl(env, "import", f"{archive}:busybox"), "truncated or damaged")
    assert store_files(env) == dict(blobs=[], incoming=[], layers=[], refs=[])


@pytest.mark.parametrize("packed", [False, True])
def test_import_of_a_layout_with_a_malformed_index_is_one_line(layout, env, tmp_path, packed):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-a", str(layout), str(broken)], check=True)
    (broken / "index.json").write_text('{"schemaVersion": 2, "manifests": [')
    source = broken
    if packed:
        source = tmp_path / "broken.tar"
        subprocess.run(["tar", "-C", str(broken), "-cf", str(source), "."], check=True)
    one_line_error(labctl(env, "import", str(source)), "index.json is not valid JSON")
    assert store_files(env)["blobs"] == [] and store_files(env)["refs"] == []


def test_a_failed_import_leaves_no_blob_behind(env, tmp_path):
    image = ocilayout.whiteout_image()
    dest = ocilayout.write_layout(tmp_path / "bad", {"layered": image})
    top = dest / "blobs/sha256" / image.layers[-1].descriptor["digest"].split(":")[1]
    top.write_bytes(top.read_bytes()[:-1] + b"X")       # the top layer no longer matches its digest
    one_line_error(labctl(env, "import", f"{dest}:layered"), "digest mismatch", "nothing was stored")
    assert store_files(env) == dict(blobs=[], incoming=[], layers=[], refs=[])   # the config neither


@pytest.mark.parametrize("name", ["localhost/x:../../y", "localhost/UPPER:1", "localhost/x:" + "t" * 129,
                                  "localhost/x:é"])
def test_import_refuses_a_name_that_is_no_reference(layout, env, name):
    one_line_error(labctl(env, "import", f"{layout}:busybox", "--name", name), "invalid image reference")
    assert store_files(env)["refs"] == [] and store_files(env)["blobs"] == []


# ---------------------------------------------------------------------------------------------
# rmi: the same lock as imports, and names instead of IDs


def test_rmi_holds_the_store_lock_exclusively_while_it_collects(monkeypatch, tmp_path):
    store = imagestore.ImageStore(tmp_path / "store")
    seen = []
    monkeypatch.setattr(imagestore.ImageStore, "_collect",
                        lambda self: seen.append(_lock_is_exclusive(tmp_path)) or [])
    ocilayout_dir = ocilayout.write_layout(tmp_path / "one", {"busybox": ocilayout.busybox_image()})
    from labctl.images import archive
    archive.import_path(store, f"{ocilayout_dir}:busybox")
    imagestore.remove_image(store, "localhost/busybox:latest")
    assert seen == [True] and store.refs() == {}


def _lock_is_exclusive(tmp_path) -> bool:
    """Ask another process whether it could take the image store's lock shared, as an import does."""
    probe = ("import fcntl, os, sys; from labctl import state; "
             "fd = os.open(state.subdir('locks') / 'image-store.lock', os.O_RDWR); "
             "sys.exit(0 if fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB) is None else 1)")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0


def test_rmi_names_the_containers_that_use_the_image_not_their_ids(tmp_path):
    from labctl.kernel import overlay
    store = imagestore.ImageStore(tmp_path / "store")
    from labctl.images import archive
    archive.import_path(store, f"{ocilayout.write_layout(tmp_path / 'one', {'busybox': ocilayout.busybox_image()})}:busybox")
    container_id = "f" * 64
    root = overlay.ContainerRoot.create(store, "localhost/busybox:latest", container_id)
    try:
        with pytest.raises(imagestore.ImageInUse, match="used by container.s. web") as named:
            imagestore.remove_image(store, "localhost/busybox:latest", container_names={container_id: "web"})
        with pytest.raises(imagestore.ImageInUse) as unnamed:       # a container with no record: its short ID
            imagestore.remove_image(store, "localhost/busybox:latest")
    finally:
        root.remove()
    assert container_id not in str(named.value) and container_id not in str(unnamed.value)
    assert container_id[:12] in str(unnamed.value) and store.refs()


def test_a_registry_name_that_does_not_resolve_is_one_line(env):
    """Run in a network namespace of its own (`unshare -n`: no route, no DNS server reachable), so the
    lookup fails here and no packet leaves the machine; it used to end in socket.gaierror's traceback."""
    result = subprocess.run(["unshare", "-n", sys.executable, "-m", "labctl", "pull", "-q", "nosuch.invalid/lab/x"],
                            env=env, capture_output=True, text=True, timeout=60)
    one_line_error(result, "cannot resolve", "nosuch.invalid")
