"""The teaching commands: hint, progress, class. No Docker counterpart, like course.py's.

`labctl hint` climbs a step's hint ladder (labctl/steps/hints.py, data in lab/NN-topic/hints.toml),
`labctl progress` shows or exports the student's record of checks and hints (labctl/steps/progress.py),
`labctl class` shows or sets whether this class sees solutions (labctl/steps/solutions.py). Like every
command module, this one parses and prints; course.py's `labctl check` calls note_check() to record.
"""
from __future__ import annotations

from labctl.client.parsing import Commands


def add_commands(commands: Commands) -> None:
    p = commands.add("hint", cmd_hint, "the next hint for a step: the concept, then the syscall and its man "
                     "page, then the code, then (if the class allows) the solution",
                     ["labctl hint 1            # the next hint of step 1 you have not seen",
                      "labctl hint 2 3          # hint 3 of step 2's ladder, again",
                      "labctl hint 3 --list     # the ladder's titles, and which you have seen"])
    p.add_argument("number", help="the step number")
    p.add_argument("rung", nargs="?", type=int, help="which hint (1 = the concept); default: the next one")
    p.add_argument("--list", action="store_true", help="list the ladder's rungs instead of showing one")

    p = commands.add("progress", cmd_progress, "your record of checks (result, time, cause) and hints taken; "
                     "--export for the teacher",
                     ["labctl progress",
                      "labctl progress --export csv > $USER.csv    # for the teacher",
                      "labctl progress --export json | jq '.steps[] | select(.status != \"pass\")'"])
    p.add_argument("--export", choices=("csv", "json"), help="print the record as CSV or JSON instead of a table")

    p = commands.add("class", cmd_class, "show or set whether this class sees solutions "
                     "(/etc/labctl/class.toml)",
                     ["labctl class", "sudo labctl class --solutions off   # hide them from the class",
                      "sudo labctl class --solutions on    # show them (the default without a setting)"])
    p.add_argument("--solutions", choices=("on", "off"), help="show (on) or hide (off) the solutions")


def cmd_hint(args) -> int:
    from labctl import steps, ui
    from labctl.steps import hints, progress
    step = steps.get(args.number)
    ladder = hints.load(step)
    seen = progress.rungs_seen(progress.load(), step.number)
    if args.list:
        _list(step, ladder, seen)
        return 0
    last = len(ladder.rungs)
    k = args.rung if args.rung is not None else next((r.number for r in ladder.rungs if r.number not in seen), last + 1)
    if not 1 <= k <= last + 1:
        from labctl.errors import LabError
        raise LabError(f"step {step.number}'s ladder has rungs 1 to {last}, and {last + 1} is its solution; "
                       f"there is no rung {k}", f"`labctl hint {step.number} --list` shows them")
    if k == last + 1:
        from labctl.steps.solutions import require_solutions
        require_solutions(f"`labctl hint {step.number} {k}` (past the last rung)")
        ui.heading(f"Step {step.number}: the reference solution")
        ui.markdown(hints.solution(step, ladder))
        _note_hint(step.number, k, solution=True)
        return 0
    rung = ladder.rung(k)
    ui.heading(f"Step {step.number}, hint {k} of {last} ({hints.KIND_NAMES[rung.kind]}): {rung.title}")
    ui.markdown(rung.text)
    _note_hint(step.number, k)
    ui.say("")
    ui.say(f"Next: `labctl hint {step.number}` gives hint {k + 1}." if k < last else
           f"That was the last hint. `labctl hint {step.number} {last + 1}` shows the reference solution, "
           "if your class allows it.")
    return 0


def _note_hint(number: int, k: int, solution: bool = False) -> None:
    """Remember the rung shown; if the record cannot be written, say so in one line (the hint stands)."""
    from labctl import ui
    from labctl.errors import LabError
    from labctl.steps import progress
    try:
        progress.record_hint(number, k, solution=solution)
    except LabError as exc:
        from rich.markup import escape
        ui.warn(escape(f"not remembered: {exc}"))


def _list(step, ladder, seen: list[int]) -> None:
    from labctl import ui
    from labctl.steps import hints
    rows = [(r.number, hints.KIND_NAMES[r.kind], r.title, "seen" if r.number in seen else "")
            for r in ladder.rungs]
    rows.append((len(ladder.rungs) + 1, "the solution", "the reference solution", ""))
    ui.table(("hint", "gives", "title", "you"), rows, title=f"Step {step.number}'s hint ladder ({ladder.path.name})")


def cmd_progress(args) -> int:
    import sys
    from labctl import steps, ui
    from labctl.steps import hints, progress
    record = progress.load()
    ladders = []
    for step in steps.available():
        try:
            size = len(hints.load(step).rungs)
        except Exception:   # a step without a ladder (yet), or one a teacher is editing: no rungs to count
            size = 0
        ladders.append((step.number, step.topic, size))
    rows = progress.summary(record, ladders)
    if args.export:
        sys.stdout.write(progress.export_csv(record, rows) if args.export == "csv" else
                         progress.export_json(record, rows) + "\n")
        return 0
    if not record["steps"]:
        ui.say(f"No progress recorded yet in {progress.progress_file()}: `sudo labctl check 1` starts it.")
        return 0
    ui.table(("step", "title", "status", "attempts", "last check", "hints used"),
             [(r["step"], r["title"], r["status"], r["attempts"] or "", r["last_time"].replace("T", " "),
               _hints_used(r)) for r in rows],
             title=f"Progress of {record.get('user', '?')} ({progress.progress_file()})")
    return 0


def _hints_used(row: dict) -> str:
    used = [f"{row['hints_seen']}/{row['rungs']}"] if row["hints_seen"] else []
    return " + ".join(used + (["solution"] if row["solution_seen"] else []))


def cmd_class(args) -> int:
    from labctl import ui
    from labctl.steps import solutions
    if args.solutions:
        from labctl.errors import require_root
        require_root("`labctl class --solutions`")
        path = solutions.set_solutions(args.solutions == "on")
        ui.ok(f"solutions are now {'shown' if args.solutions == 'on' else 'hidden'} in this class ({path})")
        return 0
    allowed = solutions.solutions_allowed()
    origin = solutions.class_file()
    ui.say(f"solutions: {'shown' if allowed else 'hidden'} "
           f"({'set in ' + str(origin) if 'solutions' in solutions.read_class() else 'the default: no setting in ' + str(origin)})")
    return 0


def note_check(number: int, reference: bool, cause: str | None) -> None:
    """Record a `labctl check` result in the student's progress record. A record that cannot be
    written (damaged, unwritable) costs one warning line, never the check's own result."""
    from labctl import ui
    from labctl.errors import LabError
    from labctl.steps import progress
    try:
        progress.record_check(number, passed=cause is None, cause=cause, reference=reference)
    except LabError as exc:
        from rich.markup import escape
        ui.warn(escape(f"progress not recorded: {exc}"))
