"""Step 12: reading a Dockerfile and a .dockerignore as Docker reads them (no root needed)."""
from __future__ import annotations

import pytest

from labctl.build import dockerfile
from labctl.build.context import Ignore
from labctl.errors import LabError

TEXT = """# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM $BASE

# a comment between instructions
RUN echo one \\
    # a comment inside a continuation is dropped
    && echo two
COPY --chown=1000:1000 ["a b.txt", "/dest/"]
CMD ["sh", "-c", "echo hi"]
ENTRYPOINT echo shell form
"""


def test_lines_continuations_comments_and_forms():
    insts = dockerfile.parse(TEXT)
    assert [(i.line, i.keyword) for i in insts] == [(2, "ARG"), (3, "FROM"), (6, "RUN"), (9, "COPY"), (10, "CMD"),
                                                     (11, "ENTRYPOINT")]
    assert insts[2].command() == ["/bin/sh", "-c", "echo one && echo two"]
    assert insts[3].flags == {"chown": "1000:1000"} and insts[3].exec_form() == ["a b.txt", "/dest/"]
    assert insts[4].command() == ["sh", "-c", "echo hi"]
    assert insts[5].command() == ["/bin/sh", "-c", "echo shell form"]


@pytest.mark.parametrize("text, line, cause", [
    ("FROM busybox\nRUN true\nFOO bar\n", 3, "unknown instruction FOO"),
    ("RUN true\nFROM busybox\n", 1, "RUN before FROM"),
    ("FROM busybox\nCOPY --from=0 a b\n", 2, "unknown flag --from"),
    ("FROM busybox\nRUN\n", 2, "RUN requires at least one argument"),
    ("FROM busybox\nHEALTHCHECK CMD true\n", 2, "HEALTHCHECK is not supported"),
    ("# only a comment\n", 1, "no FROM instruction"),
])
def test_errors_name_the_line(text, line, cause):
    with pytest.raises(LabError) as caught:
        dockerfile.parse(text)
    assert caught.value.cause.startswith(f"Dockerfile:{line}: {cause}") and caught.value.fix


def test_substitution_as_docker_does_it():
    env = {"A": "1", "EMPTY": "", "SP": "x y"}
    assert dockerfile.substitute("$A ${A} ${MISSING:-def} ${A:+alt} ${EMPTY:-e} ${MISSING:+no}.", env) == "1 1 def alt e ."
    assert dockerfile.words("K=$A 'L=$A' \"M=$SP\" N=\\$A O=a\\ b", env) == ["K=1", "L=$A", "M=x y", "N=$A", "O=a b"]


def test_dockerignore_patterns_exceptions_and_double_star():
    ignore = Ignore(["# c", "*.log", "!keep.log", "build/", "**/cache", "/docs/*.md", "!docs/README.md"])
    assert ignore.excluded("x.log") and not ignore.excluded("keep.log")
    assert not ignore.excluded("sub/x.log")                   # `*` stops at `/`
    assert ignore.excluded("build/out/a.o")                   # a directory excludes what is below it
    assert ignore.excluded("a/b/cache/f") and ignore.excluded("cache")
    assert ignore.excluded("docs/guide.md") and not ignore.excluded("docs/README.md")
