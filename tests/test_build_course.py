"""Step 12 of the course beyond its check (tests/test_checks.py): the demo builds, rebuilds and pushes
against a registry of its own and leaves nothing (the residue fixture: no mount, process, journal record
or temporary directory; the store: none of its images); the figures draw what a real build and a real
push measured."""
from __future__ import annotations

import os
import time

import pytest

from helpers import run_labctl
from labctl import state
from labctl.demos import buildpush
from labctl.images.store import ImageStore

pytestmark = pytest.mark.root


def test_step_12_demo_runs_and_leaves_nothing():
    started = time.time()
    result = run_labctl("step", "12", "--no-explain", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not set(buildpush.NAMES) & set(ImageStore().refs())         # the demo removed its images
    for name in ("step12-rebuild-times", "step12-push-bytes"):
        assert os.stat(state.subdir("figures") / f"{name}.png").st_mtime >= started


def test_figures_from_three_real_builds_and_two_real_pushes(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from labctl.images import labregistry
    from labctl.plots.build import push_bytes, rebuild_times
    try:
        runs = buildpush.three_builds(buildpush.make_context(tmp_path / "context"))
        buildpush.build_second(tmp_path / "context")
        with labregistry.RegistryServer(tmp_path / "registry") as server:
            pushes = buildpush.two_pushes(server.host)
            stored = {p.name for p in (server.storage / "docker/registry/v2/blobs/sha256").glob("*/*")}
    finally:
        buildpush.remove_images()
    assert [s.cached for s in runs["warm"].steps][1:] == [True] * 6       # FROM is resolved, never cached
    assert [s.cached for s in runs["changed"].steps][1:] == [True, True, True, False, False, False]
    every = {b.digest.split(":")[1] for p in pushes for b in p.blobs}
    assert every <= stored                                               # the registry holds each blob
    fig = rebuild_times({label: r.steps for label, r in runs.items()})
    ax = fig.axes[0]
    assert "ms" in ax.get_xlabel() and ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cold", "warm", "changed"]
    assert len(ax.get_yticklabels()) == 7
    fig = push_bytes({"first": pushes[0].blobs, "second": pushes[1].blobs})
    ax = fig.axes[0]
    assert "KiB" in ax.get_xlabel() and [t.get_text() for t in ax.get_yticklabels()] == ["first", "second"]
