"""Step 5: pulling images, against the real docker-registry (Debian's distribution 2.8) on 127.0.0.1.

Three registries run for the session: anonymous, htpasswd (HTTP Basic, bcrypt) and bearer-token auth
(labctl.images.tokenserver issues RS256 JWTs; the registry verifies them against the certificate in its
rootcertbundle). Images are pushed into them by skopeo, in OCI and in Docker v2 schema 2 form.
What the tests believe: the registry's own access log, its storage files, the image store's files,
the token server's issued claims, the kernel's mount table and the unpacked trees; never our output.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import REPO, SESSION_PIDS
from faults import FaultyProxy
from helpers import run_labctl, student_lab
from helpers import run_labctl as run_cli
from labctl.images import store as imagestore, labregistry, mediatypes, ocilayout, reference, distribution as registry
from labctl import state
from labctl.images.tokenserver import TokenServer

pytestmark = pytest.mark.root

USER, PASSWORD = "student-reg5", "correct horse battery staple"


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def layout(tmp_path_factory):
    return labregistry.write_lab_layout(tmp_path_factory.mktemp("lab-oci-layout"))


def _serve(tmp_path_factory, name, level="error", **kw):
    """A registry for the whole session. Its journal records go to a state directory of its own: the
    residue check runs `labctl cleanup` on the tests' state directory after a failure (another helper's
    leftovers can trigger it), and that must not stop the registries every later test needs."""
    saved = os.environ["LABCTL_STATE_DIR"]
    os.environ["LABCTL_STATE_DIR"] = str(tmp_path_factory.mktemp(f"{name}-state"))
    try:
        server = labregistry.RegistryServer(tmp_path_factory.mktemp(name) / "reg",
                                            extra={"log": {"level": level, "accesslog": {"disabled": False}}},
                                            **kw).start()
    finally:
        os.environ["LABCTL_STATE_DIR"] = saved
    SESSION_PIDS.add(server.process.pid)
    return server


@pytest.fixture(scope="session")
def anonymous(tmp_path_factory, layout):
    server = _serve(tmp_path_factory, "anon")
    labregistry.seed(server.host, layout)                                          # OCI
    labregistry.seed(server.host, layout, ["busybox", "layered", "multiarch"], docker_v2s2=True, suffix="-v2s2")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def basic(tmp_path_factory, layout):
    root = tmp_path_factory.mktemp("htpasswd")
    htpasswd = root / "htpasswd"
    htpasswd.write_text(subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True,
                                       check=True).stdout)
    server = _serve(tmp_path_factory, "basic", auth={"htpasswd": {"realm": "lab-basic", "path": str(htpasswd)}})
    labregistry.seed(server.host, layout, ["layered"], creds=(USER, PASSWORD))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bearer(tmp_path_factory, layout):
    tokens = TokenServer(users={USER: PASSWORD}, anonymous_pull=True).start()   # as Docker Hub: pull for all
    root = tmp_path_factory.mktemp("token")
    server = _serve(tmp_path_factory, "token", auth=tokens.registry_auth_config(root))
    labregistry.seed(server.host, layout, ["busybox", "multiarch"], creds=(USER, PASSWORD))
    server.tokens = tokens
    yield server
    server.stop()
    tokens.stop()


@pytest.fixture
def store(tmp_path):
    return imagestore.ImageStore(tmp_path / "store")


def access_log(server) -> list[str]:
    """The registry's own record of the requests it served (its access log)."""
    return [l for l in (server.root / "registry.log").read_text(errors="replace").splitlines() if '"GET ' in l
            or '"HEAD ' in l]


def blob_gets(server, since: int = 0) -> list[str]:
    return [l for l in access_log(server)[since:] if "/blobs/sha256:" in l]


def store_is_clean_of(store: imagestore.ImageStore, digest: str) -> None:
    assert not store.has_blob(digest)
    assert list((store.root / "incoming").iterdir()) == []
    assert store.refs() == {}


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root: (type, mode, uid, gid, size, content sha256 or link target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            what = os.readlink(p) if stat.S_ISLNK(st.st_mode) else \
                hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                             st.st_gid, st.st_size if stat.S_ISREG(st.st_mode) else 0, what)
    return out


