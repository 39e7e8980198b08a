"""`labctl-runtime` (and `labctl runtime ...`): an OCI runtime with runc's command line, so that what
drives runc (containerd's shim, runtime-tools' validation suite, podman) can drive labctl instead.

    labctl-runtime [--root DIR] [--log FILE] [--log-format text|json] COMMAND ...
      create --bundle DIR [--pid-file F] [--console-socket SOCK] ID     PID 1 made, waiting for start
      start ID                                                          let it exec
      state ID                                                          the spec's state JSON
      kill [--all] ID [SIGNAL]                                          TERM, SIGKILL, 9, ...
      delete [--force] ID                                               gone, with its cgroup
      run --bundle DIR [--detach] ID                                    create + start (+ wait + delete)
      exec --process process.json [--detach] [--pid-file F] ID          another process inside
           [--tty --console-socket SOCK]                                with a terminal, as create's
      ps [--format table|json] ID       list [--format table|json]       spec [--bundle DIR]

The operations themselves are in ocicommands.py; this module is argument parsing, the log, and the
exit status. An error ends the command with exit status 1 and one line on stderr (and, with
--log-format json, a {"level": "error", "msg": ...} line in --log, where containerd looks for it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from labctl.errors import LabError
from labctl.runtime.ocistate import DEFAULT_ROOT

EXAMPLES = """examples:
  labctl bundle busybox /tmp/b -- sh -c 'echo hi'
  labctl-runtime create --bundle /tmp/b c1 && labctl-runtime state c1
  labctl-runtime start c1; labctl-runtime delete c1
  ctr run --runc-binary $(command -v labctl-runtime) docker.io/library/busybox:latest c1 echo hi
