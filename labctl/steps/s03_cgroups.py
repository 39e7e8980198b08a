"""Step 3: cgroups. The demo, the check, and the reference solution of lab/03-cgroups/exercise.py."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from labctl.kernel import cgroups
from labctl.steps import checking
from labctl import state, ui
from labctl.kernel.cgroups import hierarchy
from labctl.demos import cgroups as experiments
from labctl.errors import CheckFailed, require_root

EXPLANATION = """
Namespaces decide what a container **sees**; control groups decide how much it may **use**.
A cgroup is a directory in a cgroup filesystem: `mkdir` creates one, writing a PID into its
`cgroup.procs` moves that process in (its children are born inside), writing a number into a control
file sets a limit, reading files gives statistics, and `rmdir` removes it once it is empty.

| limit (Docker flag) | cgroup v1 file | cgroup v2 file | what the kernel does at the limit |
|---|---|---|---|
| `--memory 64m` | `memory.limit_in_bytes` | `memory.max` | reclaims, then the **OOM killer** SIGKILLs a process |
| `--cpus 0.5` | `cpu.cfs_quota_us` / `cpu.cfs_period_us` | `cpu.max` | **throttles** the group for the rest of each 100 ms period |
| `--pids-limit 32` | `pids.max` | `pids.max` | `fork()` fails with **EAGAIN** |