# ---------------------------------------------------------------------------------------------
# References


@pytest.mark.root(False)
@pytest.mark.parametrize("text, expected", [
    ("busybox", ("docker.io", "library/busybox", "latest", None)),
    ("alpine:3.19", ("docker.io", "library/alpine", "3.19", None)),
    ("myuser/app", ("docker.io", "myuser/app", "latest", None)),
    ("index.docker.io/library/debian:12", ("docker.io", "library/debian", "12", None)),
    ("localhost/app", ("localhost", "app", "latest", None)),
    ("127.0.0.1:5000/lab/nested/deep:v1.2", ("127.0.0.1:5000", "lab/nested/deep", "v1.2", None)),
    ("quay.io/a/b@sha256:" + "c" * 64, ("quay.io", "a/b", None, "sha256:" + "c" * 64)),
    ("ghcr.io/a/b:t@sha256:" + "d" * 64, ("ghcr.io", "a/b", "t", "sha256:" + "d" * 64)),
])
def test_references_are_normalised_as_docker_does(text, expected):
    ref = reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.root(False)
@pytest.mark.parametrize("text", ["", "Busybox", "a b", "lab/", "x@sha256:123", "127.0.0.1:99999/x",
                                  "x:" + "t" * 200, "a//b", "-lead"])
def test_invalid_reference_is_one_clear_line(text):
    with pytest.raises(reference.InvalidReference) as err:
        reference.parse(text)
    assert "\n" not in str(err.value) and "invalid image reference" in str(err.value)
    result = run_labctl("pull", "--", text)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Media types, platforms and challenges, read without a registry


def _index(*platforms: dict) -> dict:
    manifests = [{"mediaType": mediatypes.MEDIA_OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 1,
                  "platform": p} for i, p in enumerate(platforms)]
    # an attestation beside the images (as BuildKit writes them): not an image manifest, never chosen
    manifests.append({"mediaType": "application/vnd.in-toto+json", "digest": "sha256:" + "f" * 64, "size": 1,
                      "platform": {"os": "unknown", "architecture": "unknown"}})
    return {"schemaVersion": 2, "mediaType": mediatypes.MEDIA_OCI_INDEX, "manifests": manifests}


def test_index_entry_is_chosen_by_platform_exact_variant_first():
    index = _index({"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm64"},
                   {"os": "linux", "architecture": "arm64", "variant": "v8"},
                   {"os": "linux", "architecture": "arm", "variant": "v7"})
    choose = mediatypes.choose_manifest
    assert choose(index, mediatypes.parse_platform("linux/arm64/v8"))["digest"] == f"sha256:{2:064x}"
    assert choose(index, mediatypes.parse_platform("linux/arm64"))["digest"] == f"sha256:{1:064x}"
    assert choose(index, mediatypes.Platform("linux", "amd64"))["digest"] == f"sha256:{0:064x}"
    with pytest.raises(mediatypes.NoMatchingPlatform) as err:
        choose(index, mediatypes.parse_platform("linux/arm/v6"), fix="pick another")
    assert "it offers: linux/amd64, linux/arm64, linux/arm64/v8, linux/arm/v7)" in str(err.value)
    assert err.value.fix == "pick another"


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/arm64/v8/extra"])
def test_invalid_platform_is_refused_with_the_form_to_use(text):
    from labctl.errors import LabError
    with pytest.raises(LabError, match="OS/ARCH"):
        mediatypes.parse_platform(text)


def test_challenge_parameters_are_parsed_with_quotes_and_commas():
    from labctl.images import auth
    scheme, params = auth.parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                                          'scope="repository:lab/a:pull,push", error=insufficient_scope')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg",
                      "scope": "repository:lab/a:pull,push", "error": "insufficient_scope"}
    assert auth.parse_challenge('Basic realm="Registry \\"lab\\""') == ("basic", {"realm": 'Registry "lab"'})


# ---------------------------------------------------------------------------------------------
# Anonymous pulls, formats, platforms


