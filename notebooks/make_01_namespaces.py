"""Writes notebooks/01-namespaces.ipynb (without outputs). Run: python notebooks/make_01_namespaces.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
    new_markdown_cell("""# Step 1 — namespaces

A container is first of all a process in new namespaces. This notebook starts processes with
`unshare(2)` + `fork(2)` (through `labctl.kernel.namespaces.spawn`, the same code as `labctl step 1`) and
reads `/proc/<pid>/ns/*` to see which namespaces each one shares with this kernel's first processes.
Run it as root (the classroom VM's Jupyter does)."""),
    new_code_cell("""%matplotlib inline
import socket
from labctl.kernel import namespaces
from labctl.plots.namespaces import namespace_sharing"""),
    new_markdown_cell("""Three processes: one with only a new UTS namespace, one with step 1's four (UTS, PID, IPC, mount),
and one that also gets new network and cgroup namespaces (steps 6 and 7)."""),
    new_code_cell("""uts_only = namespaces.spawn(["sleep", "120"], namespaces=["uts"], hostname="only-uts")
step1 = namespaces.spawn(["sleep", "120"], hostname="step1")
more = namespaces.spawn(["sleep", "120"], namespaces=["uts", "pid", "ipc", "mnt", "net", "cgroup"], hostname="more")
procs = {"uts only": uts_only, "step 1 (uts pid ipc mnt)": step1, "+ net + cgroup": more}
for label, proc in procs.items():
    print(f"{label:26} host PID {proc.pid:6}  NSpid {namespaces.pid_inside(proc.pid)}  "
          f"hostname {namespaces.hostname_of(proc.pid)!r}  (ours: {socket.gethostname()!r})")"""),
    new_code_cell("""inodes = {"this notebook": namespaces.namespace_inodes("self")}
inodes.update({label: namespaces.namespace_inodes(proc.pid) for label, proc in procs.items()})
namespace_sharing(inodes, reference="this notebook");"""),
    new_markdown_cell("""Cells marked NEW (hatched) are new namespaces: their inode differs from ours; "shared" cells
have our inode. The `uts only` process still shares
our PID namespace, so it is not PID 1 (its NSpid has one entry); the others are PID 1 of their own.

Joining a namespace is `setns(2)`: `run_in_namespaces_of` forks a child that joins the PID namespace
of `step 1` and reports its own PID there."""),
    new_code_cell("""print("a joiner's PID inside step 1's PID namespace:",
      namespaces.run_in_namespaces_of(step1.pid, lambda: __import__("os").getpid(), kinds=("pid",)))"""),
    new_code_cell("""for proc in procs.values():
    proc.kill()   # SIGKILL to PID 1 ends its PID namespace; kill() also reaps it
print("all stopped:", [proc.returncode for proc in procs.values()])"""),
]

write_notebook(cells, "01-namespaces.ipynb")
