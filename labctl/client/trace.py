"""The tracing command (step 8): `labctl trace`, bcc programs on tracepoints scoped to one container
(Docker has none; `docker events` and `docker top` show far less). The work is done in labctl/tracing.
"""
from __future__ import annotations

from labctl.client.parsing import Commands
from labctl.errors import require_root

KINDS = ("exec", "open", "syscalls", "net", "oom", "denied")


def add_commands(commands: Commands) -> None:
    p = commands.add("trace", cmd_trace, "watch one container with eBPF (bcc programs on tracepoints)",
                     ["labctl trace 4242 --exec              # fork/exec/exit in the container of PID 4242",
                      "labctl trace 4242 --open --duration 5  # files it opens, for 5 seconds",
                      "labctl trace 4242 --syscalls --top 10  # syscall counts, printed at Ctrl-C",
                      "labctl trace 4242 --net --json         # TCP state changes, one JSON object per line",
                      "labctl trace 4242 --oom                # OOM kills in it",
                      "labctl trace web --denied --cgroup     # calls refused with EPERM (seccomp, capabilities)",
                      "labctl trace --build                   # the syscalls the lab makes to build a container"])
    p.add_argument("container", nargs="?", help="a host PID of a process in the container (or a container name)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--exec", action="store_true", help="fork, exec (with argv) and exit, like execsnoop")
    what.add_argument("--open", action="store_true", help="openat calls, like opensnoop")
    what.add_argument("--syscalls", action="store_true", help="count syscalls, like syscount")
    what.add_argument("--net", action="store_true", help="TCP state changes, like tcpstates")
    what.add_argument("--oom", action="store_true", help="OOM kills, like oomkill")
    what.add_argument("--denied", action="store_true",
                      help="syscalls that failed with EPERM or EACCES: what seccomp and capabilities stop (step 9)")
    what.add_argument("--build", action="store_true",
                      help="build a container (steps 1-3) and show the syscalls that built it, annotated")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: at Ctrl-C)")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--cgroup", action="store_true", help="also require the container's cgroup (cgroup v2 only)")
    p.add_argument("--top", type=int, default=15, metavar="N", help="--syscalls: show the N most frequent")


def cmd_trace(args) -> int:
    from labctl import tracing
    from labctl.errors import LabError
    require_root("`labctl trace`")
    # A tracer that Ctrl-C or SIGTERM ends has done its job: it detaches and exits 0.
    if args.build:
        return tracing.trace_build(json_output=args.json, debug=args.debug)
    kinds = [k for k in KINDS if getattr(args, k)]
    if args.container is None or len(kinds) != 1:
        raise LabError("give a container and one of --exec, --open, --syscalls, --net, --oom, --denied (or --build)",
                       "e.g. `labctl trace 4242 --exec`; `labctl trace --help` shows more")
    return tracing.trace_container(args.container, kinds[0], duration=args.duration, json_output=args.json,
                                   by_cgroup=args.cgroup, top=args.top, debug=args.debug)