"""


def build_parser(prog: str = "labctl-runtime") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="an OCI runtime with runc's command line (step 10)",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"state directory (default {DEFAULT_ROOT})")
    p.add_argument("--log", help="write errors and warnings to this file too")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--systemd-cgroup", action="store_true", help="refused: labctl makes cgroups itself")
    p.add_argument("--debug", action="store_true", help="tracebacks for errors")
    for ignored in ("--rootless", "--criu"):
        p.add_argument(ignored, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="op", metavar="COMMAND")
    c = sub.add_parser("create", help="create a container from a bundle: PID 1 waits for `start`")
    _bundle_options(c)
    sub.add_parser("start", help="start a created container").add_argument("id")
    sub.add_parser("state", help="print a container's state JSON").add_argument("id")
    k = sub.add_parser("kill", help="send a signal to PID 1 (default TERM)")
    k.add_argument("-a", "--all", action="store_true", help="to every process of the container")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="SIGTERM")
    d = sub.add_parser("delete", help="delete a stopped (or, with --force, any) container")
    d.add_argument("-f", "--force", action="store_true")
    d.add_argument("id")
    r = sub.add_parser("run", help="create and start; without --detach wait, delete, exit with its status")
    _bundle_options(r)
    r.add_argument("-d", "--detach", action="store_true")
    e = sub.add_parser("exec", help="run a process (process.json, or ARGS) in a running container")
    e.add_argument("-p", "--process", help="a process.json (config.json's process object)")
    e.add_argument("-d", "--detach", action="store_true")
    e.add_argument("--pid-file")
    e.add_argument("--console-socket", help="send the terminal's master fd to this Unix socket (with --tty)")
    e.add_argument("-t", "--tty", action="store_true", help="give the process a terminal (needs --console-socket)")
    e.add_argument("id")
    e.add_argument("args", nargs=argparse.REMAINDER)
    ps = sub.add_parser("ps", help="the processes of a container")
    ps.add_argument("-f", "--format", choices=("table", "json"), default="table")
    ps.add_argument("id")
    ls = sub.add_parser("list", help="the containers under --root")
    ls.add_argument("-f", "--format", choices=("table", "json"), default="table")
    ls.add_argument("-q", "--quiet", action="store_true")
    s = sub.add_parser("spec", help="write a default config.json (as `runc spec`)")
    s.add_argument("-b", "--bundle", default=".")


def _bundle_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("-b", "--bundle", default=".", help="the bundle directory (default: here)")
    c.add_argument("--pid-file", help="write PID 1's host PID here")
    c.add_argument("--console-socket", help="send the terminal's master fd to this Unix socket")
    for flag in ("--no-pivot", "--no-new-keyring", "--preserve-fds"):   # what go-runc may pass
        c.add_argument(flag, nargs="?", const=True, help=argparse.SUPPRESS)
    c.add_argument("id")


def dispatch(args) -> int:
    """Run the command in `args`; returns the exit status."""
    from labctl.runtime import ocicommands as ops, ocistate
    if args.systemd_cgroup:
        raise LabError("--systemd-cgroup is not supported: labctl makes its cgroups itself, without systemd",
                       "drop --systemd-cgroup (containerd: SystemdCgroup = false in the runc options)")
    if args.op is None:
        raise LabError("no command given", "see `labctl-runtime --help`")
    root = args.root
    if args.op == "create":
        ops.create(root, args.id, args.bundle, args.pid_file, args.console_socket)
    elif args.op == "start":
        ops.start(root, args.id)
    elif args.op == "state":
        print(json.dumps(ocistate.public(ocistate.load(root, args.id)), indent=2))
    elif args.op == "kill":
        ops.kill(root, args.id, args.signal, args.all)
    elif args.op == "delete":
        ops.delete(root, args.id, args.force)
    elif args.op == "run":
        return run(root, args)
    elif args.op == "exec":
        from labctl.runtime import ociexec
        return ociexec.main(root, args)
    elif args.op == "ps":
        pids = ops._cgroup_pids(ocistate.load(root, args.id).get("cgroup") or {"dirs": {}})
        print(json.dumps(pids) if args.format == "json" else "\n".join(["PID", *map(str, pids)]))
    elif args.op == "list":
        list_containers(root, args)
    elif args.op == "spec":
        write_spec(args.bundle)
    return 0


def run(root: str, args) -> int:
    """`run`: create + start; we are PID 1's subreaper, so it becomes our child when S exits and we can
    wait for it, then delete it and exit with its status (128+N for a signal, as runc)."""
    from labctl.kernel.syscalls import prctl
    from labctl.runtime import ocicommands as ops
    PR_SET_CHILD_SUBREAPER = 36
    if not args.detach:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    state = ops.create(root, args.id, args.bundle, args.pid_file, args.console_socket)
    try:
        ops.start(root, args.id)
    except BaseException:
        ops.delete(root, args.id, force=True)
        raise
    if args.detach:
        return 0
    while True:
        try:
            _, status = os.waitpid(state["pid"], 0)
            break
        except InterruptedError:
            continue
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    ops.delete(root, args.id, force=True)
    return code


def list_containers(root: str, args) -> None:
    from labctl.runtime import ocistate
    rows = [ocistate.public(d) for d in ocistate.containers(root)]
    if args.quiet:
        print("\n".join(r["id"] for r in rows))
    elif args.format == "json":
        print(json.dumps(rows))
    else:
        print(f"{'ID':24} {'PID':>8} {'STATUS':10} BUNDLE")
        for r in rows:
            print(f"{r['id']:24} {r.get('pid', 0):>8} {r['status']:10} {r['bundle']}")


def write_spec(bundle: str) -> None:
    """A config.json as `runc spec` writes it: sh in ./rootfs, a terminal, runc's default profile."""
    from labctl.runtime import oci
    from labctl.runtime.config import Config
    from labctl.security.profile import from_flags
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise LabError(f"{path} exists already", "remove it first, or give another --bundle")
    config = Config(root="rootfs", argv=["sh"], env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                                     "TERM=xterm"], hostname="labctl", security=from_flags())
    doc = oci.to_oci(config)
    doc["process"]["terminal"] = True
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def log_error(args, message: str) -> None:
    print(f"labctl-runtime: {message}", file=sys.stderr)
    if getattr(args, "log", None):
        try:
            with open(args.log, "a") as f:
                if args.log_format == "json":
                    f.write(json.dumps({"level": "error", "msg": message,
                                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
                else:
                    f.write(f"error: {message}\n")
        except OSError:
            pass


def main(argv: list[str] | None = None, prog: str = "labctl-runtime") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return dispatch(args)
    except LabError as exc:
        if args.debug:
            raise
        log_error(args, str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