**v1** mounts one hierarchy per controller (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/cpu`, ...);
**v2** has one tree (`/sys/fs/cgroup`) where a parent enables controllers for its children in
`cgroup.subtree_control`, and a cgroup with enabled controllers may hold no process itself. The lab
finds where each controller is (`/proc/self/mountinfo`, `/proc/self/cgroup`) and works on both.
"""


def demo() -> None:
    require_root("the cgroups demo")
    layout = cgroups.detect()
    rows = [(c, f"v{h.version}", str(h.lab_dir)) for c, h in sorted(layout.by_controller.items())]
    ui.table(("controller", "version", "the lab's cgroups go in"), rows,
             title=f"cgroup layout of this host: {layout.mode} (from /proc/self/mountinfo and /proc/self/cgroup)")

    ui.say("\n[bold]1. Memory[/bold]: the busybox container allocates 1 MiB strings in awk, under --memory 64m.")
    mem = experiments.memory_until_oom("64m")
    peak = max((s.memory_bytes or 0) for s in mem.samples)
    ui.kernel(f"highest memory usage sampled: {cgroups.format_bytes(peak)} of {cgroups.format_bytes(mem.limit_bytes)}")
    ui.kernel(f"oom_kill = {mem.oom_kills} (memory.events / memory.oom_control); the container's PID 1 "
              f"ended by signal {-mem.exit_status if mem.exit_status < 0 else None} (SIGKILL = 9) after {mem.seconds:.1f} s")

    ui.say("\n[bold]2. CPU[/bold]: two busy loops in the container, 1 s under each quota.")
    rows = []
    for quota in (0.25, 0.5, 1.0):
        run = experiments.cpu_under_quota(quota, seconds=1.0)
        rows.append((f"--cpus {quota:g}", f"{run.usage_cpus:.2f}", f"{run.throttled_periods} / {run.periods}",
                     f"{run.throttled_seconds:.2f} s"))
    ui.table(("quota", "CPUs used (cpuacct.usage or cpu.stat usage_usec)", "throttled periods", "throttled time"),
             rows, title="What the CPU controller allowed")

    ui.say("\n[bold]3. Processes[/bold]: a fork bomb under --pids-limit 32.")
    bomb = experiments.fork_bomb(32, seconds=1.0)
    ui.kernel(f"pids.current never went above {bomb.max_seen} (pids.max {bomb.pids_max}); "
              f"pids.events max = {bomb.refused} forks refused with EAGAIN")
    ui.kernel(f"the host stayed responsive: fork+exec of /bin/true took {bomb.host_fork_ms_before:.1f} ms "
              f"before the bomb and {bomb.host_fork_ms_during:.1f} ms during it (medians)")
    ui.ok("every cgroup was removed: the lab's cgroups live under <your cgroup>/labctl only while in use")


# ---------------------------------------------------------------------------------------------
# The check


MEMORY_BYTES = 48 << 20
PIDS_MAX = 24
#: Forks a child that allocates 1 MiB every millisecond (it gets OOM-killed), then execs `sleep 1004`.
MEMORY_PROVER = ("import os, time\nif os.fork() == 0:\n    chunks = []\n    while True:\n"
                 "        chunks.append(bytearray(1 << 20))\n        time.sleep(0.001)\n"
                 "os.wait()\nos.execvp('sleep', ['sleep', '1004'])")
#: Tries to fork 60 sleeping children, then execs `sleep 1005`.
PIDS_PROVER = ("import os, time\nfor i in range(60):\n    try:\n        if os.fork() == 0:\n"
               "            time.sleep(1000)\n            os._exit(0)\n    except OSError:\n        pass\n"
               "os.execvp('sleep', ['sleep', '1005'])")


def _expected(name: str) -> dict[str, tuple[hierarchy.Hierarchy, Path, str]]:
    """{controller: (hierarchy, directory, /proc/<pid>/cgroup path)} where the exercise's cgroups belong."""
    layout = cgroups.detect()
    out = {}
    for controller in ("memory", "pids"):
        h = layout.by_controller.get(controller)
        if h is None:
            raise CheckFailed(f"this host has no {controller} cgroup controller", "the check needs memory and pids")
        directory = h.lab_dir / name
        out[controller] = (h, directory, hierarchy.cgroup_path(h, directory))
    return out


def _cgroup_line(pid: int, h: hierarchy.Hierarchy, controller: str) -> str | None:
    paths = cgroups.cgroup_of(pid)
    return paths.get("") if h.version == 2 else paths.get(hierarchy.V1_NAMES[controller])


def check(command: list[str]) -> list[str]:
    """Judge `command NAME MEMORY_BYTES PIDS_MAX COMMAND...` from /proc/<pid>/cgroup and the cgroup's files."""
    require_root("the step 3 check")
    verified: list[str] = []
    name = checking.unique_name("lab-check3")
    expected = _expected(name)
    # Whatever the exercise leaves (also in hierarchies it had no need for) goes, even after a SIGKILL.
    described = [cgroups.describe_hierarchy(h) for h in cgroups.detect().hierarchies()]
    rec = state.record("cgroup", cgroups.remove_cgroup, name=name, hierarchies=described)

    def tidy() -> None:
        cgroups.remove_cgroup(name, described)
        for other in state.records():  # records a killed reference solution left for this name
            if other.kind == "cgroup" and other.data.get("name") == name and other.path != rec.path:
                state.undo_record(other)

    args = [name, str(MEMORY_BYTES), str(PIDS_MAX)]
    try:
        _check_placement_and_limits(command + args + ["sleep", "1003"], expected, verified)
        tidy()
        _check_exit_and_removal(command + args + ["sh", "-c", "exit 7"], expected, verified)
        _check_background_children(command + args + ["sh", "-c", BACKGROUND], expected, verified)
        tidy()
        _check_memory_bites(command + args + [sys.executable, "-c", MEMORY_PROVER], expected, verified)
        tidy()
        _check_pids_bite(command + args + [sys.executable, "-c", PIDS_PROVER], expected, verified)
    finally:
        tidy()
        rec.forget()
    return verified


def _end_gently(run: checking.Run, pid: int) -> None:
    """Kill the command only, so the exercise sees it end and tidies up as it should."""
    import os
    import signal
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    checking.exit_status(run, timeout=10)


def _check_placement_and_limits(argv, expected, verified) -> None:
    with checking.running(argv) as run:
        pid = checking.process_with_argv(run, ["sleep", "1003"])
        verified.append(f"the exercise started `sleep 1003` (host PID {pid})")
        for controller, (h, directory, want) in expected.items():
            seen = _cgroup_line(pid, h, controller)
            checking.expect(seen == want, f"/proc/{pid}/cgroup puts the command in {controller} cgroup {seen}, "
                            f"not in {want}",
                            "create <parent>/NAME (TODO 1) and write the child's PID into its cgroup.procs "
                            "before exec (TODO 3)", verified,
                            f"/proc/{pid}/cgroup: {controller} cgroup is {want} (cgroup v{h.version})")
        for controller, (h, directory, want) in expected.items():
            file = directory / {(1, "memory"): "memory.limit_in_bytes", (2, "memory"): "memory.max"}.get(
                (h.version, controller), "pids.max")
            value = file.read_text().strip()
            limit = MEMORY_BYTES if controller == "memory" else PIDS_MAX
            checking.expect(value == str(limit), f"{file} holds {value}, not {limit}",
                            f"write the {controller} limit into {file.name} (TODO 2)", verified,
                            f"{file} = {value}")
        _end_gently(run, pid)


def _check_exit_and_removal(argv, expected, verified) -> None:
    status, output = checking.run_to_end(argv, timeout=15)
    checking.expect(status == 7, f"the command exited with 7 but the exercise exited with {status}"
                    + (f"; its output ended with: {output.splitlines()[-1]}" if output else ""),
                    "wait for the child and exit with its status", verified, "the command's exit status is passed on")
    left = sorted({str(d) for _, d, _ in expected.values() if d.exists()})
    checking.expect(not left, f"the exercise left its cgroup behind: {', '.join(left)}",
                    "rmdir each cgroup directory after the command has ended (TODO 4)", verified,
                    "the exercise removed its cgroups when the command ended")


#: A command that ends while the processes it started in the background live on, in the cgroup.
BACKGROUND = "sleep 1006 & sleep 1006 & exit 5"


def _check_background_children(argv, expected, verified) -> None:
    """The README's third "Try it": the command's background children outlive it, so the cgroup is
    not empty when the command ends, and rmdir gives EBUSY until the exercise empties it."""
    with checking.running(argv) as run:
        status = checking.exit_status(run, timeout=15)
        left = sorted({str(d) for _, d, _ in expected.values() if d.exists()})
    did = f"with `sh -c '{BACKGROUND}'` (two children left running in the background) the exercise "
    if status is None:
        raise CheckFailed(did + "did not end within 15 s",
                          "wait for the command's own PID only, then empty and remove the cgroup (TODO 4)")
    wrong = [f"exited with status {status}, not the command's 5"] if status != 5 else []
    wrong += [f"left its cgroup behind: {', '.join(left)} (the check removes it now)"] if left else []
    checking.expect(not wrong, did + " and ".join(wrong),
                    "when the command has ended, processes it started may still be in the cgroup, and rmdir "
                    "fails with EBUSY until none is left: kill what cgroup.procs lists (on v2, writing 1 to "
                    "cgroup.kill does it), wait until it is empty, then rmdir (TODO 4)", verified,
                    "a command that leaves children in the background: its status 5 passed on, the cgroup "
                    "emptied and removed")


def _check_memory_bites(argv, expected, verified) -> None:
    h, directory, _ = expected["memory"]
    with checking.running(argv) as run:
        try:
            pid = checking.process_with_argv(run, ["sleep", "1004"], timeout=30)
        except CheckFailed:
            swapping = _swap_unlimited(h, directory)
            if swapping:
                raise CheckFailed(f"a child allocating without end was not OOM-killed within 30 s: {swapping}",
                                  "limit swap as well: memory.memsw.limit_in_bytes (v1: memory + swap, written "
                                  "after memory.limit_in_bytes) equal to the memory limit, or memory.swap.max "
                                  "(v2: swap alone) 0, as labctl's --memory does") from None
            raise
        if h.version == 2:
            events = dict(line.split() for line in (directory / "memory.events").read_text().splitlines())
            kills, peak_file = int(events.get("oom_kill", 0)), directory / "memory.peak"
        else:
            control = dict(line.split() for line in (directory / "memory.oom_control").read_text().splitlines())
            kills, peak_file = int(control.get("oom_kill", 0)), directory / "memory.max_usage_in_bytes"
        peak = int(peak_file.read_text()) if peak_file.exists() else 0
        _end_gently(run, pid)
    checking.expect(kills >= 1, "a child allocating without end was not OOM-killed in the cgroup",
                    "the memory limit must be set before the command starts (TODO 2, TODO 3)", verified,
                    f"the memory limit bites: oom_kill = {kills} in the cgroup's "
                    f"{'memory.events' if h.version == 2 else 'memory.oom_control'}, peak {peak >> 20} MiB "
                    f"of {MEMORY_BYTES >> 20} MiB")
    checking.expect(peak <= MEMORY_BYTES, f"{peak_file} shows {peak} bytes, above the limit", "set the limit first",
                    verified, f"{peak_file.name} = {peak} <= {MEMORY_BYTES}")


def _swap_unlimited(h: hierarchy.Hierarchy, directory: Path) -> str | None:
    """Why memory can go to swap instead of the OOM killer: the host has swap and the cgroup may use it."""
    with open("/proc/meminfo") as f:
        swap_total = next((int(line.split()[1]) for line in f if line.startswith("SwapTotal:")), 0)
    if swap_total == 0:
        return None
    file = directory / ("memory.swap.max" if h.version == 2 else "memory.memsw.limit_in_bytes")
    if not file.exists():
        return f"this host has {swap_total >> 10} MiB of swap and its kernel accounts no swap per cgroup"
    value = file.read_text().strip()
    if value in ("0", str(MEMORY_BYTES)):
        return None
    return (f"this host has {swap_total >> 10} MiB of swap and {file.name} is {value}: "
            "the pages over the limit were swapped out instead")


def _check_pids_bite(argv, expected, verified) -> None:
    h, directory, _ = expected["pids"]
    with checking.running(argv) as run:
        pid = checking.process_with_argv(run, ["sleep", "1005"], timeout=30)
        current = int((directory / "pids.current").read_text())
        events = dict(line.split() for line in (directory / "pids.events").read_text().splitlines())
        _end_gently(run, pid)
    refused = int(events.get("max", 0))
    checking.expect(current <= PIDS_MAX and refused >= 1,
                    f"pids.current is {current} and pids.events max is {refused} after 60 forks under pids.max {PIDS_MAX}",
                    "write pids.max (TODO 2) before the command starts (TODO 3)", verified,
                    f"the pids limit bites: {current} processes, {refused} forks refused (pids.events max)")


def reference(argv: list[str]) -> int:
    """Reference solution: `NAME MEMORY_BYTES PIDS_MAX COMMAND [ARGS...]`, same contract as the exercise."""
    if len(argv) < 4:
        print("usage: python -m labctl.steps.s03_cgroups NAME MEMORY_BYTES PIDS_MAX COMMAND [ARGS...]", file=sys.stderr)
        return 2
    name, memory_bytes, pids_max, command = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    with cgroups.Cgroup.create(name, cgroups.Limits(memory_bytes=memory_bytes, pids_max=pids_max)) as cg:
        status = cg.popen(command).wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
