"""The class setting that shows or hides the solutions, and the one gate every solution passes through.

A teacher may want students to struggle a little before they see the answer. The setting lives in a
small TOML file on the class box, `/etc/labctl/class.toml` (or $LABCTL_CLASS_FILE):

    solutions = false     # hide `labctl check N --reference` and `labctl hint N` past the last rung

`labctl class --solutions on|off` writes it (as root: a student cannot change it back without sudo,
which on a shared class box they do not have). With no file, or no `solutions` key, solutions are
shown: the lab's default reader is someone learning alone.

Everything that reveals a solution calls require_solutions(what) first; it raises a LabError of one
line naming the setting when they are hidden. It is a nudge, not a lock: the reference solutions are
Python files in labctl/steps/ that a determined student can open.

A class.toml that does not parse hides the solutions (with an error naming the file): a teacher's typo
must not show them to a class.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from labctl.errors import LabError

DEFAULT_CLASS_FILE = "/etc/labctl/class.toml"


def class_file() -> Path:
    """The class's settings file: $LABCTL_CLASS_FILE, or /etc/labctl/class.toml."""
    return Path(os.environ.get("LABCTL_CLASS_FILE", DEFAULT_CLASS_FILE))


def read_class() -> dict:
    """The class settings: {} when there is no file; a LabError naming the file when it does not parse."""
    import tomllib
    path = class_file()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LabError(f"{path} is not valid TOML ({exc}); the solutions stay hidden until it is",
                       f"fix it, or set it again with `sudo labctl class --solutions on|off`") from None
    except OSError as exc:
        raise LabError(f"cannot read {path}: {exc.strerror}", "make it readable by everyone (chmod 644)") from None


def solutions_allowed() -> bool:
    """Whether this class shows solutions: the `solutions` key of the class file, true by default."""
    value = read_class().get("solutions", True)
    if not isinstance(value, bool):
        raise LabError(f"solutions = {value!r} in {class_file()} is not true or false",
                       "write `solutions = true` or `solutions = false`")
    return value


def require_solutions(what: str) -> None:
    """Raise a one-line LabError unless the class setting allows solutions. `what` names what was
    asked for, e.g. "`labctl check 3 --reference`" or "the reference part of step 2"."""
    if not solutions_allowed():
        raise LabError(f"{what} shows a solution, and solutions are hidden in this class "
                       f"(solutions = false in {class_file()})",
                       "take the next hint with `labctl hint N`, or ask your teacher; "
                       "a teacher allows them with `sudo labctl class --solutions on`")


def set_solutions(allowed: bool) -> Path:
    """Write `solutions = true|false` into the class file, keeping its other lines; returns its path.
    The file is replaced atomically (a reader sees the old setting or the new, never half a file)."""
    from labctl.state import atomic_write
    path = class_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = "# labctl's class settings (`labctl class` shows them; lab/TEACHING.md explains them)\n"
    line = f"solutions = {'true' if allowed else 'false'}"
    pattern = re.compile(r"^solutions\s*=.*$", re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(line, text, count=1)
    else:   # a top-level key: before the first [table], whose keys would otherwise swallow it
        table = re.search(r"^\[", text, re.MULTILINE)
        at = table.start() if table else len(text.rstrip("\n")) + 1
        text = text[:at].rstrip("\n") + "\n" + line + "\n" + ("\n" + text[at:] if table else "")
    atomic_write(path, text, mode=0o644)
    return path
