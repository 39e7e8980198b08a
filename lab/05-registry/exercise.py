#!/usr/bin/env python3
"""Step 5 exercise: fetch an image manifest and one blob from a registry, and verify the blob's digest.

Usage:         labctl exercise 5 -- REGISTRY REPOSITORY TAG OUTDIR
   e.g.        labctl registry start
               labctl exercise 5 -- 127.0.0.1:5000 lab/layered latest /tmp/out
Writes:        OUTDIR/manifest.json                 the manifest, byte for byte as the registry sent it
               OUTDIR/blobs/sha256/<64 hex digits>   the image's first layer, only if its sha256 matches
Exits 1, keeping no blob, if the registry sends bytes that do not match the digest.
Judge it with: labctl check 5

This file only drives your runtime: the work is in lab/mycontainer/registry.py (its TODOs 1 to 4).
README.md in this folder explains the protocol.
"""
import sys

from mycontainer import registry   # lab/mycontainer/registry.py: `labctl exercise` puts lab/ on the path


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    try:
        digest, size = registry.pull_first_layer(*sys.argv[1:])
    except ValueError as exc:
        sys.exit(f"exercise: {exc}")
    print(f"{digest}: {size} bytes")


if __name__ == "__main__":
    main()
