"""Step 12's experiments: a build timed three ways, and two pushes whose bytes on the wire are counted.

`three_builds(context)` builds one small Dockerfile (FROM the lab's busybox, ENV, COPY, RUN, COPY, RUN,
CMD) three times with `labctl build`'s library (labctl.build.builder.build):
  cold     --no-cache: every instruction runs
  warm     the same again: every instruction comes from the layer cache (`CACHED`), no RUN runs
  changed  one file of the second COPY edited: the instructions before it are CACHED, that COPY and
           every instruction after it run again (their parent changed, so their cache keys did)
Each BuildResult lists its steps: number, instruction, cached, seconds, the layer it added.

`two_pushes(registry_host)` pushes the built image, then a second image on the same base, to a
registry (labctl.images.push.push): the second sends only its own layer and config; the base layer,
already in the registry, is skipped (HEAD answered 200) or mounted from the first repository
(POST ...?mount=&from=, 201), with no byte of it sent. Each PushResult lists its blobs: digest, size,
action (exists, mounted, uploaded) and bytes_sent.

Both leave images in the store under NAMES; `remove_images()` drops them (and their unshared layers).
"""
from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

#: The two images, as the store names them (`labctl build -t lab12/app:1` -> localhost/lab12/app:1).
APP, TOOL = "lab12/app:1", "lab12/tool:1"
NAMES = ("localhost/lab12/app:1", "localhost/lab12/tool:1")

DOCKERFILE = """\
FROM busybox
ENV APP_HOME=/opt/app
COPY config.txt /etc/app/config.txt
RUN mkdir -p /opt/data && seq 1 150000 > /opt/data/numbers && wc -l /opt/data/numbers > /opt/data/count
COPY app.sh /opt/app/app.sh
RUN chmod 755 /opt/app/app.sh && sha256sum /opt/app/app.sh > /opt/app/app.sh.sha256
CMD ["/opt/app/app.sh"]
"""

#: The second image: the same base, one layer of its own.
SECOND = """\
FROM busybox
COPY tool.sh /usr/local/bin/tool.sh
CMD ["/usr/local/bin/tool.sh"]
"""

FILES = {
    "config.txt": "greeting = hello\n",
    "app.sh": "#!/bin/sh\necho \"app v1: $(cat /etc/app/config.txt)\"\n",
    "tool.sh": "#!/bin/sh\necho a second image on the same base\n",
}


def make_context(folder: Path) -> Path:
    """Write the build context (the two Dockerfiles and the files they copy) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(DOCKERFILE)
    (folder / "Dockerfile.tool").write_text(SECOND)
    for name, text in FILES.items():
        (folder / name).write_text(text)
    return folder


def three_builds(context: Path) -> dict:
    """{"cold": BuildResult, "warm": ..., "changed": ...} (see the module's docstring). The context is
    left with app.sh edited (v2, with a random word: on a second run, too, the cache has not seen it)."""
    from labctl.build.builder import build
    dockerfile = context / "Dockerfile"
    runs = {"cold": build(dockerfile, context, APP, no_cache=True),
            "warm": build(dockerfile, context, APP)}
    # v2 and a fresh nonce: a content the cache has never seen, so what follows the COPY runs again
    (context / "app.sh").write_text(FILES["app.sh"].replace("v1", f"v2 {secrets.token_hex(4)}"))
    runs["changed"] = build(dockerfile, context, APP)
    return runs


def build_second(context: Path):
    """The second image, on the same base: its BuildResult."""
    from labctl.build.builder import build
    return build(context / "Dockerfile.tool", context, TOOL)


def two_pushes(registry_host: str) -> list:
    """Push the app, then the tool image, to `registry_host` (e.g. 127.0.0.1:5000): their PushResults."""
    from labctl.images.push import push
    return [push(NAMES[0], f"{registry_host}/lab12/app:1", progress=False),
            push(NAMES[1], f"{registry_host}/lab12/tool:1", progress=False)]


def remove_images() -> None:
    """Drop the demo's images from the store (layers no other image uses go with them)."""
    from labctl.images.store import ImageStore, remove_image
    store = ImageStore()
    for name in NAMES:
        if name in store.refs():
            with contextlib.suppress(Exception):   # in use by a container: it keeps it, as `labctl rmi` would
                remove_image(store, name)


def timeline_rows(result) -> list[list]:
    """One table row per instruction of a BuildResult: number, instruction, CACHED or seconds, layer."""
    return [[s.number, s.instruction[:60], "CACHED" if s.cached else f"{s.seconds:.2f} s",
             s.layer.split(":")[1][:12] if s.layer else "(config only)"] for s in result.steps]


def push_rows(result) -> list[list]:
    """One table row per blob of a PushResult: what it is, digest, size, action, bytes sent."""
    return [[b.what, b.digest.split(":")[1][:12], b.size, b.action, b.bytes_sent] for b in result.blobs]