def test_oci_and_docker_v2s2_pull_to_the_same_root_filesystem(anonymous, tmp_path, layout):
    """The same image pushed as an OCI manifest and as a Docker v2s2 manifest: two different manifests
    (the registry says so) that unpack to identical merged overlay trees."""
    roots, media = [], []
    for form, container in (("layered", "reg5-oci"), ("layered-v2s2", "reg5-v2s2")):
        store = imagestore.ImageStore(tmp_path / form)
        result = registry.pull(f"{anonymous.host}/lab/{form}", store=store, progress=False)
        manifest = store.read_json(result.digest)
        media.append(manifest["mediaType"])
        for layer in manifest["layers"]:   # every blob in the store is what its digest says
            assert "sha256:" + hashlib.sha256(store.blob_path(layer["digest"]).read_bytes()).hexdigest() \
                == layer["digest"]
        from labctl.kernel.overlay import ContainerRoot
        roots.append(ContainerRoot.create(store, result.reference, container))
    try:
        assert media == [mediatypes.MEDIA_OCI_MANIFEST, mediatypes.MEDIA_DOCKER_MANIFEST]
        for root in roots:
            assert state.is_mountpoint(str(root.merged))
        a, b = (tree(r.merged) for r in roots)
        assert a == b
        assert "srv/data/new.txt" in a and "etc/motd" not in a and "srv/data/old-1.txt" not in a
        assert "bin/busybox" in a
    finally:
        for root in roots:
            root.remove()


@pytest.mark.parametrize("name, index_type", [("multiarch", mediatypes.MEDIA_OCI_INDEX),
                                              ("multiarch-v2s2", mediatypes.MEDIA_DOCKER_LIST)])
def test_index_resolves_to_the_host_platform_and_platform_flag_picks_another(anonymous, store, name, index_type):
    import http.client
    conn = http.client.HTTPConnection(anonymous.host)
    conn.request("HEAD", f"/v2/lab/{name}/manifests/latest", headers={"Accept": mediatypes.ACCEPT})
    assert conn.getresponse().getheader("Content-Type") == index_type     # what the registry serves
    conn.close()
    host = mediatypes.host()
    result = registry.pull(f"{anonymous.host}/lab/{name}", store=store, progress=False)
    assert result.platform == str(host)
    assert store.config(result.reference)["architecture"] == host.architecture
    arm = registry.pull(f"{anonymous.host}/lab/{name}", store=store, platform="linux/arm64/v8", progress=False)
    assert arm.digest != result.digest
    cfg = store.read_json(store.read_json(arm.digest)["config"]["digest"])
    assert (cfg["architecture"], cfg.get("variant")) == ("arm64", "v8")
    with pytest.raises(mediatypes.NoMatchingPlatform, match="no manifest for linux/s390x"):
        registry.pull(f"{anonymous.host}/lab/{name}", store=store, platform="linux/s390x", progress=False)


def test_second_pull_transfers_no_blobs(anonymous, store):
    first_seen = len(access_log(anonymous))
    registry.pull(f"{anonymous.host}/lab/busybox", store=store, progress=False)
    fetched = blob_gets(anonymous, first_seen)
    assert len(fetched) == 2                              # config + one layer, per the registry's log
    before = {p.name: p.stat().st_mtime_ns for p in (store.root / "blobs/sha256").iterdir()}
    seen = len(access_log(anonymous))
    again = registry.pull(f"{anonymous.host}/lab/busybox", store=store, progress=False)
    assert blob_gets(anonymous, seen) == []
    assert {p.name: p.stat().st_mtime_ns for p in (store.root / "blobs/sha256").iterdir()} == before
    assert store.refs()[again.reference] == again.digest


@pytest.fixture(scope="module")
def big_layers(anonymous, tmp_path_factory):
    """An image of three 16 MiB layers of random bytes (uncompressed), pushed to the anonymous registry:
    big enough that each layer's download takes a while even over loopback."""
    layers = [ocilayout.Layer(ocilayout.tar_entries([ocilayout.FileEntry(f"big{i}", data=os.urandom(16 << 20))]),
                              gzip=False) for i in range(3)]
    layout = ocilayout.write_layout(tmp_path_factory.mktemp("big-layout"), {"big": ocilayout.Image(layers)})
    labregistry.seed(anonymous.host, layout, ["big"])
    return f"{anonymous.host}/lab/big"


