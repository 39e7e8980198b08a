"""`labctl build`: a Dockerfile, step by step, into an image in the store, with a layer cache.

    FROM      the base image: from the store (the lab's images are imported on first use), else pulled
              (labctl/images/distribution.py, as `labctl pull`)
    RUN       a container on the image so far; its upper directory becomes a layer (runstep.py, diff.py)
    COPY/ADD  files from the context written into a fresh directory, which becomes a layer (files.py)
    WORKDIR   a layer holding the directory if the image lacks it, else config only
    others    ENV, ARG, USER, CMD, ENTRYPOINT, EXPOSE, LABEL, VOLUME change the config only: a history
              entry with "empty_layer": true, as Docker writes it

Before each step the cache (cache.py) is asked with the parent's config digest and the instruction's
text; a hit gives the step's config and layers without running anything (` ---> Using cache`).

Reproducible: every date the build writes (the config's `created`, each history entry's, the layers'
mtimes) is SOURCE_DATE_EPOCH, 0 if unset, not the time of the build. A build records what it did, not
when: building the same Dockerfile on the same context twice gives the same config, the same
manifest, the same image digest, even when the cache was dropped in between (--no-cache).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from labctl import state
from labctl.build import diff
from labctl.build import dockerfile as parser
from labctl.build.context import Context
from labctl.build.image import Step
from labctl.build.instructions import Builder
from labctl.errors import LabError
from labctl.images.store import ImageStore


@dataclass
class BuildResult:
    image: str                   # the reference it was stored as, e.g. localhost/hello:1
    digest: str                  # the manifest's digest
    steps: list[Step] = field(default_factory=list)


def normalise_tag(tag: str) -> str:
    """-t NAME[:TAG] -> the store's reference: localhost/NAME:TAG for a name without a registry host
    (as `labctl import` names images), HOST/NAME:TAG as given otherwise."""
    from labctl.images import reference
    ref = reference.parse(tag)   # checked as `docker build -t` checks it
    if ref.digest:
        raise LabError(f"-t {tag}: a tag cannot name a digest", "give NAME[:TAG]")
    last = tag.rsplit("/", 1)[-1]
    name = tag[:len(tag) - len(last)] + last.split(":")[0]
    first = name.split("/", 1)[0]
    host = "/" in name and ("." in first or ":" in first or first == "localhost")
    return f"{name if host else 'localhost/' + name}:{ref.tag}"


def build(dockerfile: Path, context: Path, tag: str, build_args: dict[str, str] | None = None,
          no_cache: bool = False, progress: Callable[[str], None] | None = None, *,
          network: str = "none") -> BuildResult:
    """Build the Dockerfile with the context into an image tagged `tag` (see the module docstring)."""
    path = Path(dockerfile)
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabError(f"cannot read the Dockerfile {path}: {exc.strerror}",
                       "give its path with -f, or put a Dockerfile in the context") from None
    instructions = parser.parse(text, path.name)
    reference = normalise_tag(tag)
    store = ImageStore()
    builder = Builder(store, Context(context), dict(build_args or {}), no_cache, progress or (lambda line: None),
                      diff.source_date_epoch(), network, len(instructions))
    with state.locked("image-store", shared=True):   # garbage collection waits for the build
        for number, inst in enumerate(instructions, 1):
            builder.step(number, inst)
        digest = builder.image.store(store)
        store.set_ref(reference, digest)
    builder.finish()
    return BuildResult(reference, digest, builder.steps)
