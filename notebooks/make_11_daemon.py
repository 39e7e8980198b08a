"""Writes notebooks/11-daemon.ipynb (without outputs). Run: python notebooks/make_11_daemon.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
 new_markdown_cell("""# Step 11 — client and daemon: a REST API over a Unix socket

`docker` makes no containers: it sends REST requests (the Docker Engine API) over a Unix socket to a
daemon running as root, which does the work. labctl has the same split: `labctl daemon` serves a subset
of Engine API v1.41. This notebook starts a daemon on a socket of its own, watches the requests of one
`docker run` cross the socket (the daemon logs each with the client's PID from `SO_PEERCRED`), runs
containers with a client of a few lines of standard-library Python, and plots where the time goes.
It uses the same library as `labctl step 11`."""),
 new_code_cell("""%matplotlib inline
import os, stat, subprocess
from labctl.demos import daemonrun
from labctl.plots import daemon as plots
daemon = daemonrun.start_private()
st = os.stat(daemon.socket)
print(daemon.socket, stat.filemode(st.st_mode), "uid", st.st_uid, "gid", st.st_gid)"""),
 new_markdown_cell("""## 1. The requests of one `docker run`
The daemon logs a request when its answer ends, so `attach` and `wait`, sent before `start` and answered
when the container has ended, come after it. `--rm` sends no DELETE: the daemon removes the container
itself (HostConfig.AutoRemove)."""),
 new_code_cell("""name, argv, env = daemonrun.client(daemon.socket, ["run", "--rm", "busybox", "echo", "hello"])
client = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
print(client.communicate()[0].strip(), f"| {name}'s PID:", client.pid)
for r in daemon.requests(client.pid):
    print(f"pid={r.pid} {r.method:6} {r.path[:90]:90} {r.status} {r.ms:7.1f} ms")"""),
 new_markdown_cell("""## 2. HTTP/1.1 by hand
`daemonrun.exchange` writes a request line, three headers and a body to an `AF_UNIX` socket and reads
the answer: `Content-Length` bytes, or chunks (`wait`'s answer is chunked: its length is unknown when the
daemon sends the headers)."""),
 new_code_cell("""print(daemonrun.exchange(daemon.socket, "GET", "/v1.41/version"))
times, code, cid = daemonrun.timed_run(daemon.socket, "busybox", ["sh", "-c", "exit 3"])
print(cid[:12], "exit code", code, {p: f"{t * 1000:.1f} ms" for p, t in times.items()})
for event in daemonrun.events(daemon.socket, since=0):
    if event.get("id") == cid:
        print(event["Action"], event["Actor"]["Attributes"])"""),
 new_markdown_cell("""## 3. Where the time goes
Twenty containers running `/bin/true`, each created, started, waited for and deleted. `create` prepares
the root filesystem (the first one may unpack the image), `start` makes the namespaces, cgroup and mounts
and execs, `wait` covers the container's life and the daemon noticing its end, `delete` removes it all."""),
 new_code_cell("""runs = [daemonrun.timed_run(daemon.socket, "busybox", ["/bin/true"])[0] for _ in range(20)]
import statistics
for phase in runs[0]:
    print(f"{phase:7} median {statistics.median(r[phase] for r in runs) * 1000:6.1f} ms")
plots.request_latency(runs);"""),
 new_markdown_cell("""## 4. One `docker run`, from `connect()` to `execve()`, in the kernel
A bcc program (`labctl/tracing/daemontrace.py`, step 8's tracepoints: `syscalls:sys_enter_connect`,
`sys_exit_accept4`, `sys_exit_recvfrom`, `sched:sched_process_fork`, `sys_enter_unshare`, `sys_enter_mount`,
`cgroup:cgroup_attach_task`, `sched:sched_process_exec`) follows the client and the daemon, and every process
the daemon forks. The roles are read from the forks: the daemon forks a *helper*, which forks the
*supervisor* (the shim) and exits; the process that unshares `CLONE_NEWPID` is the supervisor, and its next
child is *PID 1*. The timeline starts at the client's first `connect()` on the daemon's socket and ends at
PID 1's `execve("/bin/true")`."""),
 new_code_cell("""from labctl.tracing.daemontimeline import format_timeline
traced, steps, phases = daemonrun.traced_run(daemon.socket, ["run", "--rm", "busybox", "true"])
print("\\n".join(format_timeline(steps)))
for name, ms in phases:
    print(f"{name:40} {ms:7.1f} ms")
plots.timeline(steps, phases);"""),
 new_code_cell("""daemon.stop()"""),
]

write_notebook(cells, "11-daemon.ipynb")
