"""`labctl`'s entry point: main(), and build_parser(), which assembles the command groups (the modules
beside this one, listed in labctl/client/__init__.py) into one command line.

Only the group of the command on the command line is imported and built (`labctl run` pays for one
parser, not ~25); heavy modules (rich, pyroute2, bcc, matplotlib) are imported inside the commands that
use them, so `labctl --help` answers at once.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from labctl import __version__
from labctl.client.parsing import Commands, Formatter, examples

#: Which group (module of labctl/client) defines each command, in the order `labctl --help` lists them;
#: tests/test_cli.py proves this table and the groups agree.
GROUP_OF = {
    "doctor": "course", "steps": "course", "step": "course", "check": "course", "tour": "course",
    "cleanup": "course", "prepare": "course",
    "hint": "teaching", "progress": "teaching", "class": "teaching",
    "exercise": "lab", "lab": "lab",
    "cgroup": "cgroups",
    "network": "network",
    "import": "images", "images": "images", "image": "images", "rmi": "images", "login": "images", "pull": "images",
    "save": "images", "push": "images", "registry": "images",
    "build": "build",
    "run": "containers", "ps": "containers", "logs": "containers", "exec": "containers", "stop": "containers",
    "rm": "containers", "inspect": "containers", "stats": "containers", "volume": "containers",
    "bundle": "runtime", "runtime": "runtime",
    "daemon": "daemon",
    "cluster": "cluster",
    "trace": "trace",
    "jupyter": "jupyter",
}
GROUPS = tuple(dict.fromkeys(GROUP_OF.values()))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, the top level and that one command (parser.complete tells
    whether `only` named a command: if not, build it all, so an error lists every command)."""
    parser = argparse.ArgumentParser(
        prog="labctl", formatter_class=Formatter,
        description="Build a Linux container from the kernel primitives up, one step at a time.",
        epilog=examples("labctl doctor                 # is this machine ready for the lab?",
                        "labctl tour                   # every step, live, in order",
                        "labctl step 1                 # namespaces, explained and shown",
                        "labctl check 1                # judge your lab/01-namespaces/exercise.py",
                        "labctl hint 1                 # stuck? the next hint: concept, syscall, code",
                        "labctl progress               # your checks and hints so far",
                        "labctl cleanup                # remove whatever a crashed step left"))
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--host", metavar="unix:///PATH",
                        help="send run/ps/logs/exec/stop/rm/images/pull to the daemon there (also $LABCTL_HOST)")
    parser.add_argument("--version", action="version", version=f"labctl {__version__}")
    commands = Commands(parser.add_subparsers(dest="command", metavar="COMMAND"), only)
    if only is None:
        groups = GROUPS
    else:
        groups = (GROUP_OF[only],) if only in GROUP_OF else ()
    for group in groups:
        # __import__ with a fromlist returns the submodule itself (importlib.import_module would cost
        # ~0.5 ms more on the launcher's `python -S`, where importlib is not loaded yet)
        __import__(f"labctl.client.{group}", fromlist=["add_commands"]).add_commands(commands)
    parser.complete = commands.complete
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["runtime"]:   # runc's command line, parsed whole by ocicli (options first: no REMAINDER)
        from labctl.runtime.ocicli import main as runtime_main
        return runtime_main(words[1:], prog="labctl runtime")
    daemon = None
    if "--host" in words or os.environ.get("LABCTL_HOST"):   # step 11: a client of the daemon
        from labctl.client import remote
        words = list(words)
        daemon = remote.host(words)
        argv = words
    command = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(only=command)
    if not parser.complete:
        parser = build_parser()
    args = parser.parse_args(argv)
    if daemon and command in remote.COMMANDS:
        return remote.dispatch(daemon, command, args)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from labctl.errors import LabError
    # SIGTERM ends a command like Ctrl-C does, so `finally` blocks undo what the command made.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = args.func(args) or 0
        if getattr(args, "exit_at_once", False) and argv is None:
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


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
