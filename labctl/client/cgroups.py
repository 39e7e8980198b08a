"""The cgroup commands (step 3): `labctl cgroup info` and `labctl cgroup run`. Docker has no command of
its own for cgroups (its `run --memory`, `--cpus`, ... flags write them); these show the layer alone.
The work is done in labctl/kernel/cgroups.
"""
from __future__ import annotations

import argparse
import os

from labctl.client.parsing import Commands, Formatter, examples
from labctl.errors import require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("cgroup", None, "cgroups (step 3): where each controller is, and running a command under limits",
                     ["labctl cgroup info", "labctl cgroup run -m 64m --cpus 0.5 --pids-limit 32 -- sh -c 'echo hi'"])
    subcommands = p.add_subparsers(dest="cgroup_command", metavar="SUBCOMMAND")
    q = subcommands.add_parser("info", help="which cgroup version holds each controller, and where the lab nests",
                               formatter_class=Formatter, epilog=examples("labctl cgroup info"))
    q.set_defaults(func=cmd_cgroup_info)
    q = subcommands.add_parser("run", help="run a command in a new cgroup with Docker-style limits, then show its usage",
                               formatter_class=Formatter,
                               epilog=examples("labctl cgroup run -m 64m -- python3 -c 'x = bytearray(100 << 20)'",
                                               "labctl cgroup run --cpus 0.25 -- timeout 2 sh -c 'while :; do :; done'"))
    q.add_argument("--name", help="the cgroup's name under labctl/ (default run-PID)")
    from labctl.kernel.cgroups.limits import add_arguments as add_limit_arguments
    add_limit_arguments(q)
    q.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")
    q.set_defaults(func=cmd_cgroup_run)


def cmd_cgroup_info(args) -> int:
    from labctl.kernel import cgroups
    from labctl import ui
    layout = cgroups.detect()
    rows = [(c, f"v{h.version}", str(h.mountpoint), h.own_path, str(h.lab_dir))
            for c, h in sorted(layout.by_controller.items())]
    ui.table(("controller", "version", "hierarchy", "this process's cgroup", "the lab's cgroups go in"), rows,
             title=f"cgroups on this host: {layout.mode}")
    return 0


def cmd_cgroup_run(args) -> int:
    from labctl.kernel import cgroups
    from labctl import ui
    from labctl.errors import LabError
    require_root("`labctl cgroup run`")
    if not args.command:
        raise LabError("no command given", "put it after the options, e.g. `labctl cgroup run -m 64m -- sh`")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    limits = cgroups.from_arguments(args)
    name = args.name or f"run-{os.getpid()}"
    with cgroups.Cgroup.create(name, limits) as cg:
        ui.say(f"cgroup {name} ({limits.describe()}): {', '.join(str(d) for d in cg.dirs.values())}")
        before = cg.stats()
        try:
            proc = cg.popen(command)
        except OSError as exc:
            raise LabError(f"cannot run {command[0]!r}: {exc.strerror}",
                           "check the command: is it installed, on PATH and executable?") from None
        status = proc.wait()
        after = cg.stats()
        cpu_seconds = ((after.cpu_usage_ns or 0) - (before.cpu_usage_ns or 0)) / 1e9
        ui.kernel(f"exit status {status}; memory peak {cgroups.format_bytes(after.memory_peak_bytes or 0)}, "
                  f"OOM kills {after.oom_kills}, CPU {cpu_seconds:.2f} s, "
                  f"throttled periods {after.cpu_throttled_periods}, forks refused {after.pids_refused}")
    return 128 - status if status < 0 else status
