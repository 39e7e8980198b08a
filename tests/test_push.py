"""Step 12: `labctl push`, against the real docker-registry (Debian's distribution 2.8) on 127.0.0.1.

What the tests believe: the registry's own access log (every request it served: HEAD, POST with or
without ?mount=, PATCH, PUT ...&digest=), what skopeo reads back from the registry, what `labctl pull`
stores from it, and the token server's issued claims. PushResult is never the evidence.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest

from conftest import SESSION_PIDS
from helpers import run_labctl
from labctl.images import archive, distribution, labregistry, ocilayout, push, store as imagestore
from labctl.images.mediatypes import MEDIA_OCI_MANIFEST
from labctl.images.tokenserver import TokenServer
from test_daemon import DOCKER, daemon, docker  # noqa: F401  (daemon: test_daemon's module fixture)

pytestmark = pytest.mark.root

USER, PASSWORD = "student-push", "push it real good"
MiB = 1 << 20


def _layer(name: str, size: int = 4096, seed: int = 0) -> ocilayout.Layer:
    data = (name.encode() * (size // len(name) + 1))[:size] if not seed else os.urandom(size)
    return ocilayout.Layer(ocilayout.tar_entries([ocilayout.FileEntry(name, data=data)]), gzip=not seed)


BASE = [_layer("base-one", 300_000), _layer("base-two", 200_000)]
IMAGES = {"app-a": ocilayout.Image(BASE + [_layer("only-in-a")], config={"Cmd": ["a"]}),
          "app-b": ocilayout.Image(BASE + [_layer("only-in-b")], config={"Cmd": ["b"]})}


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return ocilayout.write_layout(tmp_path_factory.mktemp("push-layout"), IMAGES)


def _serve(tmp_path_factory, name, **kw):
    """A registry with its access log on, journal records in a state directory of its own (as
    test_registry's: a residue cleanup must not stop it)."""
    saved = os.environ["LABCTL_STATE_DIR"]
    os.environ["LABCTL_STATE_DIR"] = str(tmp_path_factory.mktemp(f"{name}-state"))
    try:
        server = labregistry.RegistryServer(tmp_path_factory.mktemp(name) / "reg",
                                            extra={"log": {"level": "error", "accesslog": {"disabled": False}}},
                                            **kw).start()
    finally:
        os.environ["LABCTL_STATE_DIR"] = saved
    SESSION_PIDS.add(server.process.pid)
    return server


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server = _serve(tmp_path_factory, "push-anon")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bearer(tmp_path_factory):
    tokens = TokenServer(users={USER: PASSWORD}, anonymous_pull=True).start()   # pull for all, push for users
    server = _serve(tmp_path_factory, "push-token", auth=tokens.registry_auth_config(tmp_path_factory.mktemp("tok")))
    server.tokens = tokens
    yield server
    server.stop()
    tokens.stop()


@pytest.fixture
def store(tmp_path, layout):
    s = imagestore.ImageStore(tmp_path / "store")
    archive.import_layout(s, layout)            # localhost/app-a:latest, localhost/app-b:latest
    return s


@pytest.fixture(autouse=True)
def forget_locations():
    """Each test starts with no recorded blob locations, so what one test pushed is not mounted in the next."""
    from labctl import state
    (state.state_dir() / "blob-locations.json").unlink(missing_ok=True)


def requests(server, since: int = 0) -> list[tuple[str, str, int]]:
    """(method, path with query, status) of every request in the registry's access log."""
    out = []
    for line in (server.root / "registry.log").read_text(errors="replace").splitlines():
        m = re.search(r'"([A-Z]+) (\S+) HTTP/1\.1" (\d+) ', line)
        if m:
            out.append((m.group(1), urllib.parse.unquote(m.group(2)), int(m.group(3))))
    return out[since:]


def uploaded(reqs, repo: str) -> set[str]:
    """The digests whose upload the registry completed in repo (PUT .../blobs/uploads/...?digest= 201)."""
    return {re.search(r"digest=(sha256:[0-9a-f]{64})", p).group(1) for m, p, s in reqs
            if m == "PUT" and p.startswith(f"/v2/{repo}/blobs/uploads/") and s == 201}


def blob_digests(image: ocilayout.Image) -> set[str]:
    manifest = json.loads(image.manifest_blob())
    return {d["digest"] for d in manifest["layers"] + [manifest["config"]]}


def skopeo_inspect(host: str, name: str, *creds: str) -> dict:
    argv = ["skopeo", "inspect", "--tls-verify=false", *(["--creds", ":".join(creds)] if creds else []),
            f"docker://{host}/{name}"]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def manifest_digest(server, repo: str, tag: str) -> str | None:
    """What the registry's tag names now (HEAD of the manifest), or None if the tag does not exist."""
    import http.client
    conn = http.client.HTTPConnection(server.host)
    conn.request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MEDIA_OCI_MANIFEST})
    resp = conn.getresponse()
    conn.close()
    return resp.headers.get("Docker-Content-Digest") if resp.status == 200 else None


