"""Images (the part of dockerd and containerd that handles images, and the registry): steps 4 and 5.

One concern per module:
  reference.py     `registry/repo:tag@digest` parsed and normalised, as Docker does
  mediatypes.py    the media types of manifests, indexes, configs and layers; platform matching
  distribution.py  the OCI distribution client: auth challenge, manifests, digest-verified blobs (pull)
  auth.py          credentials (`labctl login`) and the bearer-token dance
  labregistry.py   the lab's own registry: Debian's docker-registry, started and seeded locally
  tokenserver.py   a token server for that registry (RS256 JWTs), as Docker Hub's auth service
  ocilayout.py     OCI image layouts written from directories (the lab's images are built here)
  archive.py       OCI layouts, oci-archive and docker-archive read into the store (`labctl import`)
  store.py         the content-addressed store: blobs by digest, refs, unpacked layers, garbage collection
  layers.py        safe layer unpacking: no traversal, no links out, OCI whiteouts to overlay whiteouts
  labimage.py      the embedded busybox root filesystem every step can use without a network
"""
