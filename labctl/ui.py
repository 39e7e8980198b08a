"""Terminal output for demos and commands: headings, narration, tables of what the kernel shows.

rich is imported on first use, so commands that print nothing fancy (and `--help`) stay fast.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Iterable, Sequence


@functools.lru_cache(maxsize=1)
def console():
    from rich.console import Console
    # Piped output (CI logs, tests) gets a wide fixed width instead of rich's default of 80 columns.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
    return Console(highlight=False, soft_wrap=True, width=width)


def heading(text: str) -> None:
    console().rule(f"[bold]{text}")


def markdown(text: str) -> None:
    from rich.markdown import Markdown
    # soft_wrap (the console's default, for long kernel lines) would crop list items at the width
    console().print(Markdown(text), soft_wrap=False)


def say(text: str = "") -> None:
    """Narration: what is about to happen and why."""
    console().print(text)


def kernel(text: str) -> None:
    """A fact read back from the kernel (procfs, sysfs, netlink): shown distinctly from narration."""
    console().print(f"  [cyan]kernel>[/cyan] {text}")


def shown(source: str, text: str) -> None:
    """A fact read back from something other than the kernel, labelled with where it comes from:
    a server's answer (`registry>`, `http>`), a program's output (`ps>`), labctl's own store (`store>`)."""
    console().print(f"  [magenta]{source}>[/magenta] {text}")


def quoted(text: str) -> None:
    """Text from elsewhere (a program's output, the kernel log), printed as it is: no rich markup."""
    from rich.markup import escape
    console().print(f"[dim]{escape(text)}[/dim]")


def ok(text: str) -> None:
    console().print(f"  [green]✔[/green] {text}")


def bad(text: str) -> None:
    console().print(f"  [red]✘[/red] {text}")


def warn(text: str) -> None:
    console().print(f"  [yellow]![/yellow] {text}")


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> None:
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(str(cell) for cell in row))
    console().print(t)


def error_line(text: str) -> None:
    print(f"labctl: error: {text}", file=sys.stderr)