# ---------------------------------------------------------------------------------------------


def test_pushed_image_is_read_by_skopeo_and_pulls_back_byte_identical(registry, store, tmp_path):
    result = push.push("localhost/app-a", f"{registry.host}/t1/app:1", progress=False, store=store)
    seen = skopeo_inspect(registry.host, "t1/app:1")
    assert seen["Digest"] == store.resolve("localhost/app-a:latest")
    assert seen["Layers"] == [d["digest"] for d in json.loads(IMAGES["app-a"].manifest_blob())["layers"]]
    back = imagestore.ImageStore(tmp_path / "back")
    pulled = distribution.pull(f"{registry.host}/t1/app:1", store=back, progress=False)
    assert pulled.digest == seen["Digest"] == result.digest
    for digest in blob_digests(IMAGES["app-a"]) | {pulled.digest}:
        assert back.read_blob(digest) == store.read_blob(digest)


def test_second_push_sharing_layers_uploads_only_the_missing_blobs(registry, store):
    push.push("localhost/app-a", f"{registry.host}/t2/app:a", progress=False, store=store)
    assert uploaded(requests(registry), "t2/app") == blob_digests(IMAGES["app-a"])
    since = len(requests(registry))
    push.push("localhost/app-b", f"{registry.host}/t2/app:b", progress=False, store=store)
    reqs = requests(registry, since)
    missing = blob_digests(IMAGES["app-b"]) - blob_digests(IMAGES["app-a"])
    assert len(missing) == 2                                     # app-b's own layer and its config
    assert uploaded(reqs, "t2/app") == missing
    heads = {p.rsplit("/", 1)[1] for m, p, s in reqs if m == "HEAD" and s == 200}
    assert heads == blob_digests(IMAGES["app-a"]) & blob_digests(IMAGES["app-b"])   # the base: skipped
    assert [(m, s) for m, p, s in reqs if "/manifests/" in p] == [("PUT", 201)]
    assert reqs[-1][0] == "PUT" and reqs[-1][1] == "/v2/t2/app/manifests/b"         # the manifest last


def test_push_to_another_repository_mounts_the_blobs_it_holds(registry, store):
    push.push("localhost/app-a", f"{registry.host}/t3/first:1", progress=False, store=store)
    since = len(requests(registry))
    push.push("localhost/app-a", f"{registry.host}/t3/second:1", progress=False, store=store)
    reqs = requests(registry, since)
    mounts = {re.search(r"mount=(sha256:[0-9a-f]{64})&from=t3/first$", p).group(1) for m, p, s in reqs
              if m == "POST" and "mount=" in p and s == 201}
    assert mounts == blob_digests(IMAGES["app-a"])
    assert [r for r in reqs if r[0] in ("PATCH", "PUT") and "/blobs/" in r[1]] == []
    assert skopeo_inspect(registry.host, "t3/second:1")["Digest"] == store.resolve("localhost/app-a:latest")


def test_large_blob_goes_in_chunks_and_the_registry_checks_the_digest(registry, tmp_path):
    big = ocilayout.Image([_layer("big", 3 * MiB + 123, seed=1)])
    s = imagestore.ImageStore(tmp_path / "store")
    archive.import_layout(s, ocilayout.write_layout(tmp_path / "layout", {"big": big}))
    since = len(requests(registry))
    push.push("localhost/big", f"{registry.host}/t4/big", progress=False, store=s,
              monolithic_max=MiB, chunk_size=MiB)
    reqs = requests(registry, since)
    assert [s for m, p, s in reqs if m == "PATCH"] == [202] * 4
    back = imagestore.ImageStore(tmp_path / "back")
    pulled = distribution.pull(f"{registry.host}/t4/big", store=back, progress=False)
    for digest in blob_digests(big):
        assert back.read_blob(digest) == s.read_blob(digest)
    assert pulled.digest == manifest_digest(registry, "t4/big", "latest")


