"""Writes notebooks/12-build-push.ipynb (without outputs). Run: python notebooks/make_12_build_push.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
 new_markdown_cell("""# Step 12 — build and push: layers as a cache and as a diff

Step 4 stacked layers under an upper directory; step 5 fetched layers from a registry. A build and a push
are the same two things read backwards. This notebook first watches the kernel record a container's
changes in an upper directory (whiteouts, an opaque directory) and turns them into an OCI layer, checked
by umoci; then it builds a small Dockerfile three times (cold, from the cache, after one copied file
changed) and pushes two images on the same base, counting the bytes each push sends. It uses the same
library as `labctl step 12` and `labctl check 12`."""),
 new_code_cell("""%matplotlib inline
import io, os, tarfile, tempfile
from pathlib import Path
from labctl.demos import buildpush, layerdiff
from labctl.plots import build as plots
from labctl.steps import s12_build"""),
 new_markdown_cell("""## 1. An upper directory, read backwards
`layerdiff.changed_overlay()` mounts an overlay on a small lower layer and changes the merged view as a
`RUN` would: it deletes `/etc/motd` and `/srv/old`, replaces `/var/cache/apt` (`rm -rf` then `mkdir`),
rewrites and chmods files, adds files and a symlink. The kernel records the deletions its own way: a
character device 0/0 (a whiteout) and an xattr `trusted.overlay.opaque=y`."""),
 new_code_cell("""with layerdiff.changed_overlay("nb12-") as scene:
    for path, entry in layerdiff.tree(scene.upper).items():
        mark = " opaque" if entry.kind == "dir" and layerdiff.is_opaque(scene.upper / path) else ""
        print(f"{entry.kind:9} {entry.mode:04o} {path}{mark}")
    out = scene.base / "layer.tar"
    s12_build.reference([str(scene.upper), str(out)])
    print("\\nthe layer (OCI):")
    with tarfile.open(out) as tar:
        for member in tar.getmembers():
            print(f"{'d' if member.isdir() else 'l' if member.issym() else '-'} {member.size:6} {member.name}")
    rootfs = layerdiff.apply_with_umoci(scene.lower, out.read_bytes(), scene.base / "umoci")
    print("\\numoci's tree equals the kernel's merged view:", layerdiff.tree(rootfs) == scene.merged)"""),
 new_markdown_cell("""## 2. A build, three times
The Dockerfile below is built cold (`--no-cache`), again (every instruction from the cache), and once
more after `app.sh`, copied by the second `COPY`, changed: the instructions from that `COPY` on run
again, because each one's cache key includes its parent, which changed."""),
 new_code_cell("""context = buildpush.make_context(Path(tempfile.mkdtemp(prefix="nb12-")))
print(buildpush.DOCKERFILE)
runs = buildpush.three_builds(context)
for label, result in runs.items():
    print(label, result.digest[:19])
    for row in buildpush.timeline_rows(result):
        print("   ", *row)"""),
 new_code_cell("""plots.rebuild_times({label: result.steps for label, result in runs.items()});"""),
 new_markdown_cell("""## 3. Two pushes
A registry of the notebook's own (Debian's docker-registry on 127.0.0.1). The first push sends every
blob; the second image shares the base layer, which the registry already holds: `HEAD` answers 200, or
the blob is mounted from the first repository, and no byte of it travels."""),
 new_code_cell("""from labctl.images import labregistry
second = buildpush.build_second(context)
with labregistry.RegistryServer(Path(tempfile.mkdtemp(prefix="nb12-registry-"))) as server:
    pushes = buildpush.two_pushes(server.host)
for result in pushes:
    print(result.target, sum(b.bytes_sent for b in result.blobs), "bytes sent")
    for row in buildpush.push_rows(result):
        print("   ", *row)
plots.push_bytes({f"push {i + 1}: {p.target.split('/', 1)[1]}": p.blobs for i, p in enumerate(pushes)});"""),
 new_code_cell("""import shutil
buildpush.remove_images()
shutil.rmtree(context)"""),
]

write_notebook(cells, "12-build-push.ipynb")
