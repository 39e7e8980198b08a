"""Step 5: registry pull. The demo, the check, and the reference solution of lab/05-registry/exercise.py."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from labctl.steps import checking
from labctl.images import store as imagestore, labregistry, mediatypes, distribution as registry
from labctl import state, ui
from labctl.errors import CheckFailed, LabError
from labctl.images.pulllog import Event, PullLog

EXPLANATION = """
An image on a registry is a handful of **content-addressed blobs**: each is named by the sha256 of
its bytes, so whoever downloads one can tell whether it got exactly what was published.
`docker pull` speaks the **OCI distribution protocol**, plain HTTP:

| request | answer |
|---|---|
| `GET /v2/` | `200`, or `401` with `WWW-Authenticate: Bearer realm=...,service=...,scope=...` |
| `GET realm?service=...&scope=repository:NAME:pull` | a signed token (JWT) saying what you may pull |
| `GET /v2/NAME/manifests/TAG` with `Accept:` | a **manifest** (config + layers), or an **index** with one manifest per platform |
| `GET /v2/NAME/blobs/sha256:...` | the config (JSON) and each layer (a gzipped tar), checked against its digest |

An index is resolved to this machine's platform (`uname -m` x86_64 is `linux/amd64`). Layers are
downloaded in parallel and **verified as they stream in**; nothing is kept unless the digest and
size match, and the tag is pointed at the manifest only when every blob is in: a pull cut short
leaves no half image. A second pull of the same digest transfers nothing.
The demo runs Debian's docker-registry on 127.0.0.1 with token authentication, like Docker Hub.
"""


def _narrate(event: Event) -> None:
    kind, text = event.kind, event.text
    stamp = f"[dim]{event.t * 1000:7.1f} ms[/dim]"
    if kind == "request":
        ui.say(f"{stamp} → {text}" + (f"  [dim](Authorization: {event.data['auth']})[/dim]"
                                      if event.data.get("auth") else ""))
    elif kind == "response":
        colour = "red" if event.data["status"] >= 400 else "green"
        ui.say(f"{stamp} ← [{colour}]{text.split(' ← ')[0]}[/{colour}]")
    elif kind == "token":
        claims = event.data.get("claims", {})
        ui.shown("token server", f"token: iss={claims.get('iss')} sub={claims.get('sub')} aud={claims.get('aud')} "
                 f"access={json.dumps(claims.get('access'))} (RS256 JWT, the registry checks its signature)")
    elif kind in ("challenge", "manifest"):
        ui.shown("registry", text)
    elif kind == "platform":
        ui.shown("index", text)
    elif kind in ("cached", "retry"):
        ui.shown("labctl", text)
    elif kind == "blob-done":
        ui.ok(text)


def demo() -> None:
    ui.say("Starting docker-registry on 127.0.0.1 with token auth (a token server issuing RS256 JWTs), "
           "seeded with the lab's busybox image, a two-platform index and a 3-layer image...")
    with labregistry.token_auth_registry(("busybox", "multiarch", "layered")) as (server, credentials, tokens):
        image = f"{server.host}/lab/multiarch"
        ui.say(f"\n[bold]labctl pull {image}[/bold] as {credentials[0]!r}, one request at a time:")
        store = imagestore.ImageStore(state.new_tmpdir("step5-store-"))
        try:
            log = PullLog(narrate=_narrate)
            result = registry.pull(image, store=store, credentials=credentials, log=log, progress=False)
            manifest = store.read_json(result.digest)
            rows = [("config", manifest["config"]["digest"], manifest["config"]["size"])] + \
                   [(f"layer {i + 1}", l["digest"], l["size"]) for i, l in enumerate(manifest["layers"])]
            checked = []
            for what, digest, size in rows:   # read back from the store's files: sha256 of what is on disk
                data = store.blob_path(digest).read_bytes()
                checked.append((what, digest[:23] + "…", size,
                                "yes" if "sha256:" + hashlib.sha256(data).hexdigest() == digest else "NO"))
            ui.table(("blob", "digest", "bytes", "sha256 of the stored file matches"), checked,
                     title=f"{result.reference} for {result.platform}: {result.digest[:23]}…")
            ui.say("\nPulling the same image again:")
            again = registry.pull(image, store=store, credentials=credentials, progress=False,
                                  log=PullLog(narrate=_narrate))
            ui.ok(f"second pull: {again.blobs_fetched} blobs, {again.transferred} bytes transferred")
            layered = f"{server.host}/lab/layered"
            empty = imagestore.ImageStore(state.new_tmpdir("step5-layered-"))   # nothing shared: every layer comes
            try:
                three = registry.pull(layered, store=empty, credentials=credentials, progress=False)
            finally:
                shutil.rmtree(empty.root, ignore_errors=True)
            ui.ok(f"{layered} into an empty store: {three.blobs_fetched} blobs, {three.transferred} bytes, "
                  "its 3 layers fetched in parallel")
            figure = state.subdir("figures") / "05-pull-timeline.png"
            from labctl.plots.registry import pull_timeline
            pull_timeline(three.log.events, figure, title=f"labctl pull {layered} (3 layers)")
            ui.ok(f"timeline of that pull: {figure}")
        finally:
            shutil.rmtree(store.root, ignore_errors=True)
    ui.ok("registry and token server stopped, their storage removed")
    ui.say("The lab registry serves the same images without a login: `labctl registry start`, then "
           "`labctl pull 127.0.0.1:5000/lab/layered` (or `.../lab/multiarch --platform linux/arm64/v8`).")


# ---------------------------------------------------------------------------------------------
# The check: the student's program fetches a manifest and its first layer from a registry the check
# starts; it is judged by the files it wrote (their sha256 against the registry's digests), and by what
# it does when the registry serves a corrupted blob.


def check(command: list[str]) -> list[str]:
    verified: list[str] = []
    work = state.new_tmpdir("check5-")
    try:
        with labregistry.RegistryServer(work / "registry") as server:
            layout = labregistry.write_lab_layout(work / "layout")
            labregistry.seed(server.host, layout, ["layered"])
            # What the registry itself says: the manifest digest (Docker-Content-Digest) and its layers.
            client = registry.Client(registry.references.parse(f"{server.host}/lab/layered"))
            manifest_bytes, _, manifest_digest = client.manifest("latest")
            client.close()
            layer = json.loads(manifest_bytes)["layers"][0]
            out = work / "out-1"
            status, output = checking.run_to_end(command + [server.host, "lab/layered", "latest", str(out)],
                                                 timeout=60)
            if status != 0 and "404" in output and not (out / "manifest.json").exists():
                _explain_404(server.host, "lab/layered", "latest")
            last = output.splitlines()[-1] if output else "(no output)"
            checking.expect(status == 0, f"the exercise exited with status {status}: {last}",
                            "run it by hand: labctl registry start; labctl exercise 5 -- 127.0.0.1:5000 lab/layered latest /tmp/out",
                            verified, "the exercise ran and exited with status 0")
            written = out / "manifest.json"
            checking.expect(written.exists(), "the exercise wrote no manifest.json",
                            "GET /v2/REPOSITORY/manifests/TAG with the Accept header, save the body (TODO 1)",
                            verified, "manifest.json written")
            got = imagestore.sha256_digest(written.read_bytes())
            checking.expect(got == manifest_digest, f"manifest.json has sha256 {got}, the registry's manifest is "
                            f"{manifest_digest}", "save the response body unchanged (bytes, not re-encoded JSON)",
                            verified, f"manifest.json is the registry's manifest ({manifest_digest[:19]}…)")
            blob = out / "blobs" / "sha256" / layer["digest"].split(":")[1]
            checking.expect(blob.exists(), f"no blob at {blob.relative_to(out)} (the first layer)",
                            "GET /v2/REPOSITORY/blobs/DIGEST and write it under blobs/sha256/HEX (TODO 2-4)",
                            verified, f"the first layer was written to {blob.relative_to(out)}")
            data = blob.read_bytes()
            actual = imagestore.sha256_digest(data)
            checking.expect(actual == layer["digest"] and len(data) == layer["size"],
                            f"the blob's sha256 is {actual} ({len(data)} bytes), the manifest says "
                            f"{layer['digest']} ({layer['size']} bytes)",
                            "write exactly the bytes the registry sent", verified,
                            f"the blob's sha256 and size match the manifest ({len(data)} bytes)")
            # Now the registry serves corrupted bytes for that layer: the exercise must notice.
            stored = server.blob_file(layer["digest"])
            corrupted = bytearray(stored.read_bytes())
            corrupted[len(corrupted) // 2] ^= 0xFF
            stored.write_bytes(bytes(corrupted))
            out2 = work / "out-2"
            status, output = checking.run_to_end(command + [server.host, "lab/layered", "latest", str(out2)],
                                                 timeout=60)
            left = [p for p in (out2 / "blobs").rglob("*") if p.is_file()] if (out2 / "blobs").exists() else []
            checking.expect(status not in (0, None) and not left,
                            "with a corrupted blob on the registry the exercise " +
                            (f"kept {', '.join(str(p.relative_to(out2)) for p in left)}" if left else
                             f"exited with status {status}"),
                            "compare sha256 of what you received with the digest; on mismatch delete the file "
                            "and exit non-zero (TODO 3)", verified,
                            f"a corrupted blob was refused (exit status {status}, nothing kept)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return verified


def _explain_404(host: str, repository: str, tag: str) -> None:
    """An exercise that got a 404: if this registry answers 404 to the manifest request without an
    Accept header (asked now, live), that is what the exercise ran into."""
    import urllib.error
    import urllib.request
    url = f"http://{host}/v2/{repository}/manifests/{tag}"
    try:
        urllib.request.urlopen(url, timeout=10).close()
        return
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            return
        try:
            said = json.loads(exc.read())["errors"][0]
            said = f"{said['code']}: {said['message']}"
        except (ValueError, KeyError, IndexError, TypeError):
            said = "(no error body)"
    except OSError:
        return
    raise CheckFailed(f"the exercise got HTTP 404 although the manifest is there: asked without an Accept header, "
                   f"this registry answers GET {url} with 404 {said}",
                   "send the Accept header (ACCEPT: the OCI and Docker v2 manifest types) with the manifest "
                   "request (TODO 1): the README's \"Accept header matters\" paragraph explains why")


def reference(argv: list[str]) -> int:
    """Reference solution: `REGISTRY REPOSITORY TAG OUTDIR`, same contract as the exercise."""
    if len(argv) != 4:
        print("usage: python -m labctl.steps.s05_registry REGISTRY REPOSITORY TAG OUTDIR", file=sys.stderr)
        return 2
    host, repository, tag, outdir = argv
    out = Path(outdir)
    client = registry.Client(registry.references.parse(f"{host}/{repository}:{tag}"))
    try:
        body, media_type, digest = client.manifest(tag)
        if media_type in mediatypes.INDEX_TYPES:
            entry = mediatypes.choose_manifest(json.loads(body), mediatypes.host())
            body, media_type, digest = client.manifest(entry["digest"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_bytes(body)
        layer = json.loads(body)["layers"][0]
        store = imagestore.ImageStore(out)   # blobs/sha256/<hex>, written only once verified
        client.fetch_blob(store, layer, "layer 1")
        shutil.rmtree(out / "incoming", ignore_errors=True)
        print(f"{layer['digest']}: {layer['size']} bytes, sha256 verified")
        return 0
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
