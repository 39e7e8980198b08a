"""labctl's command line: argument parsing only. Each command calls into the library modules.

Heavy modules (rich, pyroute2, bcc, matplotlib) are imported inside the commands that use them, so
`labctl --help` answers at once.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

# argparse passes every help string through gettext, which looks for translation files on each call
# (~4 ms for labctl's commands, on every `labctl run`); labctl's messages are English only.
argparse._ = lambda message: message


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
    from labctl.images import archive as imageimport, labimage
    from labctl import ui
    _require_root("`labctl prepare`")
    path = labimage.ensure_busybox_rootfs()
    ui.ok(f"busybox root filesystem at {path}")
    for imported in imageimport.import_lab_images():
        ui.ok(f"{imported.reference} {'already in' if imported.skipped else 'imported into'} the image store "
              f"({imported.layers} layer{'s' if imported.layers != 1 else ''})")
    return 0


# Step 4: the image store (import, images, rmi)

def cmd_import(args) -> int:
    from labctl.images import archive as imageimport
    from labctl import ui
    from labctl.images.store import ImageStore
    _require_root("`labctl import`")
    for imported in imageimport.import_path(ImageStore(), args.source, args.name):
        ui.ok(f"{imported.reference} -> {imported.manifest_digest} ({imported.layers} layers"
              f"{', already there' if imported.skipped else ''})")
    return 0


def cmd_images(args) -> int:
    from labctl.kernel import overlay
    from labctl import ui
    from labctl.images.store import ImageStore
    store = ImageStore()
    used = overlay.images_in_use()
    rows = []
    for info in store.images():
        try:
            layers = len(store.image_layers(info.digest))
        except Exception:
            layers = "?"
        rows.append((info.reference, info.digest[7:19], layers, f"{info.size / 1e6:.1f} MB",
                     ", ".join(used.get(info.digest, []))))
    if args.quiet:
        for row in rows:
            print(row[0])
        return 0
    ui.table(("reference", "manifest", "layers", "size", "containers"), rows, title="Images in the store")
    return 0


def cmd_rmi(args) -> int:
    from labctl.images import archive as imageimport
    from labctl import ui
    from labctl.images.store import ImageStore
    _require_root("`labctl rmi`")
    store = ImageStore()
    for reference in args.references:
        removed = imageimport.remove_image(store, reference, force=args.force)
        ui.ok(f"untagged {reference}; removed {len(removed)} unreferenced blob(s) and layer(s)")
    return 0


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
        try:
            proc = cg.popen(command)
        except OSError as exc:
            from labctl.errors import LabError
            raise LabError(f"cannot run {command[0]!r}: {exc.strerror}",
                           "check the command: is it installed, on PATH and executable?") from None
        status = proc.wait()
        after = cg.stats()
        ui.kernel(f"exit status {status}; memory peak {cgroups.format_bytes(after.memory_peak_bytes or 0)}, "
                  f"OOM kills {after.oom_kills}, CPU {((after.cpu_usage_ns or 0) - (before.cpu_usage_ns or 0)) / 1e9:.2f} s, "
                  f"throttled periods {after.cpu_throttled_periods}, forks refused {after.pids_refused}")
    return 128 - status if status < 0 else status


def cmd_network(args) -> int:
    from labctl import network, ui
    _require_root("`labctl network`")
    if args.action == "rm":
        net = network.Network(args.bridge, network.DEFAULT_SUBNET) if args.bridge else network.default_network()
        network.remove_network(net)
        ui.ok(f"removed bridge {net.bridge} and nftables table {net.table} (if they were there)")
        return 0
    rows = []
    for net in network.known_networks():
        link = network.link_stats(net.bridge)
        users = network.allocations(net)
        rows.append((net.bridge, " ".join(link.addresses) if link else "(not created)", net.table,
                     ", ".join(f"{e['name']}={a}" for a, e in sorted(users.items())) or "-"))
    ui.table(("bridge", "address", "nftables table", "containers"), rows, title="The lab's networks")
# -- step 7: containers (labctl run, ps, logs, exec, stop, rm, inspect, stats, volume) ---------------


def cmd_run(args) -> int:
    from labctl.containers import runtime
    _require_root("`labctl run`")
    spec, image = runtime.build_spec(
        args.image, args.command, name=args.name or "", env=args.env, workdir=args.workdir, user=args.user,
        hostname=args.hostname, tty=args.tty, interactive=args.interactive, detach=args.detach,
        auto_remove=args.rm, init=args.init, network=args.network, memory=args.memory, cpus=args.cpus,
        pids_limit=args.pids_limit, volumes_=args.volume, tmpfs=args.tmpfs, ports=args.publish,
        entrypoint=args.entrypoint.split() if args.entrypoint is not None else None)
    try:
        container, code = runtime.run(spec, image)
    except runtime.CommandFailed as exc:
        from labctl.ui import error_line
        error_line(str(exc))
        return exc.exit_code
    if spec.detach:
        print(container.id)
    return code


def cmd_ps(args) -> int:
    from labctl.containers import store
    rows = [c for c in store.all_containers() if args.all or c.status == "running"]
    if args.quiet:
        for c in rows:
            print(c.short_id)
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "PORTS", "NAMES")]
    for c in rows:
        command = " ".join(c.spec.argv)
        ports = ", ".join(f"{p.host_ip}:{p.host_port}->{p.container_port}/{p.protocol}" for p in c.spec.ports)
        table.append((c.short_id, c.spec.image, (command[:27] + "...") if len(command) > 30 else command,
                      c.describe_status(), ports, c.name))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def cmd_logs(args) -> int:
    import time
    from labctl.containers import store
    container = store.find(args.container)
    path = container.dir / "log"
    if not path.exists():
        from labctl.errors import LabError
        raise LabError(f"{container.name} has no log", "only detached containers (-d) keep a log")
    with open(path, "rb") as f:
        while True:
            data = f.read()
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            if not args.follow or container.status != "running":
                if args.follow:
                    sys.stdout.buffer.write(f.read())
                return 0
            time.sleep(0.1)


def cmd_exec(args) -> int:
    from labctl.containers import enter, runtime, store
    _require_root("`labctl exec`")
    container = store.find(args.container)
    stdio, master = runtime.Stdio(), None
    if args.tty:
        from labctl.containers.terminal import console_socket
        master, theirs = console_socket()     # until the container sends its pty master: our socket end
        stdio = runtime.Stdio(console=theirs)
    elif not args.interactive:
        stdio = runtime.Stdio(stdin=os.open(os.devnull, os.O_RDONLY))
    try:
        child = enter.exec_in(container, args.command, stdio, user=args.user, workdir=args.workdir, env=args.env)
    except runtime.CommandFailed as exc:
        from labctl.ui import error_line
        error_line(str(exc))
        return exc.exit_code
    if master is not None:
        from labctl.containers.terminal import receive_master, relay
        master = receive_master(master)   # (closes the socket)
        relay(master, done=lambda: False)
    return enter.wait(child)   # passing on SIGINT, SIGTERM, SIGHUP and SIGQUIT, as `labctl run` does


def cmd_stop(args) -> int:
    from labctl.containers import runtime, store
    _require_root("`labctl stop`")
    for name in args.containers:
        runtime.stop(store.find(name), timeout=args.time)
        print(name)
    return 0


def cmd_rm(args) -> int:
    from labctl.containers import runtime, store
    _require_root("`labctl rm`")
    for name in args.containers:
        runtime.remove(store.find(name), force=args.force)
        print(name)
    return 0


def cmd_inspect(args) -> int:
    import json
    from labctl.containers import store
    out = []
    for name in args.containers:
        c = store.find(name)
        data = c.to_json()
        data["state"]["status"] = c.status
        if c.status == "running":
            data["namespaces"] = {k: os.readlink(f"/proc/{c.pid}/ns/{k}")
                                  for k in ("cgroup", "ipc", "mnt", "net", "pid", "time", "uts")}
        out.append(data)
    print(json.dumps(out, indent=2))
    return 0


def cmd_stats(args) -> int:
    from labctl.containers import stats
    return stats.main(args.containers, stream=not args.no_stream, interval=args.interval)


def cmd_volume(args) -> int:
    from labctl.containers import volumes
    if args.action == "create":
        for name in args.names:
            volumes.create(name)
            print(name)
    elif args.action == "ls":
        print(f"{'VOLUME NAME':24} {'SIZE':>10}  USED BY")
        for v in volumes.list_volumes():
            print(f"{v['name']:24} {v['size']:>10}  {', '.join(v['users'])}")
    else:
        for name in args.names:
            volumes.remove(name, force=args.force)
            print(name)
    return 0


# -- step 5: registry pull (login, pull, registry start|stop|status) ----------------------------


def _password_from_stdin(what: str) -> str:
    if sys.stdin.isatty():
        import getpass
        return getpass.getpass(f"password for {what}: ")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        from labctl.errors import LabError
        raise LabError("no password on standard input", "pipe it in: `echo \"$PASSWORD\" | labctl ...`")
    return password


def cmd_login(args) -> int:
    from labctl.images import distribution as registry
    from labctl import ui
    password = _password_from_stdin(f"{args.username}@{args.registry}")
    scheme = registry.check_login(args.registry, args.username, password)
    registry.save_credentials(args.registry, args.username, password)
    ui.ok(f"logged in to {args.registry} as {args.username} ({scheme} authentication); "
          "credentials stored with mode 0600 in the state directory")
    return 0


def cmd_pull(args) -> int:
    from labctl.images import distribution as registry
    from labctl import ui
    credentials = (args.username, _password_from_stdin(args.username)) if args.username else None
    result = registry.pull(args.image, platform=args.platform, credentials=credentials)
    from labctl.images.store import ImageStore
    layer_dirs = ImageStore().ensure_layers(result.digest)   # unpacked once, ready for an overlay mount
    if result.platform:
        ui.say(f"platform {result.platform} chosen from the index")
    if result.blobs_fetched == 0:
        ui.ok(f"{result.reference} is up to date ({result.digest}): no blob transferred")
    else:
        ui.ok(f"pulled {result.reference} ({result.digest}): {result.blobs_fetched} blobs, "
              f"{result.transferred} bytes, every digest verified")
    ui.say(f"{len(layer_dirs)} layers unpacked under {layer_dirs[0].parent if layer_dirs else '-'}")
    return 0


def cmd_registry(args) -> int:
    from labctl.images import labregistry
    from labctl import ui
    if args.action == "start":
        info = labregistry.start(args.port)
        ui.ok(f"lab registry on http://{info['host']} (PID {info['pid']}), storage {info['storage']}")
        for image in info["images"]:
            ui.say(f"  {image}")
        ui.say(f"pull one: `labctl pull {info['host']}/lab/busybox`")
    elif args.action == "stop":
        info = labregistry.stop()
        ui.ok(f"lab registry (PID {info['pid']}) stopped, its storage removed" if info
              else "the lab registry was not running")
    else:
        info = labregistry.status()
        if not info:
            ui.say("the lab registry is not running (`labctl registry start`)")
            return 1
        ui.ok(f"lab registry on http://{info['host']} (PID {info['pid']}), storage {info['storage']}")
        for image in info["images"]:
            ui.say(f"  {image}")
    return 0


def cmd_trace(args) -> int:
    from labctl import tracing
    from labctl.errors import LabError
    _require_root("`labctl trace`")
    # A tracer that Ctrl-C or SIGTERM ends has done its job: it detaches and exits 0.
    if args.build:
        return tracing.trace_build(json_output=args.json, debug=args.debug)
    kinds = [k for k in ("exec", "open", "syscalls", "net", "oom") if getattr(args, k)]
    if args.container is None or len(kinds) != 1:
        raise LabError("give a container and one of --exec, --open, --syscalls, --net, --oom (or --build)",
                       "e.g. `labctl trace 4242 --exec`; `labctl trace --help` shows more")
    return tracing.trace_container(args.container, kinds[0], duration=args.duration, json_output=args.json,
                                   by_cgroup=args.cgroup, top=args.top, debug=args.debug)


# ---------------------------------------------------------------------------------------------


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        from labctl.errors import NotRootError
        raise NotRootError(what)


class _NotOnThisCommandLine:
    """Stands in for the parser of a command that is not on this command line: every method does nothing
    and returns the stand-in. Building all ~25 subparsers costs ~5 ms, paid on every `labctl run`."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, the top level and that one command (parser.complete tells
    whether `only` named a command: if not, build it all, so an error lists every command)."""
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

    parser.complete = only is None

    def add(name, func, help_text, examples, **kw):
        if only is not None and name != only:
            return _NotOnThisCommandLine()
        parser.complete = True
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

    add("cleanup", cmd_cleanup, "remove every kernel object and mount the lab recorded, and the image store's "
        "half-written files (after a crash too)",
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
    from labctl.kernel.cgroups.limits import add_arguments as add_limit_arguments
    add_limit_arguments(q)
    q.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")
    q.set_defaults(func=cmd_cgroup_run)
    p = add("network", cmd_network, "list the lab's bridge networks, or remove one (bridge, nftables table)",
            ["labctl network ls", "labctl network rm              # lab0 and table labctl",
             "labctl network rm --bridge labtest6"])
    p.add_argument("action", choices=("ls", "rm"), nargs="?", default="ls")
    p.add_argument("--bridge", help="the bridge (default: lab0, or $LABCTL_BRIDGE)")
    p = add("import", cmd_import, "import an image from an OCI layout directory or an image tarball",
            ["labctl import /tmp/busybox-oci:latest --name localhost/busybox:1",
             "skopeo copy oci:/tmp/img:latest oci-archive:/tmp/img.tar && labctl import /tmp/img.tar",
             "labctl import /tmp/saved.tar          # a docker-archive (docker save / skopeo docker-archive:)"])
    p.add_argument("source", help="DIR[:NAME] (an OCI layout) or FILE[:NAME] (oci-archive or docker-archive)")
    p.add_argument("--name", help="the reference to store it as (default: localhost/NAME:latest)")
    p = add("images", cmd_images, "list the images in the store", ["labctl images", "labctl images -q"])
    p.add_argument("-q", "--quiet", action="store_true", help="references only")
    p = add("rmi", cmd_rmi, "remove an image reference, then unreferenced blobs and layers",
            ["labctl rmi localhost/layered:latest", "labctl rmi --force localhost/busybox:latest"])
    p.add_argument("references", nargs="+", metavar="REFERENCE")
    p.add_argument("--force", action="store_true", help="untag even if a container uses it (its layers stay)")

    # step 5: registry pull
    p = add("login", cmd_login, "store credentials for a registry (password from standard input, file mode 0600)",
            ["echo \"$PASSWORD\" | labctl login 127.0.0.1:5000 --username student --password-stdin"])
    p.add_argument("registry", help="host[:port] of the registry")
    p.add_argument("--username", "-u", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (always done)")

    p = add("pull", cmd_pull, "pull an image from a registry into the image store (OCI distribution protocol)",
            ["labctl registry start && labctl pull 127.0.0.1:5000/lab/busybox",
             "labctl pull 127.0.0.1:5000/lab/multiarch --platform linux/arm64/v8",
             "echo \"$PASSWORD\" | labctl pull 127.0.0.1:5000/lab/busybox --username student",
             "labctl pull alpine            # docker.io/library/alpine:latest (needs internet)"])
    p.add_argument("image", help="an image reference: [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST]")
    p.add_argument("--platform", help="OS/ARCH[/VARIANT] to choose from an index (default: this host's)")
    p.add_argument("--username", "-u", help="log in as this user; the password is read from stdin")

    p = add("registry", cmd_registry, "start, stop or show the lab's own registry on 127.0.0.1",
            ["labctl registry start", "labctl registry start --port 5001", "labctl registry status",
             "labctl registry stop"])
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--port", type=int, default=5000, help="TCP port on 127.0.0.1 (default 5000)")

    # -- step 7: containers ----------------------------------------------------------------------
    p = add("run", cmd_run, "run a command in a new container made from an image",
            ["labctl run --rm busybox echo hello",
             "labctl run -it --rm busybox sh",
             "labctl run -d --name web -m 64m --cpus 0.5 -p 8080:80 -v site:/www busybox httpd -f -h /www",
             "labctl run --rm -e GREETING=hi -w /tmp -u student busybox sh -c 'id; pwd; echo $GREETING'",
             "labctl run --rm --init busybox sh -c 'sleep 1 & sleep 1 & wait'"], add_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("--name", help="a name for the container (default: a random one)")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal (a pty)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user[:group] (name or id, from the image's /etc/passwd)")
    p.add_argument("-h", "--hostname", help="the container's hostname (default: its short ID)")
    p.add_argument("-m", "--memory", help="memory limit, e.g. 64m")
    p.add_argument("--cpus", type=float, help="CPU limit in CPUs, e.g. 0.5")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    from labctl.network import MODES as NETWORK_MODES   # the one list of modes (a light import: no pyroute2)
    p.add_argument("--network", default="none", help=f"{', '.join(NETWORK_MODES)} (default: none)")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="HOST:CTR",
                   help="publish a container port on 127.0.0.1 (needs --network bridge)")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="bind a host path or a named volume")
    p.add_argument("--tmpfs", action="append", default=[], metavar="DST", help="mount a tmpfs")
    p.add_argument("--init", action="store_true", help="run tini as PID 1: reaps zombies, forwards signals")
    p.add_argument("--entrypoint", help="replace the image's Entrypoint")
    p.add_argument("image", help="image reference (`labctl images`), e.g. busybox")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (default: the image's Cmd)")

    p = add("ps", cmd_ps, "list containers (running ones, or all with -a)", ["labctl ps", "labctl ps -a", "labctl ps -aq"])
    p.add_argument("-a", "--all", action="store_true", help="also containers that have exited")
    p.add_argument("-q", "--quiet", action="store_true", help="only the IDs")

    p = add("logs", cmd_logs, "print a detached container's output", ["labctl logs web", "labctl logs -f web"])
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("container")

    p = add("exec", cmd_exec, "run a command inside a running container (all its namespaces and its cgroup)",
            ["labctl exec web ps", "labctl exec -it web sh", "labctl exec -u student web id"])
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("-u", "--user", help="user[:group] inside the container")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)

    p = add("stop", cmd_stop, "stop containers: SIGTERM to PID 1, SIGKILL after a timeout",
            ["labctl stop web", "labctl stop -t 2 web db"])
    p.add_argument("-t", "--time", type=float, default=10.0, help="seconds to wait before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+")

    p = add("rm", cmd_rm, "remove containers (-f: kill running ones first)", ["labctl rm web", "labctl rm -f $(labctl ps -aq)"])
    p.add_argument("-f", "--force", action="store_true", help="kill the container if it is running")
    p.add_argument("containers", nargs="+")

    p = add("inspect", cmd_inspect, "show a container's record as JSON (spec, state, namespaces)",
            ["labctl inspect web", "labctl inspect web | jq '.[0].state.pid'"])
    p.add_argument("containers", nargs="+")

    p = add("stats", cmd_stats, "a live table of the containers' CPU, memory and processes, from their cgroups",
            ["labctl stats", "labctl stats --no-stream web"])
    p.add_argument("--no-stream", action="store_true", help="print one table and exit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between updates")
    p.add_argument("containers", nargs="*")

    p = add("volume", cmd_volume, "manage named volumes (kept in the state directory)",
            ["labctl volume create data", "labctl volume ls", "labctl volume rm data"])
    p.add_argument("action", choices=("create", "ls", "rm"))
    p.add_argument("names", nargs="*")
    p.add_argument("-f", "--force", action="store_true", help="rm: even if containers refer to it")
    p = add("trace", cmd_trace, "watch one container with eBPF (bcc programs on tracepoints)",
            ["labctl trace 4242 --exec              # fork/exec/exit in the container of PID 4242",
             "labctl trace 4242 --open --duration 5  # files it opens, for 5 seconds",
             "labctl trace 4242 --syscalls --top 10  # syscall counts, printed at Ctrl-C",
             "labctl trace 4242 --net --json         # TCP state changes, one JSON object per line",
             "labctl trace 4242 --oom                # OOM kills in it",
             "labctl trace --build                   # the syscalls the lab makes to build a container"])
    p.add_argument("container", nargs="?", help="a host PID of a process in the container (or a container name)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--exec", action="store_true", help="fork, exec (with argv) and exit, like execsnoop")
    what.add_argument("--open", action="store_true", help="openat calls, like opensnoop")
    what.add_argument("--syscalls", action="store_true", help="count syscalls, like syscount")
    what.add_argument("--net", action="store_true", help="TCP state changes, like tcpstates")
    what.add_argument("--oom", action="store_true", help="OOM kills, like oomkill")
    what.add_argument("--build", action="store_true",
                      help="build a container (steps 1-3) and show the syscalls that built it, annotated")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: at Ctrl-C)")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--cgroup", action="store_true", help="also require the container's cgroup (cgroup v2 only)")
    p.add_argument("--top", type=int, default=15, metavar="N", help="--syscalls: show the N most frequent")
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=next((w for w in words if not w.startswith("-")), None))
    if not parser.complete:
        parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from labctl.errors import LabError
    # SIGTERM ends a command like Ctrl-C does, so `finally` blocks undo what the command made.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = args.func(args) or 0
        if args.func is cmd_run and argv is None:
            _exit_at_once(code)
        return code
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


def _exit_at_once(code: int) -> None:
    """End the process now, skipping the interpreter's finalization (~10 ms of freeing every module and
    object, on every `labctl run`). Only for `labctl run` started as a program (main() without argv):
    by the time it returns, the container is gone and its teardown done by the supervisor, nothing is
    left to close but stdout and stderr, no thread is running and no atexit handler is registered."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe: what the normal exit would have ignored too
            pass
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
