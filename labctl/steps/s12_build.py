"""Step 12: layers as a cache and as a diff. The demo, the check, and the reference solution of lab/12-build-push."""
from __future__ import annotations

import os
import stat
import sys
import tarfile
from pathlib import Path

from labctl.errors import CheckFailed, LabError, require_root
from labctl.steps import checking

EXPLANATION = """
Step 4 stacked an image's layers under a writable upper directory; step 5 fetched layers from a
registry. `docker build` and `docker push` are the same two things read backwards.

**A build is containers whose upper directories become layers.** Each `RUN` runs in a container on an
overlay of the layers so far; when it ends, its upper directory holds exactly what it changed. OverlayFS
wrote deletions its own way, and an OCI layer says them another way:

| the container did | upper directory (OverlayFS) | layer tar (OCI image spec, layer.md) |
|---|---|---|
| wrote or changed a file | the whole file (copy-up) | the file |
| `rm /etc/motd` | `etc/motd`: a character device 0/0, a *whiteout* | an empty file `etc/.wh.motd` |
| `rm -rf /var/cache/apt; mkdir /var/cache/apt` | the new directory, xattr `trusted.overlay.opaque=y` | `var/cache/apt/` and an empty `var/cache/apt/.wh..wh..opq` |

**Layers are a cache.** A layer is named by its content (sha256). Docker's classic builder reuses an
instruction's layer when the parent layer and the instruction are the same, and, for `COPY`/`ADD`, the
copied files' content too: change one copied file and only the instructions from that `COPY` on run
again; everything above it is `CACHED`.

**Layers are a diff to send.** `docker push` asks the registry `HEAD /v2/NAME/blobs/DIGEST` for each
layer and uploads only those it lacks (a blob the registry holds in another repository is *mounted*:
`POST /v2/NAME/blobs/uploads/?mount=DIGEST&from=OTHER`, no bytes sent). A second image on the same base
sends only its own layers.
"""


def demo() -> None:
    from labctl import state, ui
    from labctl.demos import buildpush
    from labctl.images import labregistry
    require_root("the build and push demo")
    work = state.new_tmpdir("step12-")
    rec = state.record_path(str(work), "step 12 demo: build context and registry")
    try:
        _upper_read_backwards()
        context = buildpush.make_context(work / "context")
        ui.say("\n[bold]2. The Dockerfile[/bold] (context: " + ", ".join(buildpush.FILES) + ")")
        ui.quoted(buildpush.DOCKERFILE.rstrip())
        runs = buildpush.three_builds(context)
        for label, what in (("cold", "--no-cache: every instruction runs"),
                            ("warm", "the same again: every instruction from the cache, no RUN runs"),
                            ("changed", "app.sh edited: CACHED up to its COPY, that COPY and all after it run")):
            ui.table(["#", "instruction", "time", "layer"], buildpush.timeline_rows(runs[label]),
                     title=f"{label} build ({what}): {runs[label].digest[:19]}")
        same = runs["cold"].digest == runs["warm"].digest
        ui.say(f"cold and warm builds give {'the same' if same else 'different'} image digest "
               f"({runs['cold'].digest[:19]}): layers are reproducible (sorted entries, fixed mtimes).")
        second = buildpush.build_second(context)
        ui.say(f"\n[bold]3. A second image on the same base[/bold]: {second.image} ({second.digest[:19]})")
        with labregistry.RegistryServer(work / "registry") as server:
            pushes = buildpush.two_pushes(server.host)
            for result in pushes:
                ui.table(["blob", "digest", "bytes", "action", "bytes sent"], buildpush.push_rows(result),
                         title=f"push {result.target}: {sum(b.bytes_sent for b in result.blobs)} bytes sent")
        _figures(runs, pushes)
    finally:
        buildpush.remove_images()
        state.remove_path(str(work))
        rec.forget()


