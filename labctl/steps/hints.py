"""The hint ladder of each step, kept as data a teacher can edit: `lab/NN-topic/hints.toml`.

`labctl hint N` climbs step N's ladder one rung at a time: first the concept (what must become true,
and why), then the syscall or file and its man page, then the code, close to the reference's. Past the
last rung comes the reference solution itself, if the class setting allows solutions
(labctl/steps/solutions.py). Which rungs a student has seen is kept in their progress record
(labctl/steps/progress.py), so `labctl hint N` with no number gives the next one.

A ladder file, rungs in order (adding a step's ladder is adding this file; no code changes):

    [[rung]]
    kind = "concept"            # concept, syscall or code; a ladder never goes back down
    title = "What a namespace is"
    text = '''
    Markdown, shown as is.
    '''

    [solution]                  # optional: what `labctl hint N` shows past the last rung
    show = ["reference"]        # names in labctl/steps/sNN_*.py (functions, or strings such as a C
                                # program), or paths of files relative to the repository, e.g.
                                # "lab/mycontainer/rootfs.py"; default: the step module's reference()
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

KINDS = ("concept", "syscall", "code")
KIND_NAMES = {"concept": "the concept", "syscall": "the syscall or file", "code": "the code"}


@dataclass(frozen=True)
class Rung:
    number: int          # 1-based
    kind: str
    title: str
    text: str


@dataclass(frozen=True)
class Ladder:
    step: int
    path: Path
    rungs: tuple[Rung, ...]
    solution: tuple[str, ...]

    def rung(self, k: int) -> Rung:
        return self.rungs[k - 1]


def ladder_file(step) -> Path:
    return step.lab_dir / "hints.toml"


def load(step) -> Ladder:
    """Step `step`'s ladder (a labctl.steps.Step), read and checked; a LabError naming the file and
    the fix if it is missing or malformed."""
    import tomllib
    path = ladder_file(step)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise LabError(f"step {step.number} has no hint ladder yet ({path} is missing)",
                       "read the step's README.md; a teacher adds the ladder as that file (see labctl/steps/hints.py)") \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise LabError(f"{path} is not valid TOML: {exc}", "fix that line of the file") from None
    rungs = []
    for i, raw in enumerate(data.get("rung", []), 1):
        missing = [key for key in ("kind", "title", "text") if not isinstance(raw.get(key), str)]
        if missing or raw["kind"] not in KINDS:
            raise LabError(f"rung {i} of {path} needs kind ({', '.join(KINDS)}), title and text as strings",
                           "compare it with another step's hints.toml")
        if rungs and KINDS.index(raw["kind"]) < KINDS.index(rungs[-1].kind):
            raise LabError(f"rung {i} of {path} is a {raw['kind']} rung after a {rungs[-1].kind} rung",
                           f"order the rungs {' → '.join(KINDS)}: a ladder gives more away as it goes")
        rungs.append(Rung(i, raw["kind"], raw["title"].strip(), raw["text"].strip()))
    if not rungs:
        raise LabError(f"{path} has no [[rung]]", "add the concept, the syscall and the code as [[rung]] tables")
    show = data.get("solution", {}).get("show", ["reference"])
    return Ladder(step.number, path, tuple(rungs), tuple(show))


def solution(step, ladder: Ladder) -> str:
    """The reference solution as markdown: each entry of the ladder's [solution] show list, with the
    file it comes from. Callers ask solutions.require_solutions first."""
    import inspect
    from labctl.steps import lab_root
    parts = []
    for name in ladder.solution:
        if "/" in name:
            path = lab_root().parent / name
            try:
                source = path.read_text()
            except OSError as exc:
                raise LabError(f"{ladder.path} shows {name}, which cannot be read: {exc.strerror}",
                               "fix the [solution] show list") from None
            parts.append(f"`{name}`:\n\n```python\n{source.rstrip()}\n```")
            continue
        module = step.load()
        value = getattr(module, name, None)
        if value is None:
            raise LabError(f"{ladder.path} shows {name}, which {module.__name__} does not have",
                           "fix the [solution] show list")
        where = module.__file__.rsplit("/labctl/", 1)[-1]
        if isinstance(value, str):
            parts.append(f"`{name}` in `labctl/{where}`:\n\n```\n{value.strip()}\n```")
        else:
            parts.append(f"`{name}()` in `labctl/{where}`:\n\n```python\n{inspect.getsource(value).rstrip()}\n```")
    return "\n\n".join(parts)
