#!/usr/bin/env python3
"""Step 5 exercise: fetch an image manifest and one blob from a registry, and verify the blob's digest.

Usage:         python3 exercise.py REGISTRY REPOSITORY TAG OUTDIR
   e.g.        labctl registry start
               python3 exercise.py 127.0.0.1:5000 lab/layered latest /tmp/out
Writes:        OUTDIR/manifest.json                 the manifest, byte for byte as the registry sent it
               OUTDIR/blobs/sha256/<64 hex digits>   the image's first layer, only if its sha256 matches
Exits 1, keeping no blob, if the registry sends bytes that do not match the digest.
Judge it with: labctl check 5

Complete the lines marked TODO. README.md in this folder explains the protocol. Standard library only.
"""
import hashlib
import json
import os
import sys
import tempfile
import urllib.request

# Ask for an image manifest, OCI or Docker v2 schema 2 (the registry picks what it has).
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def get(url, accept=None):
    """GET url; returns the open response (read it with .read(n)). HTTP errors raise urllib.error.HTTPError."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    return urllib.request.urlopen(request, timeout=30)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    registry, repository, tag, outdir = sys.argv[1:]
    base = f"http://{registry}/v2/{repository}"
    os.makedirs(outdir, exist_ok=True)

    # TODO 1: GET the manifest, f"{base}/manifests/{tag}", sending the Accept header ACCEPT,
    #         and keep its body (bytes) in manifest_bytes.
    manifest_bytes = b""

    if not manifest_bytes:
        sys.exit("TODO 1: fetch the manifest first")
    with open(os.path.join(outdir, "manifest.json"), "wb") as f:
        f.write(manifest_bytes)
    manifest = json.loads(manifest_bytes)
    layer = manifest["layers"][0]                 # {"mediaType": ..., "digest": "sha256:...", "size": N}
    algorithm, expected_hex = layer["digest"].split(":")
    blob_dir = os.path.join(outdir, "blobs", algorithm)
    os.makedirs(blob_dir, exist_ok=True)
    # Write to a temporary file next to the final one: a blob gets its name only once verified.
    fd, tmp = tempfile.mkstemp(dir=blob_dir, prefix=".incoming-")
    sha256 = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as out:
        # TODO 2: GET the blob, f"{base}/blobs/{layer['digest']}", and copy it into `out` in chunks
        #         (response.read(65536) until it returns b""), feeding every chunk to sha256.update()
        #         and adding its length to size.
        pass

    # TODO 3: compare sha256.hexdigest() with expected_hex, and size with layer["size"]. If either differs,
    #         delete the temporary file (os.unlink), print what you got and what you expected, and exit 1.

    # TODO 4: give the verified blob its name: os.rename(tmp, os.path.join(blob_dir, expected_hex))

    print(f"{layer['digest']}: {size} bytes")


if __name__ == "__main__":
    main()
