"""Images (the part of dockerd and containerd that handles images, and the registry): steps 4, 5 and 12.

One concern per module:
  reference.py     `registry/repo:tag@digest` parsed and normalised, as Docker does
  mediatypes.py    the media types of indexes, manifests, configs and layers (OCI and Docker names);
                   platforms, and choosing this machine's manifest from an index
  distribution.py  the OCI distribution client (`labctl pull`): manifests, digest-verified blobs, retries
  push.py          the upload half (`labctl push`): HEAD each blob, cross-repository mounts, monolithic or
                   chunked uploads checked by the registry, the manifest last
  bloblocations.py which registry repositories are known to hold a blob (what a push may mount from)
  transfer.py      what keeps a pull stoppable: stall detection, a manifest deadline, cancellation of
                   the download threads on Ctrl-C and SIGTERM
  pulllog.py       the event log of a pull (the step 5 narration and timeline read it)
  auth.py          credentials (`labctl login`), the WWW-Authenticate challenge, the bearer-token exchange
  labregistry.py   the lab's own registry: Debian's docker-registry, started and seeded locally
  tokenserver.py   a token server for that registry (RS256 JWTs), as Docker Hub's auth service
  ocilayout.py     OCI images built locally (layers, config, manifest, index) and written as OCI layouts:
                   the lab's own images are made here
  archive.py       OCI layouts, oci-archive and docker-archive read into the store (`labctl import`,
                   `labctl prepare`)
  store.py         the content-addressed store: blobs by digest, refs, unpacked layers, garbage
                   collection (`labctl rmi`)
  layers.py        safe layer unpacking: no traversal, no links out, OCI whiteouts to overlay whiteouts
  inspect.py       an image digest by digest: manifest, config, each layer's blob, diff_id and
                   directory (`labctl image inspect`, step 4's demo)
  labimage.py      the busybox root filesystem built locally, which every step can use without a network
"""
