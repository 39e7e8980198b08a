"""The curriculum. Each step number is stable (issues, notebooks and checks use it).

Each step's title is its `topic` in CURRICULUM below, and only there (`labctl steps` lists them
without importing a step module). A step module `labctl/steps/sNN_topic.py` provides:
  EXPLANATION: str             markdown shown by `labctl step N` before the demo
  demo() -> None               runs the reference implementation live, printing what the kernel shows
  check(command) -> list[str]  runs `command` (the student's exercise, or the reference), judges it by
                               live kernel state; returns what it verified, raises CheckFailed if not
  reference(argv) -> int       the reference solution, with the same command-line contract as
                               lab/NN-topic/exercise.py; `python -m labctl.steps.sNN_topic ARGS` runs it
Step modules are imported only when used, so `labctl --help` stays fast.

Beside the steps, what the course keeps about them: hints.py (each step's hint ladder, data in
lab/NN-topic/hints.toml), progress.py (the student's record of checks and hints), solutions.py (the
class setting that hides solutions; require_solutions(what) is the one gate for anything showing one).
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from labctl.errors import UnknownStepError


@dataclass(frozen=True)
class Step:
    number: int
    slug: str
    topic: str
    folder: str = ""     # the lab folder's name after "NN-", when it is not the slug


    @property
    def module_name(self) -> str:
        return f"labctl.steps.s{self.number:02d}_{self.slug}"

    @property
    def available(self) -> bool:
        return (Path(__file__).parent / f"s{self.number:02d}_{self.slug}.py").exists()

    @property
    def lab_dir(self) -> Path:
        return lab_root() / f"{self.number:02d}-{self.folder or self.slug}"

    @property
    def exercise(self) -> Path:
        return self.lab_dir / "exercise.py"

    def load(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def reference_command(self) -> list[str]:
        return [sys.executable, "-m", self.module_name]

    def exercise_command(self, path: Path | None = None) -> list[str]:
        """The student's exercise run with the lab's interpreter, lab/mycontainer importable."""
        return [sys.executable, "-m", "labctl.steps.exercises", str(path or self.exercise)]

    def command_to_check(self, reference: bool = False, path: str | None = None) -> tuple[list[str], str]:
        """What `labctl check N` runs and judges, and how to name it: the reference solution, or the
        student's exercise (`path`, by default lab/NN-topic/exercise.py), which must exist."""
        if reference:
            return self.reference_command(), "the reference solution"
        path = path or self.exercise
        if not os.path.exists(path):
            from labctl.errors import LabError
            raise LabError(f"no exercise at {path}", "give its path with --file, or restore lab/ from git")
        return self.exercise_command(path), str(path)


CURRICULUM = (
    Step(1, "namespaces", "namespaces: UTS, PID, IPC, mount"),
    Step(2, "rootfs", "root filesystem: chroot, pivot_root, /proc, /dev, /sys"),
    Step(3, "cgroups", "cgroups: memory, CPU and pids limits on v1 and v2"),
    Step(4, "overlayfs", "OverlayFS: layers, copy-up, whiteouts"),
    Step(5, "registry", "registry pull: the OCI distribution protocol"),
    Step(6, "networking", "networking: netns, veth, bridge, NAT, ports"),
    Step(7, "container", "a whole container: labctl run"),
    Step(8, "ebpf", "eBPF tracing with bcc: one container, and a container being built"),
    Step(9, "security", "security: capabilities, seccomp, user namespaces"),
    Step(10, "oci", "OCI runtime: bundles, labctl and runc"),
    Step(11, "daemon", "client-server: a daemon and its REST API", folder="client-server"),
    Step(12, "build", "build and push: layers as a cache and as a diff", folder="build-push"),
    Step(13, "multihost", "multi-host: an overlay network over VXLAN, etcd, leases", folder="multi-host"),
)


def lab_root() -> Path:
    """The course folder (lab/): $LABCTL_LAB_DIR, or lab/ beside the package in a source checkout."""
    env = os.environ.get("LABCTL_LAB_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "lab"


def get(number: int | str) -> Step:
    try:
        n = int(number)
    except (TypeError, ValueError):
        n = -1
    for step in CURRICULUM:
        if step.number == n:
            if not step.available:
                raise UnknownStepError(f"step {n} ({step.slug}) is not in the lab yet",
                                       "`labctl steps` lists the steps that are available")
            return step
    raise UnknownStepError(f"there is no step {number!r}",
                           f"steps are numbered 1 to {len(CURRICULUM)}; `labctl steps` lists them")


def run_reference(reference) -> None:
    """`python -m labctl.steps.sNN_topic ARGS`: run a step's reference solution as a program, with the
    same one-line errors as labctl (a LabError is its cause and fix, not a traceback)."""
    from labctl.errors import LabError
    try:
        status = reference(sys.argv[1:])
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    raise SystemExit(status)


def available() -> list[Step]:
    return [s for s in CURRICULUM if s.available]


def save_figure(fig, name: str) -> str:
    """Save a demo's figure as <state>/figures/NAME.png (100 dpi) and say where; returns the path."""
    from labctl import state, ui
    path = state.subdir("figures") / f"{name}.png"
    fig.savefig(path, dpi=100)
    ui.ok(f"figure: {path}")
    return str(path)