def test_a_blob_that_does_not_match_its_digest_is_refused_by_the_registry_and_no_tag_moves(registry, tmp_path):
    image = ocilayout.Image([_layer("corrupt", 2 * MiB, seed=1)])     # pushed nowhere before: no mount
    s = imagestore.ImageStore(tmp_path / "store")
    archive.import_layout(s, ocilayout.write_layout(tmp_path / "layout", {"corrupt": image}))
    victim = json.loads(image.manifest_blob())["layers"][0]["digest"]
    data = bytearray(s.blob_path(victim).read_bytes())
    data[MiB + 7] ^= 0xFF
    s.blob_path(victim).write_bytes(bytes(data))
    for monolithic_max in (MiB, 16 * MiB):                             # chunked, then monolithic
        since = len(requests(registry))
        with pytest.raises(push.RegistryError, match="answered 400"):
            push.push("localhost/corrupt", f"{registry.host}/t5/corrupt", progress=False, store=s,
                      monolithic_max=monolithic_max, chunk_size=MiB)
        assert ("PUT", 400) in [(m, st) for m, p, st in requests(registry, since) if "/blobs/uploads/" in p]
    assert manifest_digest(registry, "t5/corrupt", "latest") is None



def test_a_stale_location_gets_202_and_the_blob_is_uploaded_into_that_session(registry, store):
    """The registry forgot the blob in the repository it would be mounted from (DELETE of its link there):
    it answers the mount with 202 and an upload session, which the push then uses."""
    import http.client
    push.push("localhost/app-a", f"{registry.host}/t9/first", progress=False, store=store)
    manifest = json.loads(IMAGES["app-a"].manifest_blob())
    gone = manifest["layers"][-1]["digest"]
    conn = http.client.HTTPConnection(registry.host)
    conn.request("DELETE", f"/v2/t9/first/blobs/{gone}")
    assert conn.getresponse().status == 202
    conn.close()
    since = len(requests(registry))
    push.push("localhost/app-a", f"{registry.host}/t9/second", progress=False, store=store)
    reqs = requests(registry, since)
    answers = {p.split("mount=")[1].split("&")[0]: s for m, p, s in reqs if m == "POST" and "mount=" in p}
    assert answers == {d: 202 if d == gone else 201 for d in blob_digests(IMAGES["app-a"])}
    assert uploaded(reqs, "t9/second") == {gone}
    assert skopeo_inspect(registry.host, "t9/second")["Layers"][-1] == gone


class CuttingProxy:
    """A fake network fault (the one fake here): a TCP relay to the real registry that closes the first
    `cuts` connections which carry more than `cut_after` bytes from the client, halfway through a body."""

    def __init__(self, upstream: int, cut_after: int, cuts: int = 1):
        import socket
        import threading
        self.upstream, self.cut_after, self.cuts = upstream, cut_after, cuts
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.relayed = []   # every connection it made or accepted: closed with it, so none outlives the test
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self.relayed += [client, upstream]
            for args in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src, dst, from_client):
        import socket
        sent = 0
        try:
            while data := src.recv(65536):
                sent += len(data)
                if from_client and sent > self.cut_after and self.cuts > 0:
                    self.cuts -= 1
                    for s in (src, dst):
                        s.shutdown(socket.SHUT_RDWR)
                    return
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        import contextlib
        import socket
        self.sock.close()
        for s in self.relayed:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("monolithic_max", [16 * MiB, MiB])
def test_a_connection_cut_halfway_through_an_upload_restarts_that_blob(registry, tmp_path, monolithic_max):
    image = ocilayout.Image([_layer("cut", 4 * MiB, seed=1)])
    s = imagestore.ImageStore(tmp_path / "store")
    archive.import_layout(s, ocilayout.write_layout(tmp_path / "layout", {"cut": image}))
    proxy = CuttingProxy(registry.port, cut_after=2 * MiB)
    try:
        since = len(requests(registry))
        result = push.push("localhost/cut", f"127.0.0.1:{proxy.port}/t10/cut{monolithic_max}", progress=False,
                           store=s, monolithic_max=monolithic_max, chunk_size=MiB)
    finally:
        proxy.close()
    assert proxy.cuts == 0                                        # the cut happened
    reqs = requests(registry, since)
    layer = json.loads(image.manifest_blob())["layers"][0]["digest"]
    assert uploaded(reqs, f"t10/cut{monolithic_max}") == blob_digests(image)
    assert sum(1 for m, p, st in reqs if m == "POST" and "/blobs/uploads/" in p) == 3   # layer twice, config
    back = imagestore.ImageStore(tmp_path / "back")
    pulled = distribution.pull(f"{registry.host}/t10/cut{monolithic_max}", store=back, progress=False)
    assert pulled.digest == result.digest and back.read_blob(layer) == s.read_blob(layer)