def _upper_read_backwards() -> None:
    """What a RUN leaves in its upper directory (the kernel's marks), and the layer labctl build writes."""
    import io
    from labctl import ui
    from labctl.build import diff
    from labctl.demos import layerdiff
    ui.say("\n[bold]1. A RUN's upper directory, read backwards[/bold]: "
           + "; ".join(f"{what} /{path}" for what, path in layerdiff.CHANGES))
    with layerdiff.changed_overlay("step12-upper-") as scene:
        buf = io.BytesIO()
        diff.write_layer(scene.upper, buf, epoch=0)
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tar:
            written = tar.getnames()
        rows = []
        for path, e in layerdiff.tree(scene.upper).items():
            mark = " + trusted.overlay.opaque=y" if e.kind == "dir" and layerdiff.is_opaque(scene.upper / path) else ""
            if e.kind == "dir" and not mark:
                continue               # the directories on the way: in the tar as they are
            parent, base = os.path.split(path)
            layer = [n for n in written if n in (path, os.path.join(parent, ".wh." + base),
                                                  os.path.join(path, ".wh..wh..opq"))]
            rows.append([path, e.kind + mark, ", ".join(layer)])
        ui.table(["upper directory (its directories aside)", "what the kernel left", "entries in the layer tar"], rows)
        ui.say("A whiteout (character device 0/0) becomes an empty file .wh.NAME; an opaque directory gets an empty "
               ".wh..wh..opq inside it (labctl/build/diff.py; `labctl check 12` judges your own).")


def _figures(runs: dict, pushes: list) -> None:
    from labctl.plots import build as plots
    from labctl.steps import save_figure
    save_figure(plots.rebuild_times({label: r.steps for label, r in runs.items()}), "step12-rebuild-times")
    labels = ("first push", "second push")
    save_figure(plots.push_bytes({f"{label} ({p.target.split('/', 1)[1]})": p.blobs for label, p in zip(labels, pushes)}),
                "step12-push-bytes")


# ---------------------------------------------------------------------------------------------
# The check: the student's tar, applied by umoci onto the lower layer, must give the kernel's merged view.

def check(command: list[str]) -> list[str]:
    """Judge `command UPPER LAYER.tar`: a real overlay changed as a RUN would change it; the student's
    tar of its upper directory is applied by umoci onto a copy of the lower layer, and the tree it makes
    must equal the merged view the kernel showed (names, types, modes, owners, contents, link targets)."""
    from labctl.demos import layerdiff
    require_root("`labctl check 12` (it mounts an overlay)")
    verified: list[str] = []
    with layerdiff.changed_overlay("check12-") as scene:
        whiteouts, opaque = scene.whiteouts(), scene.opaque()
        verified.append(f"the kernel recorded the changes in the upper directory: whiteouts (character devices "
                        f"0/0) at {_names(whiteouts)}, opaque directory (trusted.overlay.opaque=y) "
                        f"{_names(opaque)}")
        out = scene.base / "layer.tar"
        status, _ = checking.run_to_end(command + [str(scene.upper), str(out)], timeout=60)
        checking.expect(status == 0, f"the exercise exited {status}" if status is not None
                        else "the exercise did not end within 60 s",
                        "run it by hand on an upper directory (the README's Try it) and read what it prints",
                        verified, "the exercise ran on the upper directory and exited 0")
        names = _tar_names(out, scene.upper)
        verified.append(f"it wrote a tar of {len(names)} entries")
        try:
            rootfs = layerdiff.apply_with_umoci(scene.lower, out.read_bytes(), scene.base / "umoci")
        except LabError as exc:
            raise CheckFailed(exc.cause, "tarfile's names are relative when you give relative arcnames") from None
        verified.append("umoci applied it onto the lower layer (`umoci raw unpack` of an OCI layout)")
        _compare(scene, names, layerdiff.tree(rootfs))
        verified.append(f"the result equals the merged view the kernel showed: {len(scene.merged)} paths, with "
                        "their types, modes, owners, contents and link targets")
    return verified


def _names(paths: list[str]) -> str:
    return ", ".join("/" + p for p in paths) or "none"


def _tar_names(path: Path, upper: Path) -> list[str]:
    """The tar's entry names (normalised); CheckFailed if it is no uncompressed tar of names inside UPPER."""
    if not path.is_file():
        raise CheckFailed(f"the exercise wrote no file at {path}",
                          "write the tar to the path given as the second argument")
    try:
        with tarfile.open(path, "r:") as tar:
            names = [os.path.normpath(n) for n in tar.getnames()]
    except tarfile.TarError as exc:
        raise CheckFailed(f"{path} is not an uncompressed tar archive ({exc})",
                          "write it with tarfile.open(OUT, \"w\"): the layer is judged as application/vnd.oci.image.layer.v1.tar") \
            from None
    for name in names:
        parent, base = os.path.split(name)
        inside = os.path.lexists(upper / (parent if base.startswith(".wh.") else name))
        if name != "." and not inside:
            raise CheckFailed(f"your tar's entry {name!r} names no path of the upper directory (its top level "
                              f"holds {', '.join(sorted(os.listdir(upper)))})",
                              "name each entry by its path relative to UPPER, as `tar -C UPPER -c .` would")
    return names


