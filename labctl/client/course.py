"""The course's commands: doctor, steps, step, check, tour, cleanup, prepare.

They have no Docker counterpart: they run the curriculum (labctl/steps) and keep the machine ready
for it. Like every command module, this one parses and prints; the work is done in the library.
"""
from __future__ import annotations

from labctl.client.parsing import Commands
from labctl.errors import require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("doctor", cmd_doctor, "check that this machine has what the lab needs",
                     ["labctl doctor", "labctl doctor --json | jq '.[] | select(.status != \"pass\")'"])
    p.add_argument("--json", action="store_true", help="print the rows as JSON")

    commands.add("steps", cmd_steps, "list the curriculum and which steps are available", ["labctl steps"])

    p = commands.add("step", cmd_step, "explain a step and run its reference implementation live",
                     ["labctl step 1", "labctl step 2 --no-explain"])
    p.add_argument("number", help="the step number (see `labctl steps`)")
    p.add_argument("--no-explain", action="store_true", help="skip the explanation, run the demo only")

    p = commands.add("check", cmd_check, "judge your exercise for a step by what the kernel shows",
                     ["labctl check 1", "labctl check 2 --file ~/my-rootfs-solution.py",
                      "labctl check 1 --reference   # what passing looks like (if the class shows solutions)",
                      "labctl progress              # every check's result is recorded there"])
    p.add_argument("number", help="the step number")
    p.add_argument("--reference", action="store_true", help="judge the reference solution instead")
    p.add_argument("--file", help="the exercise to judge (default: lab/NN-topic/exercise.py)")

    p = commands.add("tour", cmd_tour, "run every available step in order, on the embedded lab image",
                     ["labctl tour", "labctl tour --steps 1 2 --no-explain"])
    p.add_argument("--steps", nargs="+", metavar="N", help="only these steps")
    p.add_argument("--no-explain", action="store_true", help="skip the explanations")

    p = commands.add("cleanup", cmd_cleanup, "remove every kernel object and mount the lab recorded, and the "
                     "image store's half-written files (after a crash too); running containers (their "
                     "supervisor alive) are left running unless --all is given",
                     ["labctl cleanup", "labctl cleanup --all   # running containers too"])
    p.add_argument("--all", action="store_true",
                   help="also stop and remove running containers (default: only what crashed or was killed)")
    commands.add("prepare", cmd_prepare, "build the embedded lab image(s) locally (provisioning runs this)",
                 ["labctl prepare"])


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
    from labctl import steps
    step = steps.get(args.number)
    require_root(f"`labctl step {step.number}`")
    _show(step, explain=not args.no_explain)
    return 0


def cmd_check(args) -> int:
    from labctl import steps, ui
    from labctl.client.teaching import note_check
    from labctl.errors import CheckFailed
    from labctl.steps import checking
    step = steps.get(args.number)
    if args.reference:
        from labctl.steps.solutions import require_solutions
        require_solutions(f"`labctl check {step.number} --reference`")
    require_root(f"`labctl check {step.number}`")
    module = step.load()
    command, what = step.command_to_check(reference=args.reference, path=args.file)
    ui.heading(f"Checking step {step.number} ({step.topic}): {what}")
    try:
        verified = checking.judge(module.check, command)
    except CheckFailed as exc:
        ui.bad(exc.cause)
        for line in exc.details:
            ui.quoted(f"    {line}")
        if exc.fix:
            ui.say(f"  [bold]hint:[/bold] {exc.fix}")
        ui.say("[red]FAIL[/red]")
        note_check(step.number, args.reference, exc.cause)
        return 1
    for line in verified:
        ui.ok(line)
    ui.say("[green]PASS[/green]")
    note_check(step.number, args.reference, None)
    return 0


def cmd_tour(args) -> int:
    from labctl import steps, ui
    require_root("`labctl tour`")
    selected = [steps.get(n) for n in args.steps] if args.steps else steps.available()
    for step in selected:
        _show(step, explain=not args.no_explain)
    ui.heading("Tour complete")
    ui.say(f"Steps run: {', '.join(str(s.number) for s in selected)}. "
           "Try the exercises: `labctl check N` judges lab/NN-*/exercise.py.")
    return 0


def _show(step, explain: bool) -> None:
    """What `labctl step N` shows, and the tour for each step: the title, the explanation, the live demo."""
    from labctl import ui
    module = step.load()
    ui.heading(f"Step {step.number}: {step.topic}")
    if explain:
        ui.markdown(module.EXPLANATION)
    module.demo()


def cmd_cleanup(args) -> int:
    from labctl import state, ui
    from labctl.containers import cleanup
    require_root("`labctl cleanup`")
    if not state.records():
        ui.say("Nothing to clean up: the journal is empty.")
    running = [] if args.all else cleanup.live_containers()
    if running:
        ui.say(f"Left running: {', '.join(c.name for c in running)} (`labctl cleanup --all` removes them too).")
    keep = cleanup.records_of(running)
    if not args.all:   # a daemon that runs is no leftover (step 11); --all stops it too
        from labctl.daemon.control import daemon_records
        from labctl.runtime import ocicleanup
        keep |= daemon_records()
        from labctl.cluster.hosts import live_records
        cluster = live_records()   # a lab cluster that is up whole (step 13)
        if cluster:
            ui.say("Left running: the lab cluster (`labctl cluster down`, or `labctl cleanup --all`).")
        keep |= cluster
        oci = ocicleanup.live_containers()   # labctl-runtime's created or running containers (step 10)
        if oci:
            ui.say(f"Left running: labctl-runtime's {', '.join(c['id'] for c in oci)} "
                   "(`labctl-runtime delete --force ID`, or `labctl cleanup --all`).")
        keep |= ocicleanup.records_of(oci)
    errors = state.cleanup(report=ui.ok, keep=keep)
    from labctl.runtime.confine import remove_filter_cache
    removed = remove_filter_cache()
    if removed:
        ui.ok(f"removed {len(removed)} cached seccomp filter(s) from {removed[0].rsplit('/', 1)[0]} "
              "(compiled again when needed)")
    for path in cleanup.sweep_old_lock_files():
        ui.ok(f"removed {path}")
    if (state.state_dir() / "images").is_dir():   # what a crashed pull or import left in the image store
        from labctl.images.store import ImageStore
        swept = ImageStore().sweep_leftovers()
        if swept is None:
            ui.say("The image store's temporary files were left alone: a pull or import is running.")
        else:
            for path in swept[0]:
                ui.ok(f"removed temporary {path}")
            errors += swept[1]
    for line in errors:
        ui.bad(line)
    return 1 if errors else 0


def cmd_prepare(args) -> int:
    from labctl.images import archive, labimage
    from labctl import ui
    require_root("`labctl prepare`")
    path = labimage.ensure_busybox_rootfs()
    ui.ok(f"busybox root filesystem at {path}")
    for imported in archive.import_lab_images():
        ui.ok(f"{imported.reference} {'already in' if imported.skipped else 'imported into'} the image store "
              f"({imported.layers} layer{'s' if imported.layers != 1 else ''})")
    return 0
