"""The build context: the directory whose files COPY and ADD may take, minus what .dockerignore says.

Docker sends the context to the daemon as a tar, so nothing outside it can ever be copied: `COPY ../x`,
`COPY /etc/passwd` (read as <context>/etc/passwd) and a symlink that leads out are all refused here,
before anything is copied, with one line naming the source.

.dockerignore (Docker's pattern matcher, moby/patternmatcher):
  - one pattern per line, `#` comments, blanks trimmed, a leading `/` dropped; paths use `/`
  - `*` any characters but `/`, `?` one of them, `[a-z]` a class, `**` any number of directories
  - a pattern matching a directory excludes all below it
  - `!pattern` re-includes what an earlier pattern excluded: the LAST matching line decides

The cache key of a COPY or ADD needs what is copied, not when: `content_hash` hashes each entry's
relative name, type, mode, size, link target and sha256 of its bytes (mtimes only as the layer keeps
them, clamped), so touching a file keeps the cache and changing one byte does not.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

IGNORE_FILE = ".dockerignore"


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


class Ignore:
    """The patterns of a .dockerignore; `excluded(relpath)` says whether a path is left out."""

    def __init__(self, lines: list[str]):
        self.rules: list[tuple[bool, re.Pattern]] = []
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
            if pattern and pattern != ".":
                self.rules.append((negate, _pattern_regex(pattern)))

    @classmethod
    def read(cls, context: Path) -> "Ignore":
        try:
            return cls((context / IGNORE_FILE).read_text().splitlines())
        except FileNotFoundError:
            return cls([])

    def excluded(self, relpath: str) -> bool:
        parts = relpath.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        verdict = False
        for negate, regex in self.rules:
            if any(regex.match(p) for p in prefixes):
                verdict = not negate
        return verdict


@dataclass
class Source:
    """One COPY/ADD source found in the context."""
    relpath: str      # relative to the context ("." for the context itself)
    path: Path        # the real path on the host (inside the context)


class Context:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise LabError(f"the build context {root} is not a directory", "give the directory COPY reads from, e.g. `.`")
        self.ignore = Ignore.read(self.root)

    def _inside(self, path: str) -> bool:
        return path == str(self.root) or path.startswith(str(self.root) + os.sep)

    def sources(self, pattern: str, where: str) -> list[Source]:
        """The context's paths matching one COPY/ADD source (a path or a glob), each checked to stay in
        the context. `where` ("Dockerfile:7") starts the error lines."""
        clean = os.path.normpath("/" + pattern)   # `/x` means <context>/x, as in Docker
        if os.path.normpath(pattern.lstrip("/") or ".").split(os.sep)[0] == "..":
            raise LabError(f"{where}: COPY source {pattern!r} is outside the build context",
                           "a build sees only its context: move the file into the context directory")
        rel = clean.lstrip("/") or "."
        if glob.has_magic(rel):
            names = sorted(glob.glob(rel, root_dir=self.root))
        else:
            names = [rel] if os.path.lexists(self.root / rel) else []
        found = []
        for name in names:
            if name != "." and self.ignore.excluded(name):
                continue
            real = os.path.realpath(self.root / name)
            if not self._inside(real):
                raise LabError(f"{where}: COPY source {pattern!r} is a symlink leading out of the build context "
                               f"(to {real})", "copy the file itself into the context instead of linking to it")
            found.append(Source(name, Path(real)))
        if not found:
            raise LabError(f"{where}: COPY source {pattern!r} not found in the build context "
                           "(or excluded by .dockerignore)", f"check the name under {self.root}")
        return found

    def walk(self, source: Source):
        """(relative name below the source, host path) of every entry a source brings, sorted, with
        .dockerignore applied; a directory brings its contents, not itself."""
        if not source.path.is_dir():
            yield "", source.path
            return
        base = "" if source.relpath == "." else source.relpath + "/"
        for root, dirs, files in os.walk(source.path):
            dirs.sort()
            below = os.path.relpath(root, source.path)
            below = "" if below == "." else below + "/"
            keep = []
            for name in sorted(dirs + files):
                if self.ignore.excluded(base + below + name):
                    continue
                if name in dirs:
                    keep.append(name)
                yield below + name, Path(root) / name
            dirs[:] = keep


def content_hash(ctx: Context, sources: list[Source], epoch: int) -> str:
    """sha256 over what the sources bring: names, types, modes, sizes, link targets, bytes."""
    h = hashlib.sha256()
    for source in sources:
        h.update(f"source {source.relpath}\0".encode())
        for name, path in ctx.walk(source):
            st = os.lstat(path)
            h.update(f"{name}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_size}\0"
                     f"{min(int(st.st_mtime), epoch)}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(path).encode() + b"\0")
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
    return "sha256:" + h.hexdigest()
