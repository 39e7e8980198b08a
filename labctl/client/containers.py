"""The container commands (step 7): run, ps, logs, exec, stop, rm, inspect, stats, volume, as
`docker run|ps|logs|exec|stop|rm|inspect|stats|volume`. The work is done in labctl/containers.

`labctl run` passes through this module on every container start: it imports only the standard
library at the top, and each command imports the library it needs when it runs.
"""
from __future__ import annotations

import argparse
import sys

from labctl.client.parsing import Commands
from labctl.errors import CommandFailed, require_root


def add_commands(commands: Commands) -> None:
    _add_run(commands)
    p = commands.add("ps", cmd_ps, "list containers (running ones, or all with -a)",
                     ["labctl ps", "labctl ps -a", "labctl ps -aq"])
    p.add_argument("-a", "--all", action="store_true", help="also containers that have exited")
    p.add_argument("-q", "--quiet", action="store_true", help="only the IDs")

    p = commands.add("logs", cmd_logs, "print a detached container's output", ["labctl logs web", "labctl logs -f web"])
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("-n", "--tail", metavar="N", help="only the last N lines (default: all)")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="each line with the time it was written (containers the daemon started)")
    p.add_argument("container")

    p = commands.add("exec", cmd_exec, "run a command inside a running container (all its namespaces and its cgroup)",
                     ["labctl exec web ps", "labctl exec -it web sh", "labctl exec -u student web id"])
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("-u", "--user", help="user[:group] inside the container")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)

    p = commands.add("stop", cmd_stop, "stop containers: SIGTERM to PID 1, SIGKILL after a timeout",
                     ["labctl stop web", "labctl stop -t 2 web db"])
    p.add_argument("-t", "--time", type=float, default=10.0, help="seconds to wait before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+")

    p = commands.add("rm", cmd_rm, "remove containers (-f: kill running ones first)",
                     ["labctl rm web", "labctl rm -f $(labctl ps -aq)"])
    p.add_argument("-f", "--force", action="store_true", help="kill the container if it is running")
    p.add_argument("containers", nargs="+")

    p = commands.add("inspect", cmd_inspect, "show a container's record as JSON (spec, state, namespaces)",
                     ["labctl inspect web", "labctl inspect web | jq '.[0].state.pid'"])
    p.add_argument("containers", nargs="+")

    p = commands.add("stats", cmd_stats, "a live table of the containers' CPU, memory and processes, from their cgroups",
                     ["labctl stats", "labctl stats --no-stream web"])
    p.add_argument("--no-stream", action="store_true", help="print one table and exit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between updates")
    p.add_argument("containers", nargs="*")

    p = commands.add("volume", cmd_volume, "manage named volumes (kept in the state directory)",
                     ["labctl volume create data", "labctl volume ls", "labctl volume rm data"])
    p.add_argument("action", choices=("create", "ls", "rm"))
    p.add_argument("names", nargs="*")
    p.add_argument("-f", "--force", action="store_true", help="rm: even if containers refer to it")


#: Step 9's defaults for `run --help`, written out: importing labctl.security here would slow every
#: `labctl run` (tests/test_security.py checks they agree with capabilities.DEFAULT and NAMES).
SECURITY_DEFAULTS = """the security profile (Docker's defaults, changed by the flags above):
  capabilities  CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP
                NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE
                (--cap-add also: DAC_READ_SEARCH LINUX_IMMUTABLE NET_BROADCAST NET_ADMIN IPC_LOCK
                IPC_OWNER SYS_MODULE SYS_RAWIO SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
                SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG LEASE AUDIT_CONTROL MAC_OVERRIDE MAC_ADMIN SYSLOG
                WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE, or ALL)
  seccomp       Docker's default profile: an allowlist, any other system call fails with EPERM
                (keyctl, bpf, mount, unshare/clone with namespace flags, init_module, ...)
  no_new_privs  on, as `runc spec` (Docker: off): setuid files give nothing;
                --security-opt no-new-privileges=false turns it off
  /proc, /sys   /proc/kcore, /proc/keys, /proc/timer_list, /sys/firmware, ... masked; /proc/sys,
                /proc/sysrq-trigger, /proc/irq, /proc/bus, /proc/fs and /sys read-only
  --privileged  every capability, no seccomp filter, nothing masked, /sys read-write
"""