@pytest.mark.parametrize("parallel", [4, 1])
def test_layers_are_downloaded_in_parallel(big_layers, store, parallel):
    """Judged by the image store's incoming/ directory, where a blob lives from its first byte until it
    is verified and renamed into blobs/: with 4 workers several layers are in flight at once, with 1
    never more than one (which shows the check can fail)."""
    incoming = store.root / "incoming"
    most, done = 0, threading.Event()

    def watch():
        nonlocal most
        while not done.is_set():
            most = max(most, sum(1 for name in os.listdir(incoming) if name.startswith("blob-")))
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = registry.pull(big_layers, store=store, progress=False, parallel=parallel)
    finally:
        done.set()
        watcher.join()
    assert store.refs()[result.reference] == result.digest
    assert (most >= 2) if parallel > 1 else (most == 1), f"at most {most} blobs in flight at once"


def test_zstd_layer_pulls_to_the_same_tree_as_its_gzip_twin(anonymous, tmp_path, store):
    """One layer tar, pushed once zstd-compressed and once gzip-compressed: both pull and unpack to the
    same tree, and the registry serves the zstd one under its own media type."""
    tar = ocilayout.tar_entries([ocilayout.FileEntry("etc", kind="dir"),
                                 ocilayout.FileEntry("etc/motd", data=b"compressed with zstd\n"),
                                 ocilayout.FileEntry("bin/tool", data=os.urandom(4096), mode=0o755),
                                 ocilayout.FileEntry("bin/link", kind="symlink", target="tool")])
    layout = ocilayout.write_layout(tmp_path / "layout", {"zstd": ocilayout.Image([ocilayout.Layer(tar, zstd=True)]),
                                                          "gz": ocilayout.Image([ocilayout.Layer(tar)])})
    labregistry.seed(anonymous.host, layout, ["zstd", "gz"])
    trees = {}
    for name in ("zstd", "gz"):
        result = registry.pull(f"{anonymous.host}/lab/{name}", store=store, progress=False)
        layers = store.manifest(result.reference)["layers"]
        assert len(layers) == 1
        assert layers[0]["mediaType"].endswith("+zstd" if name == "zstd" else "+gzip"), layers[0]
        trees[name] = tree(store.layer_dirs(result.reference)[0])
    assert trees["zstd"] == trees["gz"] and "etc/motd" in trees["zstd"]


def test_schema1_manifest_is_refused(tmp_path, layout, store):
    with labregistry.RegistryServer(tmp_path / "s1", extra={"compatibility": {"schema1": {"enabled": True}}}) as srv:
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", "--format", "v2s1",
                        f"oci:{layout}:layered", f"docker://{srv.host}/lab/old:latest"], check=True)
        with pytest.raises(registry.RegistryError, match="schema 1"):
            registry.pull(f"{srv.host}/lab/old", store=store, progress=False)
    store_is_clean_of(store, "sha256:" + "0" * 64)


# ---------------------------------------------------------------------------------------------
# Authentication


def test_basic_auth_pull_with_password_and_clear_errors_without(basic, store):
    with pytest.raises(registry.AuthError, match="needs a username and password"):
        registry.pull(f"{basic.host}/lab/layered", store=store, progress=False, credentials=None)
    with pytest.raises(registry.AuthError, match="refused the username"):
        registry.pull(f"{basic.host}/lab/layered", store=store, credentials=(USER, "wrong"), progress=False)
    assert store.refs() == {}
    result = registry.pull(f"{basic.host}/lab/layered", store=store, credentials=(USER, PASSWORD), progress=False)
    assert store.refs() == {result.reference: result.digest}