# ---------------------------------------------------------------------------------------------
# Interrupted pushes, the CLI, token authentication


@pytest.fixture(scope="module")
def big_in_store(tmp_path_factory, layout):
    """app-a and an image with one 96 MiB layer of random bytes, in the tests' default image store
    (the one `labctl push` uses): above push.MONOLITHIC_MAX, it goes in 6 PATCHes of 16 MiB, which take
    a while even over loopback."""
    big = ocilayout.Image([_layer("big", 96 * MiB, seed=1)])
    store = imagestore.ImageStore()
    archive.import_layout(store, ocilayout.write_layout(tmp_path_factory.mktemp("big"), {"big-push": big}))
    archive.import_layout(store, layout, "app-a")
    return store


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_interrupted_push_leaves_the_tag_where_it_was_and_a_rerun_completes(registry, big_in_store, sig):
    repo = f"t6/{sig.name.lower()}"
    old = push.push("localhost/app-a", f"{registry.host}/{repo}", progress=False, store=big_in_store).digest
    since = len(requests(registry))
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "push", "localhost/big-push", f"{registry.host}/{repo}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(m == "PATCH" for m, p, s in requests(registry, since)) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    os.kill(proc.pid, sig)                                 # mid-upload: one chunk of six is in
    started = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert not any("/manifests/" in p for m, p, s in requests(registry, since)), "the push was not interrupted"
    assert manifest_digest(registry, repo, "latest") == old
    if sig != signal.SIGKILL:                              # Ctrl-C, SIGTERM: stopped cleanly, at once, in one line
        assert proc.returncode == 130 and time.monotonic() - started < 3
        assert len(err.strip().splitlines()) == 1, err
    again = run_labctl("push", "-q", "localhost/big-push", f"{registry.host}/{repo}")
    assert again.returncode == 0, again.stderr
    new = big_in_store.resolve("localhost/big-push:latest")
    assert again.stdout.strip() == new == manifest_digest(registry, repo, "latest")


