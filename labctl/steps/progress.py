"""The student's progress record: each `labctl check N` result and each hint taken, with its time.

Where it lives: in the student's own home, `~/.local/share/labctl/progress.json` ($XDG_DATA_HOME is
honoured when labctl runs as the student; $LABCTL_PROGRESS_FILE overrides both). Students run
`sudo labctl check N`, so the process is root; the record still belongs to the user who typed sudo
(SUDO_USER): labctl switches its effective user and group IDs to theirs (seteuid(2), setegid(2),
setgroups(2)) while it reads and writes the file. The file is then theirs, readable by `labctl progress`
without sudo, and root never follows a path the student controls with root's rights.

How it is written: read, change, write a temporary file beside it and rename(2) it over the old one
(state.atomic_write), under an flock(2) on the directory so that two checks at once do not lose one's
line. A reader, or a labctl killed halfway, sees the old record or the new, never half of one.
A record that does not parse is never replaced: every command says so in one line, names the file,
and leaves it for the student to move away.

The shape (JSON), one entry per step number:

    {"format": "labctl-progress/1", "user": "alice",
     "steps": {"1": {"checks": [{"time": "2024-05-02T10:14:03+02:00", "result": "fail",
                                 "cause": "the command shares the host's uts namespace ...",
                                 "reference": false, "hints": 1}],
                     "hints": [{"time": "2024-05-02T10:12:40+02:00", "rung": 1}]}}}

`hints` in a check is how many rungs of that step the student had seen when they ran it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

FORMAT = "labctl-progress/1"


@dataclass(frozen=True)
class Student:
    name: str
    uid: int
    gid: int
    home: Path


def student() -> Student:
    """Whose progress this is: the user who ran `sudo` (SUDO_USER) when labctl runs as root through
    sudo, else the user labctl runs as."""
    import pwd
    name = os.environ.get("SUDO_USER")
    if os.geteuid() == 0 and name and name != "root":
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise LabError(f"SUDO_USER={name} is not a user of this machine",
                           "run labctl through sudo from your own account") from None
    else:
        pw = pwd.getpwuid(os.geteuid())
    return Student(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def progress_file(who: Student | None = None) -> Path:
    """The progress record's path (see the module's docstring)."""
    if os.environ.get("LABCTL_PROGRESS_FILE"):
        return Path(os.environ["LABCTL_PROGRESS_FILE"])
    who = who or student()
    data = os.environ.get("XDG_DATA_HOME") if who.uid == os.getuid() else None
    return Path(data or who.home / ".local/share") / "labctl" / "progress.json"


@contextlib.contextmanager
def as_student(who: Student) -> Iterator[None]:
    """Act with the student's effective user, group and supplementary groups in this block (a no-op
    unless labctl is root acting for someone else); root's are restored on the way out."""
    if os.geteuid() != 0 or who.uid == 0:
        yield
        return
    groups, egid = os.getgroups(), os.getegid()
    os.setgroups(os.getgrouplist(who.name, who.gid))
    os.setegid(who.gid)
    os.seteuid(who.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)


def _parse(path: Path) -> dict:
    """The record at `path`: a new, empty one if there is none; a LabError if it does not parse."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"format": FORMAT, "steps": {}}
    except OSError as exc:
        raise LabError(f"cannot read the progress record {path}: {exc.strerror}",
                       "check its owner and mode (it should be yours, mode 644)") from None
    try:
        record = json.loads(text)
        if not (isinstance(record, dict) and record.get("format") == FORMAT and isinstance(record.get("steps"), dict)):
            raise ValueError(f"not a {FORMAT} record")
    except ValueError as exc:
        raise LabError(f"the progress record {path} is damaged ({exc}); it was left as it is",
                       f"move it away (mv {path} {path}.bad) and the next check starts a new one") from None
    return record


def load() -> dict:
    """The student's record, read as the student."""
    who = student()
    with as_student(who):
        return _parse(progress_file(who))


