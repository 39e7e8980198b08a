"""The student's runtime: `labctl exercise N -- ARGS` runs an exercise, `labctl lab take|reset|status`
manages the parts of lab/mycontainer (labctl/steps/mycontainer says how). No Docker counterpart.
"""
from __future__ import annotations

import argparse

from labctl.client.parsing import Commands


def add_commands(commands: Commands) -> None:
    p = commands.add("exercise", cmd_exercise, "run your exercise for step N with the lab's Python, from any "
                     "directory (lab/mycontainer importable)",
                     ["sudo labctl exercise 1 -- box1 sh -c 'hostname; echo my PID is $$'",
                      "sudo labctl exercise 2 -- /var/lib/labctl/rootfs/busybox-v1 sh -c 'ps; ls /'",
                      "sudo labctl exercise 7 --file ~/try/exercise.py -- box1 48m sh"])
    p.add_argument("number", help="the step number")
    p.add_argument("--file", help="the exercise to run (default: lab/NN-topic/exercise.py)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="the exercise's own arguments, after --")

    p = commands.add("lab", cmd_lab, "your runtime in lab/mycontainer: take a step's reference part, put "
                     "back its skeleton, or see which parts are yours (your own file is kept as PART.py.mine)",
                     ["labctl lab status",
                      "labctl lab take 2          # skipped step 2? its reference rootfs.py, yours kept",
                      "labctl lab reset 2         # the TODO version of rootfs.py again, yours kept",
                      "LABCTL_LAB_DIR=/tmp/lab labctl lab take 1   # in another copy of lab/"])
    p.add_argument("action", choices=("take", "reset", "status"),
                   help="take: the reference part; reset: the skeleton with its TODOs; status: each part's state")
    p.add_argument("number", nargs="?", help="the step whose part to take or reset")


def cmd_exercise(args) -> int:
    import os
    from labctl import steps
    step = steps.get(args.number)
    command, _ = step.command_to_check(path=args.file)
    extra = args.args[1:] if args.args[:1] == ["--"] else args.args
    os.execv(command[0], command + extra)


def cmd_lab(args) -> int:
    from labctl import ui
    from labctl.errors import LabError
    from labctl.steps import mycontainer
    if args.action == "status":
        rows = [(step, name, state, " ".join(backups)) for step, name, state, backups in mycontainer.status()]
        ui.table(("step", "part", "is", "your earlier versions"), rows,
                 title=f"Your runtime: {mycontainer.runtime_dir()}")
        return 0
    if args.number is None:
        raise LabError(f"`labctl lab {args.action}` needs a step number", f"e.g. `labctl lab {args.action} 2`")
    try:
        step = int(args.number)
    except ValueError:
        raise LabError(f"{args.number!r} is not a step number", "give the step as a number, e.g. 2") from None
    if args.action == "take":
        from labctl.steps.solutions import require_solutions
        require_solutions(f"`labctl lab take {step}`")
    done = mycontainer.put(step, "reference" if args.action == "take" else "skeleton")
    what = "the reference part" if args.action == "take" else "the skeleton (with its TODOs)"
    if not done.changed:
        ui.say(f"{done.path} already is {what} of step {step}")
    else:
        ui.ok(f"{done.path} is now {what} of step {step}")
    if done.backup:
        ui.ok(f"your version is kept as {done.backup}")
    return 0