def _compare(scene, names: list[str], theirs: dict) -> None:
    """Raise CheckFailed naming the first path where umoci's tree differs from the merged view, and why."""
    ours = scene.merged
    for path in sorted(set(ours) | set(theirs)):
        if ours.get(path) == theirs.get(path):
            continue
        if path not in ours:
            raise CheckFailed(*_still_there(scene, path, theirs[path], names))
        if path not in theirs:
            raise CheckFailed(f"/{path} is missing after your layer is applied, but the container saw it "
                              f"({_kind(ours[path])})",
                              "every file, directory and symlink of the upper directory goes into the tar as it "
                              "is; an opaque marker must not hide what the same layer adds")
        raise CheckFailed(f"/{path} differs after your layer is applied: the container saw {_kind(ours[path])}, "
                          f"your layer gives {_kind(theirs[path])}",
                          "copy each upper entry as it is: type, mode, owner, content, link target")


def _still_there(scene, path: str, got, names: list[str]) -> tuple[str, str]:
    """(cause, fix) for a path the container deleted that the student's layer leaves (or makes)."""
    from labctl.demos import layerdiff
    parent, base = os.path.split(path)
    if got.kind == "char 0/0":
        return (f"/{path} is a character device 0/0 after your layer is applied: your tar holds OverlayFS's "
                "whiteout as it is, and an OCI reader makes it a device file instead of deleting the name",
                f"write a deletion as the OCI image spec does: an empty regular file {os.path.join(parent, '.wh.' + base)} "
                "(layer.md, \"Whiteouts\"; TODOs 1 and 4)")
    upper = scene.upper / path
    if os.path.lexists(upper) and stat.S_ISCHR(os.lstat(upper).st_mode):
        marker = os.path.join(parent, ".wh." + base)
        return (f"/{path} still exists after your layer is applied: the container deleted it (the upper "
                f"directory has a whiteout there), and your tar has no {marker}"
                + (" (it has one, but not as an empty regular file)" if marker in names else ""),
                "a character device 0/0 in the upper directory is a deletion: write it as an empty regular "
                "file .wh.NAME in the same directory (layer.md, \"Whiteouts\"; TODOs 1 and 4)")
    for ancestor in _ancestors(path):
        if layerdiff.is_opaque(scene.upper / ancestor):
            return (f"/{path} still exists after your layer is applied: the container replaced /{ancestor} "
                    f"(rm -rf, then mkdir: it is opaque in the upper directory, trusted.overlay.opaque=y), and "
                    f"your tar has no {ancestor}/.wh..wh..opq",
                    f"mark /{ancestor} opaque in the tar: an empty regular file .wh..wh..opq inside it (layer.md, "
                    "\"Opaque Whiteout\"; TODOs 2 and 3)")
    return (f"/{path} is in the tree your layer makes ({_kind(got)}), but the container did not see it",
            "write only what the upper directory holds, under names relative to it")


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _kind(e) -> str:
    what = f" ({e.what})" if e.what else ""
    return f"a {e.kind}{what}, mode {e.mode:o}, owner {e.uid}:{e.gid}"


# ---------------------------------------------------------------------------------------------
# The reference solution: `labctl build`'s own translation (labctl/build/diff.py), which every RUN uses.

def reference(argv: list[str]) -> int:
    """Reference solution: `UPPER LAYER.tar`: the OCI layer of an OverlayFS upper directory, written by
    labctl.build.diff.write_layer, as `labctl build` writes each RUN's layer (there, gzipped)."""
    from labctl.build import diff
    if len(argv) != 2:
        print("usage: python -m labctl.steps.s12_build UPPER LAYER.tar", file=sys.stderr)
        return 2
    upper, out = argv
    if not os.path.isdir(upper):
        raise LabError(f"{upper} is not a directory", "give the overlay's upperdir")
    with open(out, "wb") as f:
        entries = diff.write_layer(Path(upper), f)
    print(f"{out}: {entries} entries")
    return 0


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
