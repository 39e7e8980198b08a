"""The runtime the student grows, lab/mycontainer/: which step owns which part, and the two versions
of every part kept here, the reference (reference/) and the skeleton with its TODOs (skeleton/).

Step N's exercise drives one part, lab/mycontainer/PART.py. A student who skipped a step takes the
reference part and goes on (`labctl lab take N`); `labctl lab reset N` puts the skeleton back. Either
way the student's own file, when it is neither version, is first kept beside it as PART.py.mine
(then .mine.2, .mine.3, ...): nothing the student wrote is lost. The files are written with the owner
of lab/mycontainer/, so a `sudo labctl lab take` leaves them editable by the student.

The reference parts use only the standard library, ctypes and the given lab/mycontainer/libc.py (step 3
borrows labctl's finding of cgroup hierarchies, step 6 pyroute2), in the skeleton's style: they are
what a student could have written, unlike labctl's library, which `labctl check N --reference` runs.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

#: step -> its part of the runtime (the module name in lab/mycontainer/).
PARTS = {1: "namespaces", 2: "rootfs", 3: "cgroups", 4: "overlay", 5: "registry", 6: "network", 7: "container",
         9: "security"}
VERSIONS = ("reference", "skeleton")
HERE = Path(__file__).resolve().parent


def runtime_dir() -> Path:
    from labctl.steps import lab_root
    return lab_root() / "mycontainer"


def packaged(step: int, version: str) -> Path:
    """The reference or skeleton version of step `step`'s part, as shipped with labctl."""
    if step not in PARTS or not (HERE / version / f"{PARTS[step]}.py").exists():
        have = ", ".join(str(n) for n in PARTS if (HERE / version / f"{PARTS[n]}.py").exists())
        raise LabError(f"step {step} has no part of the runtime in lab/mycontainer",
                       f"the steps with one are {have}: `labctl lab status` lists them")
    return HERE / version / f"{PARTS[step]}.py"


@dataclass(frozen=True)
class Put:
    path: Path                 # lab/mycontainer/PART.py
    backup: Path | None        # where the student's own version was kept, if it was neither version
    changed: bool              # False: it already was that version


def put(step: int, version: str) -> Put:
    """Write the `version` ("reference" or "skeleton") of step's part into lab/mycontainer, keeping
    the student's own file first."""
    source = packaged(step, version)
    folder = runtime_dir()
    if not folder.is_dir():
        raise LabError(f"there is no {folder}", "restore lab/ from git (`git checkout lab/mycontainer`), "
                       "or point LABCTL_LAB_DIR at your copy of lab/")
    target = folder / source.name
    new = source.read_bytes()
    old = target.read_bytes() if target.exists() else None
    if old == new:
        return Put(target, None, False)
    backup = None
    if old is not None and old not in (packaged(step, v).read_bytes() for v in VERSIONS):
        backup = _free_backup_name(target)
        shutil.copy2(target, backup)     # copy, not link: lab/ may be a VM's shared folder
    owner = folder.stat()
    tmp = target.with_name(f".{target.name}.labctl-tmp")
    tmp.write_bytes(new)
    os.chown(tmp, owner.st_uid, owner.st_gid)
    os.replace(tmp, target)
    return Put(target, backup, True)


def _free_backup_name(target: Path) -> Path:
    candidate = target.with_name(target.name + ".mine")
    n = 2
    while candidate.exists():
        candidate = target.with_name(f"{target.name}.mine.{n}")
        n += 1
    return candidate


def status() -> list[tuple[int, str, str, list[str]]]:
    """[(step, part file, "yours" | "reference" | "skeleton" | "missing", [backups])] for every part."""
    folder = runtime_dir()
    rows = []
    for step, name in PARTS.items():
        target = folder / f"{name}.py"
        if not target.exists():
            state = "missing"
        else:
            data = target.read_bytes()
            state = next((v for v in VERSIONS if (HERE / v / target.name).exists()
                          and (HERE / v / target.name).read_bytes() == data), "yours")
        backups = sorted(p.name for p in folder.glob(f"{name}.py.mine*")) if folder.is_dir() else []
        rows.append((step, target.name, state, backups))
    return rows
