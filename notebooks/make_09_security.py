"""Writes notebooks/09-security.ipynb (without outputs). Run: python notebooks/make_09_security.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
 new_markdown_cell("""# Step 9 — security: each defence, shown by the attack it stops

Namespaces change what a container's root **sees**, not what it **may do**. An attacker
(`labctl/demos/attacker.c`, a static C program) runs as root in containers with different security
profiles and tries what an intruder tries against the host: a device node for the host's disk, a mount,
`/proc/sysrq-trigger`, `/proc/sys`, `/proc/kcore`, a kernel module, a user namespace, the clock, and a
setuid-root binary planted through a volume. Each cell below is what the kernel answered, measured now.
This notebook uses the same library as `labctl run`, `labctl step 9` and `labctl check 9`."""),
 new_code_cell("""%matplotlib inline
from labctl.demos import attacks, seccompcost
from labctl.plots import security as plots
from labctl.security import capabilities
with attacks.target_disk() as (major, minor, what):
    print(f"the host's block device the attacker aims at: {major}:{minor}, {what}")"""),
 new_markdown_cell("""## 1. Attack × defence
First a `--privileged` container (every capability, no filter, every device, `/proc` and `/sys` as the
host has them), then the defences added **one at a time**, each on top of the ones before: after
`+ seccomp` the container has `labctl run`'s default profile, and `+ userns remap` is the last layer.
"absent" means this kernel was built without the feature (no `/proc/kcore`, no module loader)."""),
 new_code_cell("""columns = attacks.matrix()
for name, outcomes in columns.items():
    print(f"{name:16}", "  ".join(f"{a}={o.text}" for a, o in outcomes.items()))"""),
 new_code_cell("""plots.attack_matrix(columns, list(attacks.ATTACKS));"""),
 new_markdown_cell("""## 2. What the kernel holds for a default container
`/proc/PID/status` of the container's PID 1: the five capability sets (decoded), `NoNewPrivs`, and
`Seccomp` (0 none, 1 strict, 2 a filter)."""),
 new_code_cell("""from labctl.containers import lifecycle
from labctl.steps.s09_security import status_fields
for flags in ([], ["--privileged"]):
    spec, image = lifecycle.build_spec("localhost/busybox:latest", ["sleep", "30"], detach=True,
                                       security=attacks.default_profile() if not flags else attacks.privileged())
    container, _ = lifecycle.run(spec, image)
    try:
        fields = status_fields(container.pid)
    finally:
        lifecycle.remove(container, force=True)
    print("labctl run", " ".join(flags) or "(default)")
    for key in ("CapBnd", "CapEff", "CapInh", "CapAmb"):
        names = capabilities.from_mask(fields[key])
        print(f"  {key}: {fields[key]}  {len(names)} capabilities" + (f": {', '.join(n[4:] for n in names)}" if len(names) < 20 else ""))
    print(f"  NoNewPrivs: {fields['NoNewPrivs']}  Seccomp: {fields['Seccomp']}")"""),
 new_markdown_cell("""## 3. The denied calls, live
Step 8's tracers watch one container; this one (`labctl trace NAME --denied`) keeps the system calls that
returned EPERM or EACCES (`raw_syscalls:sys_exit`). The attacker runs in a default container while it
watches: seccomp's EPERM for `unshare`, the missing capabilities' EPERM for the others."""),
 new_code_cell("""from labctl.tracing.denied import DeniedTracer
events = attacks.denied_calls(("mount", "userns", "clock", "module"))
t0 = events[0]["ts"] if events else 0
print(DeniedTracer.HEADER)
for ev in events:
    print(DeniedTracer.format(ev, t0))"""),
 new_markdown_cell("""## 4. What the filter costs
`dd bs=1` makes two system calls per byte; each goes through the filter. labctl with Docker's profile
against `--security-opt seccomp=unconfined`, and runc with the same profile in its config.json against
`runc spec`'s config, which has none. Read the ratio of each runtime to itself: this machine is shared."""),
 new_code_cell("""costs = seccompcost.measure(count=100_000, runs=3)
for c in costs:
    print(f"{c.runtime:7} {'filter' if c.filtered else 'none':7} {c.ns_per_call:7.0f} ns/call (min {c.low:.0f}, max {c.high:.0f})")"""),
 new_code_cell("""plots.seccomp_cost(costs);"""),
]

write_notebook(cells, "09-security.ipynb")
