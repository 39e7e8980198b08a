"""Step 12 through step 11: the real `docker build` (classic builder, DOCKER_BUILDKIT=0) against
`labctl daemon`, judged by the image store, by `labctl run` of the image and by the CLI's exit code."""
from __future__ import annotations

import os

import pytest

from helpers import run_labctl
from test_daemon import DOCKER, daemon, docker   # noqa: F401 (the fixture)

pytestmark = [pytest.mark.root, pytest.mark.skipif(not os.path.exists(DOCKER),
                                                   reason="needs Debian's docker CLI (apt-get install docker.io)")]


def docker_build(daemon, context, *args):
    env_extra = {"DOCKER_BUILDKIT": "0"}
    os.environ.update(env_extra)
    try:
        return docker(daemon, "build", *args, str(context), timeout=120)
    finally:
        os.environ.pop("DOCKER_BUILDKIT", None)


def test_docker_build_against_the_daemon_stores_a_runnable_image_and_uses_the_cache(daemon, tmp_path):
    from labctl.images.store import ImageStore
    (tmp_path / "msg.txt").write_text("built by docker build\n")
    (tmp_path / "skip.tmp").write_text("x\n")
    (tmp_path / ".dockerignore").write_text("*.tmp\n")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nARG WHO=nobody\nCOPY msg.txt /msg.txt\n"
                                         "RUN echo \"$WHO\" > /who && ls / > /listing\nCMD [\"cat\", \"/msg.txt\"]\n")
    first = docker_build(daemon, tmp_path, "-t", "t12d:1", "--build-arg", "WHO=docker")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Step 4/5 : RUN" in first.stdout and "Successfully tagged localhost/t12d:1" in first.stdout
    store = ImageStore()
    digest = store.refs()["localhost/t12d:1"]
    config_digest = store.read_json(digest)["config"]["digest"]
    run = run_labctl("run", "--rm", "t12d:1", "sh", "-c", "cat /msg.txt /who; ls /")
    assert run.returncode == 0 and run.stdout.startswith("built by docker build\ndocker\n"), run.stdout + run.stderr
    again = docker_build(daemon, tmp_path, "-q", "-t", "t12d:1", "--build-arg", "WHO=docker")
    assert again.returncode == 0 and again.stdout.strip() == config_digest, again.stdout + again.stderr
    assert store.refs()["localhost/t12d:1"] == digest


def test_a_failing_RUN_ends_docker_build_with_its_exit_code(daemon, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN exit 5\n")
    result = docker_build(daemon, tmp_path, "-t", "t12d-fail:1")
    assert result.returncode == 5, result.stdout + result.stderr
    assert "returned a non-zero code: 5" in result.stderr