def update(change: Callable[[dict], None]) -> dict:
    """Read the record, apply `change` to it, and write it back atomically, all as the student and
    under a lock on its directory. Returns the new record."""
    from labctl.state import atomic_write
    who = student()
    path = progress_file(who)
    with as_student(who):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LabError(f"cannot make {path.parent} for the progress record: {exc.strerror}",
                           "set LABCTL_PROGRESS_FILE to a file you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            record = _parse(path)
            record["user"] = who.name
            change(record)
            atomic_write(path, json.dumps(record, indent=1) + "\n", mode=0o644)
        finally:
            os.close(fd)
    return record


def now() -> str:
    from datetime import datetime
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _step(record: dict, number: int) -> dict:
    return record["steps"].setdefault(str(number), {"checks": [], "hints": []})


def record_check(number: int, passed: bool, cause: str | None, reference: bool) -> None:
    """Add one `labctl check` result to the student's record."""
    def change(record: dict) -> None:
        entry = _step(record, number)
        entry["checks"].append({"time": now(), "result": "pass" if passed else "fail", "cause": cause,
                                "reference": reference, "hints": len(rungs_seen(record, number))})
    update(change)


def record_hint(number: int, rung: int, solution: bool = False) -> None:
    """Note that the student was shown rung `rung` of step `number`'s ladder (or, past its last rung,
    the solution)."""
    entry = {"time": now(), "rung": rung} | ({"solution": True} if solution else {})
    update(lambda record: _step(record, number)["hints"].append(entry))


def rungs_seen(record: dict, number: int) -> list[int]:
    """The rungs of step `number` the student has seen (the solution not counted), in the order first seen."""
    hints = record["steps"].get(str(number), {}).get("hints", [])
    return list(dict.fromkeys(h["rung"] for h in hints if not h.get("solution")))


def summary(record: dict, steps: list[tuple[int, str, int]]) -> list[dict]:
    """One row per step of `steps` ((number, title, rungs in its ladder)): what a teacher asks first.

    status: `pass` once the student's own exercise passed (a later failure does not take it back),
    else `fail` if it was checked, `reference only` if only the reference was, `-` if nothing was.
    attempts counts the checks of the student's own exercise; `--reference` runs are counted apart."""
    rows = []
    for number, title, rungs in steps:
        entry = record["steps"].get(str(number), {"checks": [], "hints": []})
        own = [c for c in entry["checks"] if not c.get("reference")]
        passes = [c for c in own if c["result"] == "pass"]
        failures = [c for c in own if c["result"] == "fail"]
        status = "pass" if passes else "fail" if own else "reference only" if entry["checks"] else "-"
        rows.append({
            "step": number, "title": title, "status": status, "attempts": len(own),
            "reference_runs": len(entry["checks"]) - len(own),
            "first_pass": passes[0]["time"] if passes else "",
            "last_time": entry["checks"][-1]["time"] if entry["checks"] else "",
            "last_cause": failures[-1]["cause"] if failures else "",
            "hints_seen": len(rungs_seen(record, number)), "rungs": rungs,
            "solution_seen": any(h.get("solution") for h in entry["hints"]),
        })
    return rows


def export_json(record: dict, rows: list[dict]) -> str:
    """The summary and every recorded check and hint, as one JSON document."""
    steps = [row | {"checks": record["steps"].get(str(row["step"]), {}).get("checks", []),
                    "hints": record["steps"].get(str(row["step"]), {}).get("hints", [])} for row in rows]
    return json.dumps({"format": FORMAT, "user": record.get("user", student().name), "exported": now(),
                       "steps": steps}, indent=1)


def export_csv(record: dict, rows: list[dict]) -> str:
    """The summary as CSV, one row per step, with the user in every row: a teacher concatenates the
    class's files (`tail -n +2`) into one sheet."""
    import csv
    import io
    out = io.StringIO()
    fields = ["user"] + list(rows[0]) if rows else ["user"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"user": record.get("user", student().name)} | row)
    return out.getvalue()
