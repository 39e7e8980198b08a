"""Part 5 of mycontainer (step 5): an image manifest and a layer from a registry, verified by digest.
Standard library only.

Complete the TODOs; the rest is given. README.md in lab/05-registry explains the protocol.
"""
import hashlib
import json
import os
import tempfile
import urllib.request

#: Ask for an image manifest, OCI or Docker v2 schema 2 (the registry picks what it has).
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def fetch_manifest(base, tag):
    """The manifest of `tag`, as the bytes the registry sent (base: http://HOST/v2/REPOSITORY)."""
    # TODO 1: return the body of the registry's answer to a GET of the manifest endpoint, byte for
    #         byte (its sha256 is the manifest's digest: do not decode and re-encode it). The endpoint
    #         and the Accept header a client must send: the OCI distribution spec, "Pulling manifests"
    #         (README.md in lab/05-registry); `get` above does the HTTP.
    return b""


def fetch_blob(base, digest, out):
    """Copy the blob `digest` into the open binary file `out`; returns (its sha256 in hex, its size)."""
    # TODO 2: afterwards `out` holds the blob's bytes, and you return the sha256 (hex) and the length
    #         of exactly what you wrote. The endpoint: the distribution spec, "Pulling blobs". A layer
    #         can be large: read the response in chunks until it returns no more (io.RawIOBase.read),
    #         feeding each chunk to one hashlib.sha256 object (hashlib docs, "update").
    return "", 0


def keep_if_verified(tmp, final, got_hex, size, layer):
    """Give the downloaded blob `tmp` its name `final` only if it is what `layer` (a manifest's
    {"digest": "sha256:HEX", "size": N}) says; else delete it and raise ValueError saying why."""
    # TODO 3: when the digest or the size differs from `layer`'s, afterwards `tmp` no longer exists and a
    #         ValueError says what came and what was expected: a blob whose digest is wrong is never
    #         kept (the digest is the blob's name and its only guarantee; os.unlink).
    # TODO 4: otherwise, afterwards the blob is at `final` and `tmp` is gone, in one step that
    #         cannot leave half a file under the final name (rename(2) within one directory).
    pass


# ---------------------------------------------------------------------------------------------
# Given: the same in the skeleton and the reference.

def get(url, accept=None):
    """GET url; returns the open response (read it with .read(n)). HTTP errors raise urllib.error.HTTPError."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    return urllib.request.urlopen(request, timeout=30)


def pull_first_layer(registry, repository, tag, outdir):
    """Write OUTDIR/manifest.json and OUTDIR/blobs/sha256/HEX (the first layer, once verified);
    returns (the layer's digest, its size)."""
    base = f"http://{registry}/v2/{repository}"
    os.makedirs(outdir, exist_ok=True)
    manifest_bytes = fetch_manifest(base, tag)
    if not manifest_bytes:
        raise ValueError("fetch_manifest returned nothing (TODO 1)")
    with open(os.path.join(outdir, "manifest.json"), "wb") as f:
        f.write(manifest_bytes)
    layer = json.loads(manifest_bytes)["layers"][0]   # {"mediaType": ..., "digest": "sha256:...", "size": N}
    algorithm, hex_digest = layer["digest"].split(":")
    blob_dir = os.path.join(outdir, "blobs", algorithm)
    os.makedirs(blob_dir, exist_ok=True)
    # Written to a temporary file next to the final one: a blob gets its name only once verified.
    fd, tmp = tempfile.mkstemp(dir=blob_dir, prefix=".incoming-")
    with os.fdopen(fd, "wb") as out:
        got_hex, size = fetch_blob(base, layer["digest"], out)
    keep_if_verified(tmp, os.path.join(blob_dir, hex_digest), got_hex, size, layer)
    return layer["digest"], size
