"""The mechanism figures (issue #20), each fed with data measured from the kernel in the test itself.

A figure is judged by its parts (titles, legend entries, the labels of its nodes and cells), and the
data it is drawn from by kernel state (mount ids from /proc/PID/mountinfo, the overlay's directories,
nft's counter and conntrack's entry, the eBPF trace), never by pixels.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import matplotlib
import pytest

matplotlib.use("Agg")

pytestmark = pytest.mark.root


def texts(fig) -> list[str]:
    """Every text of a figure: titles, tick labels, annotations, legend entries."""
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_namespace_grid_says_shared_and_new_without_colour():
    from labctl.kernel import namespaces
    from labctl.plots.namespaces import namespace_sharing
    with namespaces.spawn(["sleep", "30"], namespaces=["uts"], hostname="fig-uts") as proc:
        inodes = {"host": namespaces.namespace_inodes("self"), "uts only": namespaces.namespace_inodes(proc.pid)}
        fig = namespace_sharing(inodes, reference="host")
    assert inodes["uts only"]["uts"] != inodes["host"]["uts"] and inodes["uts only"]["pid"] == inodes["host"]["pid"]
    cells = [t.get_text() for t in fig.axes[0].texts]
    kinds = len(inodes["host"])
    assert len(cells) == 2 * kinds
    assert sum(c.startswith("NEW") for c in cells) == 1, cells   # the uts namespace of `uts only`, nothing else
    assert any(p.get_hatch() for p in fig.axes[0].patches), "a new namespace is hatched, not only coloured"
    assert any("NEW" in label for label in legend_labels(fig.axes[0]))


def test_mount_tree_before_and_after_pivot_root():
    from labctl.demos import mounts
    from labctl.plots.mounts import mount_trees
    before, after, root = mounts.around_pivot_root()
    bind = next(m for m in before if m.point == root)
    new_root = next(m for m in after if m.point == "/")
    assert new_root.id == bind.id, "pivot_root made the image's bind mount the root: the same mount"
    assert {m.point for m in after} >= {"/", "/proc", "/dev", "/sys"}
    assert not any(m.point.startswith(root) for m in after), "no host path is left in the container's table"
    fig = mount_trees(before, after, root)
    left, right = fig.axes[:2]
    assert left.get_title().startswith("before pivot_root") and right.get_title().startswith("after pivot_root")
    right_texts = [t.get_text() for t in right.texts]
    for m in after:   # every mount of the container is a labelled node: id, mount point, type
        assert any(t.startswith(f"{m.id}  {m.point}  [{m.fstype}]") for t in right_texts), m
    assert any(t.startswith(f"{bind.id}  ROOTFS  ") for t in (t.get_text() for t in left.texts))
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 3


def test_pids_line_is_drawn_over_the_limit_line():
    from labctl.demos import cgroups as experiments
    from labctl.plots.cgroups import pids_vs_limit
    run = experiments.fork_bomb(8, seconds=0.5, name="fig-bomb")
    assert run.max_seen == run.pids_max   # the kernel held the count at the limit: the lines meet
    fig = pids_vs_limit(run)
    ax = fig.axes[0]
    count = next(line for line in ax.get_lines() if "pids.current" in line.get_label())
    limit = next(line for line in ax.get_lines() if "pids.max" in line.get_label())
    assert count.get_linewidth() > limit.get_linewidth() and limit.get_linestyle() != "-"
    assert ax.get_zorder() > fig.axes[1].get_zorder(), "the count's axes are drawn over the twin axis"
    assert {"processes (pids.current)", f"limit pids.max = {run.pids_max}"} <= set(legend_labels(ax))


def test_overlay_stack_marks_copy_up_and_whiteout():
    from labctl.demos import overlay as measurements
    from labctl.images import archive
    from labctl.images.store import ImageStore
    from labctl.kernel import overlay
    from labctl.plots.overlay import overlay_stack
    store = ImageStore()
    archive.import_lab_images(store)
    root = overlay.ContainerRoot.create(store, "localhost/layered:latest", f"fig-ovl-{os.getpid()}")
    try:
        with open(root.merged / "srv/keep.txt", "a") as f:
            f.write("changed\n")
        os.unlink(root.merged / "etc/passwd")
        snapshot = measurements.stack_snapshot(root)
        assert overlay.is_whiteout(root.upper / "etc/passwd")
    finally:
        root.remove()
    assert snapshot["upper"][1]["etc/passwd"] == "whiteout" and snapshot["upper"][1]["srv/keep.txt"].startswith("file")
    assert len(snapshot["lowers"]) == 3
    fig = overlay_stack(snapshot)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("merged") and labels[1].startswith("upperdir")
    assert [l.split()[0] for l in labels[2:]] == ["lowerdir"] * 3
    columns = [t.get_text() for t in ax.get_xticklabels()]
    cells = [t.get_text() for t in ax.texts]
    assert "/etc/passwd" in columns and "/srv/keep.txt" in columns
    assert any(c.startswith("COPY-UP") for c in cells) and any(c.startswith("WHITEOUT\nchar dev 0/0") for c in cells)
    assert any(c.startswith("workdir") for c in cells)
    assert len(legend_labels(ax)) == 3


def test_pull_timeline_of_three_layers():
    from labctl import state
    from labctl.images import distribution, labregistry, store as imagestore
    from labctl.plots.registry import pull_timeline
    store = imagestore.ImageStore(state.new_tmpdir("fig-store-"))
    try:
        with labregistry.token_auth_registry(("layered",)) as (server, credentials, _):
            result = distribution.pull(f"{server.host}/lab/layered", store=store, credentials=credentials,
                                       progress=False)
        layers = store.read_json(result.digest)["layers"]
    finally:
        shutil.rmtree(store.root, ignore_errors=True)
    assert len(layers) == 3
    fig = pull_timeline(result.log.events, title="pull")
    top, bottom = fig.axes
    every = texts(fig)
    for layer in layers:   # one short form: sha256: and the first 12 hex digits, in both panels
        short = layer["digest"][:19]
        assert any(short in t for t in (t.get_text() for t in top.get_yticklabels()))
        assert any(short in t for t in legend_labels(bottom))
    assert not any(re.search(r"[0-9a-f]{13,}", t) for t in every), "a digest is written one way only"
    assert "blob: asked for → sha256 verified" in legend_labels(top)
    assert any("KiB" in t or "MiB" in t for t in legend_labels(bottom))


def test_packet_path_with_nat_rewrite():
    from labctl.demos.natpath import nat_exchange
    from labctl.plots.network import packet_path
    path = nat_exchange()
    ct = path["conntrack"]
    assert ct is not None and ct["original"][0] == path["container"]["address"]
    assert ct["reply"][2] == path["upstream"]["host_address"], "conntrack recorded the source rewrite"
    assert path["counted"][0] >= 1 and path["veth_packets"][0] > path["counted"][0]
    fig = packet_path(path)
    every = "\n".join(texts(fig))
    for part in (path["veth"], path["bridge"], f"nft table {path['table']}", "masquerade",
                 path["upstream"]["host_link"], f"src {path['container']['address']}:{ct['original'][1]}",
                 f"src {path['upstream']['host_address']}:{ct['original'][1]}", "conntrack: original"):
        assert part in every, part


@pytest.fixture(scope="module")
def tracing_ready():
    from labctl import tracing
    problems = [f"{name}: {detail}" for name, status, detail, _ in tracing.diagnose() if status == "fail"]
    if problems:
        pytest.skip("eBPF tracing unavailable here: " + "; ".join(problems))


def test_construction_timeline_groups_rows_by_phase(tracing_ready):
    from labctl.plots.tracing import construction_timeline, runs
    from labctl.tracing import buildtrace
    calls, start = buildtrace.trace_construction(hostname="fig-build")
    fig = construction_timeline(calls, start)
    ax = fig.axes[0]
    rows = len(ax.get_yticklabels())
    assert rows == len(runs(calls, lambda c: (c.role, c.name, c.step))) < len(calls) / 2
    assert min(t.get_fontsize() for t in ax.texts) >= 8
    assert any(t.get_text().startswith("mknodat ×6") for t in ax.texts)
    assert "pivot_root" in legend_labels(ax)


def test_build_order_of_labctl_run(tracing_ready):
    from labctl.plots.tracing import build_order
    from labctl.tracing import buildtrace

    def build():
        from labctl.containers import lifecycle
        spec, image = lifecycle.build_spec("busybox", ["/bin/true"], auto_remove=True, memory="32m",
                                           network="bridge")
        lifecycle.run_capture(spec, image)

    calls, start = buildtrace.trace_construction(build=build)
    steps = [c.step for c in calls]
    assert {1, 2, 3, 4, 6} <= set(steps)
    # roles (buildcalls.name_roles): PID 1 is the one process that pivots and execs /bin/true, the child the
    # helper (the process that unshared CLONE_NEWPID) forked next; the nft the helper runs at teardown is not
    [pivot] = [c for c in calls if c.name == "pivot_root"]
    assert {c.pid for c in calls if c.role == "PID 1"} == {pivot.pid}
    assert any(c.name == "execve" and c.strings[0] == "/bin/true" and c.pid == pivot.pid for c in calls)
    unsharers = {c.pid for c in calls if c.name == "unshare" and "CLONE_NEWPID" in c.text}
    assert unsharers == {c.pid for c in calls if c.role == "helper"} and len(unsharers) == 1
    assert any(c.name == "clone3" and c.ret == pivot.pid and c.pid in unsharers for c in calls)
    assert all(c.role != "PID 1" for c in calls if c.name == "execve" and c.strings[0].endswith("/nft"))
    assert steps.index(4) < next(i for i, c in enumerate(calls) if c.name == "pivot_root"), \
        "the overlay is mounted before the container pivots into it"
    fig = build_order(calls, start, title="labctl run")
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.texts]
    assert rows[0].startswith(("1. step 3", "1. step 4")), "the cgroup and the overlay come first"
    pivot = next(i for i, r in enumerate(rows) if "pivot_root" in r)
    program = next(i for i, r in enumerate(rows) if "execve true" in r)
    assert pivot < program, "the container's program runs in its new root"
    assert {"step 1: namespaces", "step 2: root filesystem", "step 3: cgroups", "step 4: OverlayFS",
            "step 6: network"} <= set(legend_labels(ax))