def test_bearer_token_pull_verified_by_the_registry(bearer, store):
    issued = len(bearer.tokens.issued)
    anonymous = registry.pull(f"{bearer.host}/lab/busybox", store=store, progress=False, credentials=None)
    assert bearer.tokens.issued[issued]["sub"] == ""                       # an anonymous token...
    assert bearer.tokens.issued[issued]["access"][0]["actions"] == ["pull"]  # ...for pulling only
    assert store.refs()[anonymous.reference] == anonymous.digest
    with pytest.raises(registry.AuthError, match="refused the username"):
        registry.pull(f"{bearer.host}/lab/busybox", store=store, credentials=(USER, "nope"), progress=False)
    issued = len(bearer.tokens.issued)
    result = registry.pull(f"{bearer.host}/lab/multiarch", store=store, credentials=(USER, PASSWORD),
                           progress=False)
    claims = bearer.tokens.issued[issued]
    assert claims["sub"] == USER and claims["aud"] == bearer.tokens.service
    assert claims["access"] == [{"type": "repository", "name": "lab/multiarch", "actions": ["pull"]}]
    assert store.config(result.reference)["architecture"] == mediatypes.host().architecture
    cli = run_labctl("pull", f"{bearer.host}/lab/busybox", "--username", USER, input=PASSWORD + "\n")
    assert cli.returncode == 0, cli.stderr
    assert f"{bearer.host}/lab/busybox:latest" in imagestore.ImageStore().refs()
    # a token for another repository does not open this one: the registry checks the claims
    other = bearer.tokens.issue(USER, bearer.tokens.service,
                                [{"type": "repository", "name": "lab/other", "actions": ["pull"]}])
    import http.client
    conn = http.client.HTTPConnection(bearer.host)
    conn.request("GET", "/v2/lab/busybox/manifests/latest", headers={"Authorization": f"Bearer {other}"})
    assert conn.getresponse().status == 401
    conn.close()