def _add_run(commands: Commands) -> None:
    # -h is --hostname, as in `docker run`: the help is --help only
    p = commands.add("run", cmd_run, "run a command in a new container made from an image",
                     ["labctl run --rm busybox echo hello",
                      "labctl run -it --rm busybox sh",
                      "labctl run -d --name web -m 64m --cpus 0.5 -p 8080:80 -v site:/www busybox httpd -f -h /www",
                      "labctl run --rm -e GREETING=hi -w /tmp -u student busybox sh -c 'id; pwd; echo $GREETING'",
                      "labctl run --rm --init busybox sh -c 'sleep 1 & sleep 1 & wait'"], add_help=False)
    if isinstance(p, argparse.ArgumentParser):   # (not the stand-in of a command not on the line)
        p.epilog = SECURITY_DEFAULTS + "\n" + p.epilog
    # The container is gone and torn down when cmd_run returns: main() may end the process at once.
    p.set_defaults(exit_at_once=True)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("--name", help="a name for the container (default: a random one)")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--runtime", default="labctl", choices=("labctl", "runc", "crun", "labctl-oci"),
                   help="who makes the process: labctl itself, or an OCI runtime given the bundle")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    add_container_flags(p)
    p.add_argument("image", help="image reference (`labctl images`), e.g. busybox")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (default: the image's Cmd)")


def add_container_flags(p) -> None:
    """The flags that describe the container itself: `labctl run`'s and `labctl bundle`'s."""
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal (a pty)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user[:group] (name or id, from the image's /etc/passwd)")
    p.add_argument("-h", "--hostname", help="the container's hostname (default: its short ID)")
    p.add_argument("-m", "--memory", help="memory limit, e.g. 64m")
    p.add_argument("--cpus", type=float, help="CPU limit in CPUs, e.g. 0.5")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    # labctl.network.MODES, written out: importing it here would slow `run` (test_network checks they agree)
    p.add_argument("--network", default="none", help="none, host, bridge (default: none), or a network's name (docker network create)")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="HOST:CTR",
                   help="publish a container port on 127.0.0.1 (needs --network bridge)")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="bind a host path or a named volume")
    p.add_argument("--tmpfs", action="append", default=[], metavar="DST", help="mount a tmpfs")
    p.add_argument("--init", action="store_true", help="run tini as PID 1: reaps zombies, forwards signals")
    p.add_argument("--entrypoint", help="replace the image's Entrypoint")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP", help="add a capability (or ALL)")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP", help="drop a capability (or ALL)")
    p.add_argument("--privileged", action="store_true", help="every capability and device, no seccomp filter, no masked paths")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="no-new-privileges[=false], seccomp=PROFILE.json or seccomp=unconfined")
    p.add_argument("--read-only", action="store_true", help="mount the container's root filesystem read-only")
    p.add_argument("--userns", choices=("host", "remap"), default="host",
                   help="remap: root inside is an unprivileged uid of the host (/etc/subuid)")


def spec_from_args(args):
    """`labctl run`'s (or `bundle`'s) flags -> (ContainerSpec, image), through lifecycle.build_spec."""
    from labctl.containers import lifecycle
    from labctl.security.profile import from_flags
    return lifecycle.build_spec(
        args.image, args.command, name=getattr(args, "name", None) or "", env=args.env, workdir=args.workdir,
        user=args.user, hostname=args.hostname, tty=args.tty, interactive=getattr(args, "interactive", False),
        detach=getattr(args, "detach", False), auto_remove=getattr(args, "rm", False), init=args.init,
        network=args.network, memory=args.memory, cpus=args.cpus, pids_limit=args.pids_limit, volumes_=args.volume, tmpfs=args.tmpfs, ports=args.publish,
        entrypoint=args.entrypoint.split() if args.entrypoint is not None else None,
        security=from_flags(cap_add=args.cap_add, cap_drop=args.cap_drop, privileged=args.privileged,
                            security_opt=args.security_opt, read_only=args.read_only, userns=args.userns),
        runtime=getattr(args, "runtime", "labctl"))


def cmd_run(args) -> int:
    from labctl.containers import lifecycle
    require_root("`labctl run`")
    spec, image = spec_from_args(args)
    try:
        container, code = lifecycle.run(spec, image)
    except CommandFailed as exc:   # the command could not start: exit 126 or 127, as Docker
        from labctl.ui import error_line
        error_line(str(exc))
        return exc.exit_code
    if spec.detach:
        print(container.id)
    return code


def cmd_ps(args) -> int:
    from labctl.containers import reconcile
    rows = [c for c in reconcile.reconcile_all() if args.all or c.status == "running"]
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
    from labctl.containers import logs, store
    from labctl.errors import LabError
    container = store.find(args.container)
    offset = logs.last_lines(container.dir / "log", logs.parse_tail(args.tail)) if args.tail not in (None, "all") else 0
    logs.copy_log(container, sys.stdout.buffer, follow=args.follow, offset=offset, timestamps=args.timestamps)
    return 0


def cmd_exec(args) -> int:
    from labctl.containers import enter, store
    require_root("`labctl exec`")
    container = store.find(args.container)
    try:
        return enter.exec_foreground(container, args.command, tty=args.tty, interactive=args.interactive,
                                     user=args.user, workdir=args.workdir, env=args.env)
    except CommandFailed as exc:
        from labctl.ui import error_line
        error_line(str(exc))
        return exc.exit_code


def cmd_stop(args) -> int:
    from labctl.containers import lifecycle
    return _each_container("stop", args.containers, lambda container: lifecycle.stop(container, timeout=args.time))


def cmd_rm(args) -> int:
    from labctl.containers import lifecycle
    return _each_container("rm", args.containers, lambda container: lifecycle.remove(container, force=args.force))


def _each_container(command: str, names: list[str], action) -> int:
    """`labctl stop|rm NAME...`: act on each container in turn, printing its name when done (as docker).
    One that cannot be found or acted on gets its error line and the others go on: exit 1 if any failed."""
    from labctl.containers import store
    from labctl.errors import LabError
    from labctl.ui import error_line
    require_root(f"`labctl {command}`")
    failed = False
    for name in names:
        try:
            action(store.find(name))
        except LabError as exc:
            error_line(str(exc))
            failed = True
            continue
        print(name)
    return 1 if failed else 0


def cmd_inspect(args) -> int:
    import json
    from labctl.containers import store
    print(json.dumps([store.inspect(store.find(name)) for name in args.containers], indent=2))
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
