"""Writes notebooks/10-oci.ipynb (without outputs). Run: python notebooks/make_10_oci.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
 new_markdown_cell("""# Step 10 — the OCI runtime: one bundle, three runtimes

Docker's daemon hands containerd a **bundle**: a root filesystem and a `config.json` written in the OCI
runtime specification. containerd's shim hands it to **runc** in five commands: `create`, `start`,
`state`, `kill`, `delete`. labctl writes bundles (`labctl bundle`) and is such a runtime itself
(`labctl-runtime`, runc's command line). This notebook writes one bundle, reads its config.json field by
field, runs it in labctl, runc and crun and compares what the kernel shows, then times each phase.
It uses the same library as `labctl step 10`."""),
 new_code_cell("""%matplotlib inline
import json, tempfile
from pathlib import Path
from labctl.demos import ocicompare
from labctl.plots import oci as plots
from labctl.steps.s10_oci import walk
workdir = tempfile.TemporaryDirectory(prefix="labctl-nb10-")
bundle = ocicompare.make_bundle(Path(workdir.name) / "bundle", ["sleep", "30"])
doc = json.loads((bundle / "config.json").read_text())
for field, value in walk(doc):
    print(f"{field:32} {value}")"""),
 new_markdown_cell("""## 1. The same bundle in three runtimes
Each runtime `create`s the container from the same directory; PID 1 then waits on its `exec.fifo`, with
its namespaces, mounts and cgroup made. We read `/proc/PID/*` of each, then delete them."""),
 new_code_cell("""views = ocicompare.compare(bundle)
keys = [k for k in next(iter(views.values())) if k != "mount points"]
print(f"{'kernel state':18}" + "".join(f"{n:>26}" for n in views))
for key in keys:
    print(f"{key:18}" + "".join(f"{str(views[n][key])[:25]:>26}" for n in views))"""),
 new_markdown_cell("""## 2. The lifecycle, with the state JSON at each stage
`state` reads the kernel each time: `created` while PID 1 waits on the FIFO, `running` once `start`
removed it, `stopped` when PID 1 is gone."""),
 new_code_cell("""for stage, state in ocicompare.lifecycle(bundle):
    print(f"{stage:10}", json.dumps(state) if state else "(gone)")"""),
 new_markdown_cell("""## 3. What each phase costs
`/bin/true` in the same profile, `create`, `start` and `delete` timed as separate commands (as the shim
runs them). labctl-runtime is a Python program: its interpreter start is part of every phase."""),
 new_code_cell("""small = ocicompare.make_bundle(Path(workdir.name) / "true", ["/bin/true"])
times = {name: ocicompare.time_phases(small, name, repeat=5) for name in ("labctl", "runc", "crun")}
import statistics
for name, phases in times.items():
    print(f"{name:7}", "  ".join(f"{p} {statistics.median(v) * 1000:.0f} ms" for p, v in phases.items()))"""),
 new_code_cell("""plots.phase_times(times);"""),
 new_code_cell("""workdir.cleanup()"""),
]

write_notebook(cells, "10-oci.ipynb")
