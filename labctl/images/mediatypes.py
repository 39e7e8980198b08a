"""Media types and platforms: what each document of an image is called, and which manifest serves this machine.

Every blob a registry or a layout holds is named by a descriptor {mediaType, digest, size}. Docker's
image format (schema 2) came first and the OCI image spec standardised it, so the same four kinds of
document have two names each, and a client accepts both:

    kind       OCI image spec                                Docker schema 2
    index      application/vnd.oci.image.index.v1+json       ...docker.distribution.manifest.list.v2+json
               (one manifest per platform)
    manifest   application/vnd.oci.image.manifest.v1+json    ...docker.distribution.manifest.v2+json
               (the config's and the layers' descriptors)
    config     application/vnd.oci.image.config.v1+json      ...docker.container.image.v1+json
    layer      ...oci.image.layer.v1.tar[+gzip|+zstd]         ...docker.image.rootfs.diff.tar[.gzip]

Docker's schema 1 (a signed JSON with the history inline) was deprecated in 2017 and removed from
Docker 26; labctl refuses it.

Platforms: an index lists one manifest per platform, `{"os": "linux", "architecture": "arm64",
"variant": "v8"}`. The client picks the one for this machine (`uname -m` x86_64 is linux/amd64), or the
one `--platform OS/ARCH[/VARIANT]` names, as `docker pull --platform` does.
"""
from __future__ import annotations

import platform as host_platform
from dataclasses import dataclass

from labctl.errors import LabError

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
#: What a client asks a registry for (the Accept header of GET /v2/NAME/manifests/REF): either kind, either name.
ACCEPT = ", ".join((MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST))


class NoMatchingPlatform(LabError):
    """An index without a manifest for the platform wanted (this machine's, or --platform's)."""


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def of_entry(cls, entry: dict) -> "Platform":
        """The platform an index entry declares (its `platform` object)."""
        p = entry.get("platform", {})
        return cls(p.get("os", "?"), p.get("architecture", "?"), p.get("variant"))

    def matches(self, platform: dict) -> bool:
        """Does an index entry's `platform` serve this platform? arm64 without a variant means v8."""
        if platform.get("os") != self.os or platform.get("architecture") != self.architecture:
            return False
        theirs = platform.get("variant") or ("v8" if self.architecture == "arm64" else None)
        mine = self.variant or ("v8" if self.architecture == "arm64" else None)
        return mine is None or theirs == mine


# `uname -m` -> (OCI architecture, variant), as Go's GOARCH names them.
_MACHINES = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", "v8"),
             "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
             "i686": ("386", None), "i386": ("386", None), "ppc64le": ("ppc64le", None),
             "s390x": ("s390x", None), "riscv64": ("riscv64", None)}


def host() -> Platform:
    """This machine's platform, named as OCI names them (uname -m x86_64 is amd64)."""
    machine = host_platform.machine()
    arch, variant = _MACHINES.get(machine, (machine, None))
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    """`OS/ARCH[/VARIANT]`, as --platform takes it: `linux/arm64/v8` -> Platform("linux", "arm64", "v8")."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise LabError(f"invalid platform {text!r}", "write it as OS/ARCH[/VARIANT], e.g. linux/arm64/v8")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def choose_manifest(index: dict, wanted: Platform,
                    fix: str = "choose one of those with --platform OS/ARCH[/VARIANT]") -> dict:
    """The index entry for `wanted` (an exact variant match first); NoMatchingPlatform if there is none."""
    entries = [m for m in index.get("manifests", []) if m.get("mediaType", MEDIA_OCI_MANIFEST) in MANIFEST_TYPES
               and "platform" in m]
    exact = [m for m in entries if Platform.of_entry(m) == wanted]
    found = exact or [m for m in entries if wanted.matches(m["platform"])]
    if not found:
        offered = ", ".join(str(Platform.of_entry(m)) for m in entries) or "none"
        raise NoMatchingPlatform(f"the image has no manifest for {wanted} (it offers: {offered})", fix)
    return found[0]