def test_login_stores_credentials_0600_and_pull_uses_them(basic, lab_state_dir):
    bad = run_labctl("login", basic.host, "--username", USER, "--password-stdin", input="wrong\n")
    assert bad.returncode == 2 and "refused" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    ok = run_labctl("login", basic.host, "--username", USER, "--password-stdin", input=PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    auth = lab_state_dir / "auth.json"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    seen = len(access_log(basic))
    pulled = run_labctl("pull", f"{basic.host}/lab/layered")    # no --username: the stored login is used
    assert pulled.returncode == 0, pulled.stderr
    # the registry served the manifest (it needs the password) to labctl: the stored login was sent
    # (blobs may already be in the store from an earlier pull of the same image, so the manifest is the proof)
    assert any('/manifests/' in l and '" 200 ' in l and "labctl/" in l for l in access_log(basic)[seen:])
    store = imagestore.ImageStore()
    assert f"{basic.host}/lab/layered:latest" in store.refs()
    auth.unlink()
    again = run_labctl("pull", f"{basic.host}/lab/layered")     # without it, the registry says 401
    assert again.returncode == 2 and "needs a username and password" in again.stderr


# ---------------------------------------------------------------------------------------------
# Corruption, dropped connections, redirects


def test_corrupted_blob_in_registry_storage_is_detected_and_not_stored(tmp_path, layout, store):
    with labregistry.RegistryServer(tmp_path / "corrupt") as srv:
        labregistry.seed(srv.host, layout, ["layered"])
        manifest = json.loads(ocilayout.layout_blob(layout, ocilayout.read_layout_index(layout)["layered"]["digest"]))
        victim = manifest["layers"][-1]["digest"]
        data = bytearray(srv.blob_file(victim).read_bytes())
        data[len(data) // 2] ^= 0xFF                       # same size, one byte flipped
        srv.blob_file(victim).write_bytes(bytes(data))
        with pytest.raises(imagestore.DigestMismatch) as err:
            registry.pull(f"{srv.host}/lab/layered", store=store, progress=False)
        assert victim in str(err.value)
    corrupted = "sha256:" + hashlib.sha256(data).hexdigest()
    assert not store.has_blob(victim) and not store.has_blob(corrupted)
    assert list((store.root / "incoming").iterdir()) == [] and store.refs() == {}


def test_dropped_connection_is_retried_then_succeeds(anonymous, store):
    proxy = FaultyProxy(anonymous.port, cut_after=20000, cuts=1)
    try:
        result = registry.pull(f"127.0.0.1:{proxy.port}/lab/busybox", store=store, progress=False, backoff=0.01)
    finally:
        proxy.close()
    assert proxy.blob_requests == 3                      # config, the layer cut off, the layer again
    layer = store.read_json(result.digest)["layers"][0]
    assert store.blob_path(layer["digest"]).stat().st_size == layer["size"]


def test_server_errors_and_429_are_retried_with_backoff(anonymous, store):
    proxy = FaultyProxy(anonymous.port, statuses=(503, 429, 502))
    try:
        result = registry.pull(f"127.0.0.1:{proxy.port}/lab/layered", store=store, progress=False, backoff=0.01)
    finally:
        proxy.close()
    assert proxy.errors_sent == 3
    assert store.refs() == {result.reference: result.digest}
    with pytest.raises(registry.RegistryError, match="answered 503 3 times"):
        proxy = FaultyProxy(anonymous.port, statuses=(503,) * 10)
        try:
            registry.pull(f"127.0.0.1:{proxy.port}/lab/busybox", store=imagestore.ImageStore(store.root.parent / "s2"),
                          progress=False, retries=2, backoff=0.01)
        finally:
            proxy.close()


def test_connection_dropped_every_time_is_reported_and_nothing_half_written(anonymous, store):
    proxy = FaultyProxy(anonymous.port, cut_after=20000, cuts=1000)
    try:
        with pytest.raises(registry.RegistryError, match=r"cut off 3 times .*; nothing of it was stored"):
            registry.pull(f"127.0.0.1:{proxy.port}/lab/busybox", store=store, progress=False, retries=2,
                          backoff=0.01)
    finally:
        proxy.close()
    assert proxy.blob_requests == 4                      # config, then the layer cut off three times
    assert list((store.root / "incoming").iterdir()) == [] and store.refs() == {}
    # the config arrived complete and verified, and the failed pull removed it again: nothing is stored
    assert list((store.root / "blobs/sha256").iterdir()) == []


def test_redirect_to_another_host_gets_no_authorization(tmp_path, layout, store):
    """The registry's `redirect` storage middleware answers blob GETs with 307 to another server, as
    registries backed by S3 do. The other server (here a file server on another port) must not see
    the registry's credentials."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    seen = []

    storage = tmp_path / "redir" / "reg" / "storage"

    class Files(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(storage), **kw)

        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            return super().do_GET()

        def log_message(self, *a):
            pass

    files = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True,
                                       check=True).stdout)
    try:
        with labregistry.RegistryServer(
                tmp_path / "redir" / "reg", auth={"htpasswd": {"realm": "r", "path": str(htpasswd)}},
                extra={"middleware": {"storage": [{"name": "redirect", "options": {
                    "baseurl": f"http://127.0.0.1:{files.server_address[1]}"}}]}}) as srv:
            labregistry.seed(srv.host, layout, ["layered"], creds=(USER, PASSWORD))
            result = registry.pull(f"{srv.host}/lab/layered", store=store, credentials=(USER, PASSWORD),
                                   progress=False)
    finally:
        files.shutdown()
        files.server_close()
    assert len(seen) == 4                                # config + 3 layers, all served by the other host
    assert all(auth is None for _, auth in seen)
    assert store.refs() == {result.reference: result.digest}


# ---------------------------------------------------------------------------------------------
# The lab registry (CLI) and cleanup


@pytest.mark.root(False)
def test_registry_start_on_a_port_that_is_no_port_is_one_clear_error():
    result = run_cli("registry", "start", "--port", "99999")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not a TCP port" in result.stderr and "Traceback" not in result.stderr


def test_registry_start_status_stop_and_cleanup_stop_it(tmp_path):
    # its own state directory: `labctl cleanup` here must not stop the session's registries
    lab_state_dir = tmp_path / "state"
    env = dict(os.environ, LABCTL_STATE_DIR=str(lab_state_dir))

    def run_labctl(*args):
        return run_cli(*args, env=env)
    port = labregistry.free_port()
    started = run_labctl("registry", "start", "--port", str(port))
    assert started.returncode == 0, started.stderr
    info = json.loads((lab_state_dir / "registry.json").read_text())
    import psutil
    proc = psutil.Process(info["pid"])
    assert proc.exe().endswith("docker-registry")
    assert any(c.laddr.port == port and c.laddr.ip == "127.0.0.1" for c in (proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")))
    assert (lab_state_dir / "registry" / "storage" / "docker/registry/v2/repositories/lab/multiarch").is_dir()
    assert run_labctl("registry", "status").returncode == 0
    pulled = run_labctl("pull", f"127.0.0.1:{port}/lab/layered")
    assert pulled.returncode == 0, pulled.stderr
    assert run_labctl("registry", "stop").returncode == 0
    assert not psutil.pid_exists(info["pid"]) or psutil.Process(info["pid"]).status() == psutil.STATUS_ZOMBIE
    assert not (lab_state_dir / "registry").exists()
    # `labctl cleanup` stops it too (the journal recorded the process and its storage)
    assert run_labctl("registry", "start", "--port", str(port)).returncode == 0
    pid = json.loads((lab_state_dir / "registry.json").read_text())["pid"]
    assert run_labctl("cleanup").returncode == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (lab_state_dir / "registry").exists()
    assert run_labctl("registry", "status").returncode == 1


# ---------------------------------------------------------------------------------------------
# labctl check 5 (it starts its own registry, runs the exercise, hashes what it wrote)


def test_check_fails_on_the_skeleton():
    result = run_labctl("check", "5")
    assert result.returncode == 1 and "FAIL" in result.stdout and "TODO 1" in result.stdout


def test_check_passes_on_the_reference():
    result = run_labctl("check", "5", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a corrupted blob was refused" in result.stdout


NO_VERIFY = [("    if got_hex != want_hex or size != layer[\"size\"]:", "    if False:")]


def test_check_passes_a_completed_exercise_and_fails_one_that_does_not_verify(tmp_path):
    """The student's step 5 part (the reference part, `labctl lab take 5`), and the same without TODO 3."""
    done = run_labctl("check", "5", env=student_lab(tmp_path / "done", take=[5]))
    assert done.returncode == 0, done.stdout + done.stderr
    unverified = run_labctl("check", "5", env=student_lab(tmp_path / "unverified", take=[5],
                                                          edits={"registry.py": NO_VERIFY}))
    assert unverified.returncode == 1 and "corrupted blob" in unverified.stdout and "TODO 3" in unverified.stdout


def test_step5_demo_pulls_with_token_auth_draws_the_timeline_and_leaves_nothing(lab_state_dir):
    figure = lab_state_dir / "figures" / "05-pull-timeline.png"
    if figure.exists():
        figure.unlink()
    result = run_labctl("step", "5", "--no-explain")
    assert result.returncode == 0, result.stderr
    assert "registry> 401 with WWW-Authenticate" in result.stdout and "kernel>" not in result.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.name.startswith("registry-demo-") for p in (lab_state_dir / "tmp").iterdir())


def test_a_registry_whose_chosen_port_was_taken_starts_on_another_and_is_the_one_that_answers(tmp_path, layout):
    """free_port() answers a port nobody holds *now*; another server may bind it before docker-registry
    does (stop 23's CI: a push got an answer from a server that was not the test's). Here the squatter
    is a real registry on that port: the new one must come up on a port of its own, and the answer it
    waited for must be its own (its PID holds the listener, by /proc/net/tcp)."""
    with labregistry.RegistryServer(tmp_path / "squatter") as squatter:
        late = labregistry.RegistryServer(tmp_path / "late")
        late.port = squatter.port   # what free_port() could have answered just before the squatter bound it
        with late:
            assert late.port != squatter.port
            assert labregistry.listens(late.process.pid, late.port)
            assert not labregistry.listens(late.process.pid, squatter.port)
            labregistry.seed(late.host, layout, ["busybox"])
            assert squatter.answers() and not any(squatter.storage.rglob("data"))   # the push went to `late`
        assert late.process.poll() is not None
