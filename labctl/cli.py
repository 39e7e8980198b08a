"""labctl's command line: argument parsing only. Each command calls into the library modules.

Heavy modules (rich, pyroute2, bcc, matplotlib) are imported inside the commands that use them, so
`labctl --help` answers at once.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


# ---------------------------------------------------------------------------------------------
# Commands: each takes the parsed arguments and returns an exit status.


def cmd_doctor(args) -> int:
    from labctl import doctor
    return doctor.main(json_output=args.json)


def cmd_steps(args) -> int:
    from labctl import steps, ui
    rows = []
    for step in steps.CURRICULUM:
        rows.append((step.number, step.topic, "yes" if step.available else "not yet",
                     str(step.lab_dir.relative_to(steps.lab_root().parent)) if step.lab_dir.exists() else ""))
    ui.table(("step", "topic", "available", "exercise"), rows, title="The curriculum")
    return 0


def cmd_step(args) -> int:
    from labctl import steps, ui
    step = steps.get(args.number)
    _require_root(f"`labctl step {step.number}`")
    module = step.load()
    ui.heading(f"Step {step.number}: {module.TITLE}")
    if not args.no_explain:
        ui.markdown(module.EXPLANATION)
    module.demo()
    return 0


def cmd_check(args) -> int:
    from labctl import steps, ui
    from labctl.errors import CheckFailed
    step = steps.get(args.number)
    _require_root(f"`labctl check {step.number}`")
    module = step.load()
    if args.reference:
        command, what = step.reference_command(), "the reference solution"
    else:
        path = args.file or step.exercise
        if not os.path.exists(path):
            from labctl.errors import LabError
            raise LabError(f"no exercise at {path}", f"give its path with --file, or restore lab/ from git")
        command, what = step.exercise_command(path), str(path)
    ui.heading(f"Checking step {step.number} ({module.TITLE}): {what}")
    try:
        verified = module.check(command)
    except CheckFailed as exc:
        ui.bad(exc.cause)
        if exc.fix:
            ui.say(f"  [bold]hint:[/bold] {exc.fix}")
        ui.say("[red]FAIL[/red]")
        return 1
    for line in verified:
        ui.ok(line)
    ui.say("[green]PASS[/green]")
    return 0


def cmd_tour(args) -> int:
    from labctl import steps, ui
    _require_root("`labctl tour`")
    selected = [steps.get(n) for n in args.steps] if args.steps else steps.available()
    for step in selected:
        module = step.load()
        ui.heading(f"Step {step.number}: {module.TITLE}")
        if not args.no_explain:
            ui.markdown(module.EXPLANATION)
        module.demo()
    ui.heading("Tour complete")
    ui.say(f"Steps run: {', '.join(str(s.number) for s in selected)}. "
           "Try the exercises: `labctl check N` judges lab/NN-*/exercise.py.")
    return 0


def cmd_cleanup(args) -> int:
    from labctl import state, ui
    _require_root("`labctl cleanup`")
    left = state.records()
    if not left:
        ui.say("Nothing to clean up: the journal is empty.")
    errors = state.cleanup(report=ui.ok)
    for line in errors:
        ui.bad(line)
    return 1 if errors else 0


def cmd_prepare(args) -> int:
    from labctl import labimage, ui
    _require_root("`labctl prepare`")
    path = labimage.ensure_busybox_rootfs()
    ui.ok(f"busybox root filesystem at {path}")
    return 0


def cmd_cgroup_info(args) -> int:
    from labctl import cgroups, ui
    layout = cgroups.detect()
    rows = [(c, f"v{h.version}", str(h.mountpoint), h.own_path, str(h.lab_dir))
            for c, h in sorted(layout.by_controller.items())]
    ui.table(("controller", "version", "hierarchy", "this process's cgroup", "the lab's cgroups go in"), rows,
             title=f"cgroups on this host: {layout.mode}")
    return 0


def cmd_cgroup_run(args) -> int:
    from labctl import cgroups, ui
    _require_root("`labctl cgroup run`")
    if not args.command:
        from labctl.errors import LabError
        raise LabError("no command given", "put it after the options, e.g. `labctl cgroup run -m 64m -- sh`")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    limits = cgroups.from_arguments(args)
    name = args.name or f"run-{os.getpid()}"
    with cgroups.Cgroup.create(name, limits) as cg:
        ui.say(f"cgroup {name} ({limits.describe()}): {', '.join(str(d) for d in cg.dirs.values())}")
        before = cg.stats()
        status = cg.popen(command).wait()
        after = cg.stats()
        ui.kernel(f"exit status {status}; memory peak {cgroups.format_bytes(after.memory_peak_bytes or 0)}, "
                  f"OOM kills {after.oom_kills}, CPU {((after.cpu_usage_ns or 0) - (before.cpu_usage_ns or 0)) / 1e9:.2f} s, "
                  f"throttled periods {after.cpu_throttled_periods}, forks refused {after.pids_refused}")
    return 128 - status if status < 0 else status


# ---------------------------------------------------------------------------------------------


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        from labctl.errors import NotRootError
        raise NotRootError(what)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labctl", formatter_class=_Formatter,
        description="Build a Linux container from the kernel primitives up, one step at a time.",
        epilog=_examples("labctl doctor                 # is this machine ready for the lab?",
                         "labctl tour                   # every step, live, in order",
                         "labctl step 1                 # namespaces, explained and shown",
                         "labctl check 1                # judge your lab/01-namespaces/exercise.py",
                         "labctl cleanup                # remove whatever a crashed step left"))
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version="labctl 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, func, help_text, examples, **kw):
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter,
                           epilog=_examples(*examples), **kw)
        p.set_defaults(func=func)
        return p

    p = add("doctor", cmd_doctor, "check that this machine has what the lab needs",
            ["labctl doctor", "labctl doctor --json | jq '.[] | select(.status != \"pass\")'"])
    p.add_argument("--json", action="store_true", help="print the rows as JSON")

    add("steps", cmd_steps, "list the curriculum and which steps are available", ["labctl steps"])

    p = add("step", cmd_step, "explain a step and run its reference implementation live",
            ["labctl step 1", "labctl step 2 --no-explain"])
    p.add_argument("number", help="the step number (see `labctl steps`)")
    p.add_argument("--no-explain", action="store_true", help="skip the explanation, run the demo only")

    p = add("check", cmd_check, "judge your exercise for a step by what the kernel shows",
            ["labctl check 1", "labctl check 2 --file ~/my-rootfs-solution.py",
             "labctl check 1 --reference   # what passing looks like"])
    p.add_argument("number", help="the step number")
    p.add_argument("--reference", action="store_true", help="judge the reference solution instead")
    p.add_argument("--file", help="the exercise to judge (default: lab/NN-topic/exercise.py)")

    p = add("tour", cmd_tour, "run every available step in order, on the embedded lab image",
            ["labctl tour", "labctl tour --steps 1 2 --no-explain"])
    p.add_argument("--steps", nargs="+", metavar="N", help="only these steps")
    p.add_argument("--no-explain", action="store_true", help="skip the explanations")

    add("cleanup", cmd_cleanup, "remove every kernel object and mount the lab recorded (after a crash too)",
        ["labctl cleanup"])
    add("prepare", cmd_prepare, "build the embedded lab image(s) locally (provisioning runs this)",
        ["labctl prepare"])

    p = add("cgroup", None, "cgroups (step 3): where each controller is, and running a command under limits",
            ["labctl cgroup info", "labctl cgroup run -m 64m --cpus 0.5 --pids-limit 32 -- sh -c 'echo hi'"])
    cg_sub = p.add_subparsers(dest="cgroup_command", metavar="SUBCOMMAND")
    q = cg_sub.add_parser("info", help="which cgroup version holds each controller, and where the lab nests",
                          formatter_class=_Formatter, epilog=_examples("labctl cgroup info"))
    q.set_defaults(func=cmd_cgroup_info)
    q = cg_sub.add_parser("run", help="run a command in a new cgroup with Docker-style limits, then show its usage",
                          formatter_class=_Formatter,
                          epilog=_examples("labctl cgroup run -m 64m -- python3 -c 'x = bytearray(100 << 20)'",
                                           "labctl cgroup run --cpus 0.25 -- timeout 2 sh -c 'while :; do :; done'"))
    q.add_argument("--name", help="the cgroup's name under labctl/ (default run-PID)")
    from labctl.cgroups.limits import add_arguments as add_limit_arguments
    add_limit_arguments(q)
    q.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")
    q.set_defaults(func=cmd_cgroup_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from labctl.errors import LabError
    # SIGTERM ends a command like Ctrl-C does, so `finally` blocks undo what the command made.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args) or 0
    except LabError as exc:
        if args.debug:
            raise
        from labctl.ui import error_line
        error_line(str(exc))
        return 2
    except KeyboardInterrupt:
        print("labctl: interrupted; what the command created was removed", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
