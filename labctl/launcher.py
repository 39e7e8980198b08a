"""The `labctl` command on PATH: a small launcher script that starts the venv's Python without `site`.

    .venv/bin/python -m labctl.launcher /usr/local/bin/labctl   # what vagrant/provision.sh runs
    .venv/bin/python -m labctl.launcher /usr/local/bin/labctl-runtime   # step 10's OCI runtime, the same way

Why: a normal start of the venv's Python spends ~33 ms of its ~42 ms in the `site` module: it scans
three site-packages directories (the venv's, and Debian's two, for bcc), executes every `.pth` file
in them (setuptools' editable-install finder for labctl itself, and others), and only then runs
labctl. Part of that work (pathlib, re, ...) labctl needs anyway, so `labctl run --rm busybox /bin/true`
gains 5-15 ms (bench/run.py), against runc's ~45 ms. With `python -S` the interpreter starts in ~9 ms;
the launcher then sets `sys.path` to exactly the list `site` would have built, measured once here
from the venv's own Python, with the repository in front (what the editable install's finder
provides), and sets `sys.prefix` as `site` does in a venv.

What a `.pth` file would have done is skipped: the editable finder (replaced by the repository on
sys.path) and any import hooks other packages install. None of labctl's commands needs one; the
tests run commands through a launcher generated into a temporary directory to prove it. Programs
that labctl starts with `sys.executable` (the bcc probe of `doctor`, exercise checks, helpers) get
a normal interpreter, `site` and all. `.venv/bin/labctl` (the console script pip made) still works.

The launcher bakes absolute paths: run provision.sh again after moving the clone or changing the venv
(it rewrites the launcher only when its content changes, so a second run changes nothing).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TEMPLATE = '''#!{python} -S
# labctl launcher, written by `python -m labctl.launcher` (vagrant/provision.sh). Do not edit: rerun it.
# -S skips the `site` module (its .pth files and directory scans); sys.path is the one `site` builds, baked in.
import os, sys
sys.path[:] = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p] + {path!r}
sys.prefix = sys.exec_prefix = {prefix!r}
from {module} import main
sys.exit(main())
'''
#: What each launcher runs: `labctl`, and step 10's OCI runtime with runc's command line.
ENTRY_POINTS = {"labctl": "labctl.client.main", "labctl-runtime": "labctl.runtime.ocicli"}


def venv_sys_path(python: str) -> tuple[list[str], str]:
    """(sys.path, sys.prefix) of a normal start of `python` (with `site`), without the script directory."""
    out = subprocess.run([python, "-c", "import json, sys; print(json.dumps([sys.path[1:], sys.prefix]))"],
                         capture_output=True, text=True, check=True, cwd="/", env=_no_pythonpath()).stdout
    path, prefix = json.loads(out)
    return path, prefix


def _no_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def render(python: str, repo: str, module: str = ENTRY_POINTS["labctl"]) -> str:
    """The launcher's text for the venv interpreter `python` and the repository (clone) at `repo`."""
    path, prefix = venv_sys_path(python)
    path = [repo] + [p for p in path if p != repo]
    return TEMPLATE.format(python=python, path=path, prefix=prefix, module=module)


def install(target: str | os.PathLike, python: str | None = None, repo: str | None = None) -> bool:
    """Write the launcher at `target` (replacing a symlink there) unless it is there already, identical.
    Returns whether anything changed."""
    python = python or sys.executable
    repo = repo or str(Path(__file__).resolve().parent.parent)
    target = Path(target)
    text = render(python, repo, ENTRY_POINTS.get(target.name, ENTRY_POINTS["labctl"]))
    if not target.is_symlink() and target.is_file() and target.read_text() == text:
        return False
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, target)   # atomic, and it replaces the old symlink itself, not what it points to
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m labctl.launcher TARGET   (e.g. /usr/local/bin/labctl)", file=sys.stderr)
        return 2
    changed = install(args[0])
    print(f"{args[0]}: {'written' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
