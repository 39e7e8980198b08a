"""Writes notebooks/03-cgroups.ipynb (without outputs). Run: python notebooks/make_03_cgroups.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
    new_markdown_cell("""# Step 3 — cgroups: memory, CPU and process limits

A **control group** is a directory in a cgroup filesystem: `mkdir` makes one, writing a PID into its
`cgroup.procs` moves a process in, writing a number into a control file sets a limit, and the kernel
counts what the group uses in files we read back. This notebook runs the three experiments of
`labctl step 3` with `labctl.kernel.cgroups`, the same code as the step, the check and `labctl run`, and plots
what the kernel reported. Run it as root; it takes about ten seconds."""),
    new_code_cell("""from labctl.kernel import cgroups
from labctl.demos import cgroups as experiments
from labctl.plots import cgroups as plots

layout = cgroups.detect()
print("cgroup mode:", layout.mode)
for controller, h in sorted(layout.by_controller.items()):
    print(f"  {controller:8} cgroup v{h.version}  the lab's cgroups go in {h.lab_dir}")"""),
    new_markdown_cell("""## 1. Memory: allocate until the OOM killer acts
The lab's busybox container (its own namespaces and root filesystem) runs `awk`, which appends 1 MiB
strings to an array, under `--memory 64m` (`memory.max`, or `memory.limit_in_bytes` on v1). The
kernel reclaims what it can, and when nothing is left to reclaim, its OOM killer sends SIGKILL."""),
    new_code_cell("""memory = experiments.memory_until_oom("64m", name="nb-oom")
print(f"exit status {memory.exit_status} (-9: SIGKILL), oom_kill = {memory.oom_kills}, "
      f"peak {memory.peak_bytes / 2**20:.1f} MiB, after {memory.seconds:.2f} s")
plots.memory_until_oom(memory);"""),
    new_markdown_cell("""## 2. CPU: busy loops under quotas
Two busy loops (so that even one CPU is a limit) run one second under each quota. `--cpus 0.5` is
`cpu.max = "50000 100000"` on v2 (`cpu.cfs_quota_us = 50000` per `cpu.cfs_period_us = 100000` on v1):
50 ms of CPU time in every 100 ms period, after which the group is **throttled** until the next one."""),
    new_code_cell("""cpu_runs = [experiments.cpu_under_quota(q, seconds=1.0, name="nb-cpu") for q in (0.25, 0.5, 1.0)]
for run in cpu_runs:
    print(f"--cpus {run.quota:<4} used {run.usage_cpus:.3f} CPUs; throttled in {run.throttled_periods} of "
          f"{run.periods} periods, {run.throttled_seconds:.2f} s in all")
plots.cpu_by_quota(cpu_runs);"""),
    new_markdown_cell("""## 3. Processes: a fork bomb under pids.max
Every process forks for ever. Under `--pids-limit 32` (`pids.max = 32`) the kernel refuses the 33rd
process with `EAGAIN`, and counts the refusals in `pids.events`. Meanwhile the host forks as fast as before."""),
    new_code_cell("""bomb = experiments.fork_bomb(32, seconds=1.0, name="nb-bomb")
print(f"highest pids.current {bomb.max_seen} (limit {bomb.pids_max}); {bomb.refused} forks refused")
print(f"host fork+exec of /bin/true: {bomb.host_fork_ms_before:.1f} ms before, {bomb.host_fork_ms_during:.1f} ms during")
plots.pids_vs_limit(bomb);"""),
    new_markdown_cell("""Every cgroup the experiments made is gone: the lab creates them under `<your cgroup>/labctl`
and removes them when each experiment ends (and `labctl cleanup` would, had this kernel been interrupted)."""),
    new_code_cell("""print([str(h.lab_dir) for h in layout.hierarchies() if h.lab_dir.exists()] or "no labctl/ node left")"""),
]

write_notebook(cells, "03-cgroups.ipynb")
