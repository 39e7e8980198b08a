"""What every command group's parser shares: the help layout, the examples epilog, and the table of
subcommands that builds only the command on this command line.

Each group module (course.py, images.py, containers.py, ...) has an `add_commands(commands)` that
declares its subcommands through `commands.add(...)`; main.py assembles them into one parser.
Only the standard library is imported here: `labctl run` passes through this module on every start.
"""
from __future__ import annotations

import argparse
from typing import Callable

# argparse passes every help string through gettext, which looks for translation files on each call
# (~4 ms for labctl's commands, on every `labctl run`); labctl's messages are English only.
argparse._ = lambda message: message


def examples(*lines: str) -> str:
    """The epilog every command's --help ends with: real invocations, one a line (as bcc's tools do)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and alignment as written."""


class _NotOnThisCommandLine:
    """Stands in for the parser of a command that is not on this command line: every method does nothing
    and returns the stand-in. Building all ~25 subparsers costs ~5 ms, paid on every `labctl run`."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


class Commands:
    """labctl's subcommands. With `only`, every command but that one is skipped (a stand-in is returned
    for it), and `complete` tells whether `only` named a command."""

    def __init__(self, subparsers: argparse._SubParsersAction, only: str | None = None):
        self._subparsers = subparsers
        self._only = only
        self.complete = only is None

    def add(self, name: str, func: Callable[[argparse.Namespace], int] | None, help_text: str,
            example_lines: list[str], **kwargs) -> argparse.ArgumentParser:
        """A subcommand `name` that runs `func(args)`; its --help ends with `example_lines`."""
        if self._only is not None and name != self._only:
            return _NotOnThisCommandLine()
        self.complete = True
        parser = self._subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=Formatter,
                                             epilog=examples(*example_lines), **kwargs)
        parser.set_defaults(func=func)
        return parser
