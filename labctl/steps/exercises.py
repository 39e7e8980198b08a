"""How an exercise runs: `python -m labctl.steps.exercises PATH ARGS...` runs lab/NN-topic/exercise.py
as a script, with the student's runtime package (lab/mycontainer) importable.

Each exercise is a thin driver of one part of the runtime the student grows in lab/mycontainer/ (one
module per step; lab/mycontainer/__init__.py lists them). The driver does `from mycontainer import
namespaces`: this runner puts the folder that holds mycontainer/ (the exercise's grandparent, lab/)
on sys.path, then runs the file as __main__, exactly as `python3 PATH ARGS` would. `labctl check N`
and `labctl exercise N -- ARGS` both start exercises this way, with labctl's own interpreter (the lab's
venv: labctl, pyroute2, bcc), so the one "Try it" line works from any directory.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path


def package_root(exercise: Path) -> Path:
    """The folder holding mycontainer/: the exercise's grandparent (lab/), else the course folder."""
    candidate = exercise.resolve().parent.parent
    if (candidate / "mycontainer").is_dir():
        return candidate
    from labctl.steps import lab_root
    return lab_root()


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(f"usage: python -m {__name__} EXERCISE.py [ARGS...]")
    exercise = Path(argv[0])
    sys.argv = [str(exercise)] + argv[1:]
    sys.path[0:0] = [str(exercise.resolve().parent), str(package_root(exercise))]
    runpy.run_path(str(exercise), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
