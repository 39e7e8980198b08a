"""Writes notebooks/05-registry.ipynb (without outputs). Run: python notebooks/make_05_registry.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
    new_markdown_cell("""# Step 5 — pulling an image: the OCI distribution protocol

A registry serves **content-addressed blobs**: the config and the layers of an image, each named by the
sha256 of its bytes, and **manifests** that list them (an **index** lists one manifest per platform).
This notebook starts Debian's docker-registry on 127.0.0.1 with **bearer-token authentication** (as
Docker Hub runs it: a token server issues RS256 JWTs, the registry checks their signature), pushes the
lab's images into it with skopeo, and pulls with `labctl.images.distribution`, the same code as `labctl pull`,
`labctl step 5` and `labctl check 5`. Every request is recorded with a timestamp. Run it as root."""),
    new_code_cell("""import hashlib, json
from labctl.images import store as imagestore, labregistry, distribution as registry
from labctl import state

store = imagestore.ImageStore(state.new_tmpdir("nb5-store-"))   # a private store, removed at the end
results = {}
with labregistry.token_auth_registry(("busybox", "multiarch", "layered")) as (server, credentials, tokens):
    image = f"{server.host}/lab/multiarch"
    results["first pull"] = registry.pull(image, store=store, credentials=credentials, progress=False)
    results["same again"] = registry.pull(image, store=store, credentials=credentials, progress=False)
    results["--platform linux/arm64/v8"] = registry.pull(image, store=store, credentials=credentials,
                                                        platform="linux/arm64/v8", progress=False)
    layered_store = imagestore.ImageStore(state.new_tmpdir("nb5-layered-"))   # empty: all 3 layers come
    layered = registry.pull(f"{server.host}/lab/layered", store=layered_store, credentials=credentials, progress=False)
    issued = list(tokens.issued)
# the registry and the token server are stopped here: everything below reads what was recorded
for name, r in results.items():
    print(f"{name:28} platform={r.platform}  manifest={r.digest[:19]}…  blobs={r.blobs_fetched}  bytes={r.transferred}")"""),
    new_markdown_cell("""## The first pull, request by request
A `401` challenge on `GET /v2/`, a token from the realm it names, then the index, the manifest chosen
for this machine's platform, the config and the layer, each verified against its digest."""),
    new_code_cell("""first = results["first pull"].log
for e in first.events:
    if e.kind != "blob-bytes":
        print(f"{e.t * 1000:7.1f} ms  {e.kind:10} {e.text[:110]}")"""),
    new_markdown_cell("""## What the token says
The JWT's claims (its payload, base64url JSON): who (`sub`), for which registry (`aud`), until when
(`exp`), and what (`access`). The registry refuses a token whose signature does not verify against
the certificate in its `rootcertbundle`, or whose `access` does not cover the repository."""),
    new_code_cell("""token_event = next(e for e in first.events if e.kind == "token")   # the claims labctl received
print(json.dumps(token_event.data["claims"], indent=2))
assert token_event.data["claims"] in issued                            # ...are what the token server signed"""),
    new_markdown_cell("""## The timeline of a pull with three layers
`lab/layered` has three layers, pulled into an empty store: the config first, then the layers in
parallel (four at a time). Above: every HTTP request (from sending it to the response headers) and
every blob (from asking for it to its digest verified). Below: each blob's bytes received over time,
as a share of its size, and the whole image's."""),
    new_code_cell("""from labctl.plots.registry import pull_timeline
fig = pull_timeline(layered.log.events, title=f"labctl pull {server.host}/lab/layered (3 layers)")"""),
    new_markdown_cell("""## Content addressing, checked on disk
Each blob the store holds is named by the sha256 of its bytes: hash the files and compare. The arm64
pull chose the other entry of the index, so its config says `arm64`."""),
    new_code_cell("""for name, r in results.items():
    manifest = store.read_json(r.digest)
    config = store.read_json(manifest["config"]["digest"])
    for d in [manifest["config"]] + manifest["layers"]:
        on_disk = "sha256:" + hashlib.sha256(store.blob_path(d["digest"]).read_bytes()).hexdigest()
        assert on_disk == d["digest"]
    print(f"{name:28} architecture={config['architecture']:6} variant={config.get('variant', '-'):3} "
          f"{len(manifest['layers'])} layer(s), every blob's sha256 matches its name")"""),
    new_code_cell("""import shutil
shutil.rmtree(store.root)
shutil.rmtree(layered_store.root)"""),
]

write_notebook(cells, "05-registry.ipynb")
