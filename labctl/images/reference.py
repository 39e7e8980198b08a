"""Image references, parsed as Docker parses them.

    busybox                          -> docker.io/library/busybox:latest
    alpine:3.19                      -> docker.io/library/alpine:3.19
    myuser/app                       -> docker.io/myuser/app:latest
    127.0.0.1:5000/lab/busybox       -> 127.0.0.1:5000/lab/busybox:latest
    localhost/app@sha256:<64 hex>    -> localhost/app@sha256:...

The first path component is a registry host only if it contains a "." or a ":" or is "localhost"
(so `myuser/app` is a Docker Hub user, not a host called myuser). Docker Hub images without a
namespace live under `library/`, and the API of docker.io is served by registry-1.docker.io.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from labctl.errors import LabError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

# The grammar of distribution/reference (reference.go), one piece at a time.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*"
                   r"|\[[0-9a-fA-F:]+\]")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)   # ASCII: \w would also match é
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


class InvalidReference(LabError):
    def __init__(self, text: str, why: str):
        super().__init__(f"invalid image reference {text!r}: {why}",
                         "write it as [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST], e.g. busybox, "
                         "127.0.0.1:5000/lab/busybox:latest")


@dataclass(frozen=True)
class Reference:
    registry: str             # host[:port] as written ("docker.io" for Docker Hub)
    repository: str           # "library/busybox", "lab/busybox"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host:port the API is served on (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def insecure(self) -> bool:
        """Loopback registries speak plain HTTP, as Docker's default insecure 127.0.0.0/8 does."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry
        return host in ("localhost", "[::1]") or host.startswith("127.")

    @property
    def reference(self) -> str:
        """What the manifest endpoint is asked for: the digest if there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """Parse an image reference the way `docker pull` does; raises InvalidReference (one line)."""
    original = text
    if not text or text != text.strip():
        raise InvalidReference(original, "it is empty or has spaces around it")
    if len(text) > 255 + 80:
        raise InvalidReference(original, "it is too long")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise InvalidReference(original, f"{digest!r} is not a digest (sha256: and 64 lowercase hex digits)")
    registry, sep, rest = text.partition("/")
    is_host = sep and ("." in registry or ":" in registry or registry == "localhost"
                       or registry != registry.lower())
    if not is_host:
        registry, rest = DOCKER_HUB, text
    else:
        hostpart, _, port = registry.rpartition(":") if not registry.endswith("]") else (registry, "", "")
        if ":" in registry and not registry.endswith("]"):
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidReference(original, f"{port!r} is not a port number")
        else:
            hostpart = registry
        if not _HOST.fullmatch(hostpart):
            raise InvalidReference(original, f"{hostpart!r} is not a host name")
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise InvalidReference(original, f"{tag!r} is not a tag (letters, digits, _ . -, at most 128)")
    if not rest:
        raise InvalidReference(original, "the repository name is missing")
    for component in rest.split("/"):
        if component != component.lower():
            raise InvalidReference(original, "repository names must be lowercase")
        if not _COMPONENT.fullmatch(component):
            raise InvalidReference(original, f"{component!r} is not a valid repository path component "
                                   "(lowercase letters and digits, separated by . _ __ or -)")
    if len(rest) > 255:
        raise InvalidReference(original, "the repository name is longer than 255 characters")
    if registry == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, rest, tag, digest)


def store_names(name: str) -> list[str]:
    """The references an image given as NAME may be stored under, in the order `labctl run`, `push` and
    `save` try them: as given, with :latest, then (a bare name) under localhost/ (the lab's own and built
    images) and docker.io/library/ (Docker Hub's official images, as pulled)."""
    names = [name]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in name:
        names.append(name + ":latest")
    if "/" not in name:
        names += [f"localhost/{n}" for n in list(names)] + [f"docker.io/library/{n}" for n in list(names)]
    return names
