"""Writes notebooks/07-container.ipynb (without outputs). Run: python notebooks/make_07_container.py [OUTPUT]"""
from nbformat.v4 import new_code_cell as code, new_markdown_cell as md

from nbwriter import write_notebook

cells = [
    md("# Step 7 — a whole container\n\n`labctl run` assembles steps 1–6: the image's config, an overlay root, "
       "namespaces (UTS, IPC, mount, PID, network, cgroup, time), a cgroup with limits, volumes, and a supervisor "
       "that outlives `labctl`. This notebook drives the same library the CLI uses (`labctl.containers`)."),
    code("import os\nos.environ.setdefault('LABCTL_STATE_DIR', '/tmp/labctl-notebook-07')\n"
         "from labctl.kernel import namespaces\nfrom labctl.containers import enter, lifecycle, store, stats\n"
         "from labctl.plots import container as plots"),
    md("## The image's config, applied as Docker applies it\nEntrypoint + Cmd, Env merged with `-e`, WorkingDir, User:"),
    code("spec, image = lifecycle.build_spec('busybox', ['sh', '-c', 'id; pwd; echo $GREETING; hostname'],\n"
         "                                   env=['GREETING=hello'], workdir='/tmp', user='student', auto_remove=True)\n"
         "print(image.reference, image.config)\nprint(spec.argv, spec.user, spec.workdir)\n"
         "code, out = lifecycle.run_capture(spec, image)\nprint(out, 'exit code', code)"),
    md("## A detached container, seen from the host\nIts PID 1, its namespaces (which ones are new), and `exec` joining them:"),
    code("spec, image = lifecycle.build_spec('busybox', ['sleep', '60'], detach=True, memory='32m', pids_limit=16)\n"
         "c, _ = lifecycle.run(spec, image)\n"
         "print('host PID', c.pid, 'NSpid', namespaces.pid_inside(c.pid), 'hostname', namespaces.hostname_of(c.pid))\n"
         "for kind, host, mine, shared in namespaces.describe_namespaces(c.pid):\n"
         "    print(f'{kind:7} {\"shared\" if shared else \"new\"}')\n"
         "print(enter.exec_capture(c, ['sh', '-c', 'ps -o pid,comm; cat /proc/self/cgroup | head -3'])[1])\n"
         "lifecycle.remove(store.load(c.id), force=True)"),
    md("## The order in which `labctl run` builds a container\nAn eBPF program (step 8's, `labctl trace --build`) "
       "records every syscall of `labctl run --rm -m 32m --network bridge busybox /bin/true` and its children; "
       "each call is explained by the step that teaches it. One row per phase, in order:"),
    code("from labctl.tracing import buildtrace\nfrom labctl.plots import tracing as trace_plots\n\n"
         "def build():\n    spec, image = lifecycle.build_spec('busybox', ['/bin/true'], auto_remove=True, memory='32m',\n"
         "                                       network='bridge')\n    lifecycle.run_capture(spec, image)\n\n"
         "calls, start = buildtrace.trace_construction(build=build)\n"
         "trace_plots.build_order(calls, start, title='labctl run, phase by phase');"),
    md("## `labctl stats` over time\nFour containers with different workloads and limits, sampled from their cgroups. "
       "The CPU quota caps a spinning shell at `--cpus`; a tmpfs filling up is charged to the memory cgroup and "
       "climbs towards `-m`."),
    code("series = stats.measure_workloads(seconds=5, interval=0.25)\nfig = plots.stats_over_time(series)"),
]

write_notebook(cells, "07-container.ipynb")