def test_cli_push_says_what_travelled_and_refuses_bad_input_in_one_line(registry, big_in_store):
    ok = run_labctl("push", "localhost/app-a", f"{registry.host}/t7/app:v1")
    assert ok.returncode == 0, ok.stderr
    assert skopeo_inspect(registry.host, "t7/app:v1")["Digest"] == big_in_store.resolve("localhost/app-a:latest")
    short = run_labctl("push", "app-a", f"{registry.host}/t7/short")   # the name `labctl run` takes: localhost/app-a:latest
    assert short.returncode == 0, short.stderr
    assert skopeo_inspect(registry.host, "t7/short:latest")["Digest"] == big_in_store.resolve("localhost/app-a:latest")
    for argv, words in [(["localhost/no-such-image", f"{registry.host}/t7/x"], "no image"),
                        (["localhost/app-a"], "names no registry"),
                        (["localhost/app-a", "127.0.0.1:1/t7/x"], "127.0.0.1:1")]:
        bad = run_labctl("push", *argv)
        assert bad.returncode == 2 and words in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_token_auth_push_needs_login_and_mounts_with_a_pull_scope_on_the_source(bearer, big_in_store):
    anonymous = run_labctl("push", "localhost/app-a", f"{bearer.host}/student/app")
    assert anonymous.returncode == 2 and len(anonymous.stderr.strip().splitlines()) == 1, anonymous.stderr
    assert "refused to let you push" in anonymous.stderr and f"labctl login {bearer.host}" in anonymous.stderr
    assert manifest_digest_with_token(bearer, "student/app") is None
    login = run_labctl("login", bearer.host, "--username", USER, "--password-stdin", input=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    try:
        pushed = run_labctl("push", "localhost/app-a", f"{bearer.host}/student/app")
        assert pushed.returncode == 0, pushed.stderr
        issued = len(bearer.tokens.issued)
        since = len(requests(bearer))
        again = run_labctl("push", "localhost/app-a", f"{bearer.host}/student/copy")
        assert again.returncode == 0, again.stderr
    finally:
        (imagestore.state.state_dir() / "auth.json").unlink()
    access = bearer.tokens.issued[issued]["access"]
    assert {"type": "repository", "name": "student/copy", "actions": ["pull", "push"]} in access
    assert {"type": "repository", "name": "student/app", "actions": ["pull"]} in access
    mounts = [p for m, p, s in requests(bearer, since) if m == "POST" and "from=student/app" in p and s == 201]
    assert len(mounts) == len(blob_digests(IMAGES["app-a"]))
    expected = big_in_store.resolve("localhost/app-a:latest")
    assert skopeo_inspect(bearer.host, "student/copy:latest", USER, PASSWORD)["Digest"] == expected


def manifest_digest_with_token(server, repo: str) -> str | None:
    access = [{"type": "repository", "name": repo, "actions": ["pull"]}]
    token = server.tokens.issue(USER, server.tokens.service, access)
    import http.client
    conn = http.client.HTTPConnection(server.host)
    conn.request("HEAD", f"/v2/{repo}/manifests/latest",
                 headers={"Accept": MEDIA_OCI_MANIFEST, "Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    conn.close()
    return resp.headers.get("Docker-Content-Digest") if resp.status == 200 else None


# ---------------------------------------------------------------------------------------------
# The real `docker push`, through labctl's daemon


@pytest.mark.skipif(not os.path.exists(DOCKER), reason="needs Debian's docker CLI (apt-get install docker.io)")
def test_docker_push_through_the_daemon_draws_docker_progress_and_skips_what_exists(daemon, registry):
    target = f"{registry.host}/t8/busybox"
    assert docker(daemon, "tag", "busybox", target).returncode == 0
    since = len(requests(registry))
    first = docker(daemon, "push", target)
    assert first.returncode == 0, first.stderr
    assert f"The push refers to repository [{target}]" in first.stdout and "Pushed" in first.stdout
    expected = imagestore.ImageStore().resolve(f"{target}:latest")
    assert f"latest: digest: {expected}" in first.stdout
    assert skopeo_inspect(registry.host, "t8/busybox:latest")["Digest"] == expected
    assert uploaded(requests(registry, since), "t8/busybox")                    # the registry saw uploads
    since = len(requests(registry))
    again = docker(daemon, "push", target)
    assert again.returncode == 0 and "Layer already exists" in again.stdout, again.stderr + again.stdout
    assert uploaded(requests(registry, since), "t8/busybox") == set()          # and now none
    missing = docker(daemon, "push", f"{registry.host}/t8/absent")
    assert missing.returncode == 1 and "does not exist locally" in missing.stderr + missing.stdout
    assert docker(daemon, "rmi", target).returncode == 0


@pytest.mark.skipif(not os.path.exists(DOCKER), reason="needs Debian's docker CLI (apt-get install docker.io)")
def test_docker_login_then_docker_push_to_a_token_auth_registry_through_the_daemon(daemon, bearer):
    target = f"{bearer.host}/student/dockerpushed"
    assert docker(daemon, "tag", "busybox", target).returncode == 0
    try:
        refused = docker(daemon, "push", target)                       # no login: pull-only token
        assert refused.returncode == 1 and "refused to let you push" in refused.stderr + refused.stdout
        wrong = docker(daemon, "login", bearer.host, "-u", USER, "--password-stdin", input="wrong\n")
        assert wrong.returncode == 1 and "refused the username" in wrong.stderr
        login = docker(daemon, "login", bearer.host, "-u", USER, "--password-stdin", input=PASSWORD + "\n")
        assert login.returncode == 0 and "Login Succeeded" in login.stdout, login.stderr
        issued = len(bearer.tokens.issued)
        pushed = docker(daemon, "push", target)
        assert pushed.returncode == 0, pushed.stderr + pushed.stdout
    finally:
        docker(daemon, "logout", bearer.host)
        docker(daemon, "rmi", target)
    assert bearer.tokens.issued[issued]["sub"] == USER
    assert {"type": "repository", "name": "student/dockerpushed", "actions": ["pull", "push"]} \
        in bearer.tokens.issued[issued]["access"]
    assert skopeo_inspect(bearer.host, "student/dockerpushed", USER, PASSWORD)["Digest"] == \
        imagestore.ImageStore().resolve("localhost/busybox:latest")


def test_labctl_push_through_the_daemon_with_host(daemon, registry):
    """`labctl --host unix:///... push NAME TARGET`: the daemon tags NAME as TARGET, then pushes it."""
    target = f"{registry.host}/t11/viahost:v2"
    done = run_labctl("--host", f"unix://{daemon}", "push", "-q", "localhost/busybox", target)
    assert done.returncode == 0, done.stderr
    expected = imagestore.ImageStore().resolve("localhost/busybox:latest")
    assert done.stdout.strip() == expected == skopeo_inspect(registry.host, "t11/viahost:v2")["Digest"]
    assert run_labctl("rmi", target).returncode == 0
