"""Reading a Dockerfile: its lines into instructions, and Docker's variable substitution.

The format (docs.docker.com/reference/dockerfile):
  - `INSTRUCTION arguments`, one per line; the keyword is case-insensitive
  - a line ending in `\\` continues on the next; comment lines (`#` first) inside are dropped
  - `# directive=value` lines at the very top are parser directives (syntax, escape): read as comments here
  - exec form `["executable", "arg"]` (a JSON array: no shell) or shell form `echo $HOME` (run by
    /bin/sh -c); RUN, CMD and ENTRYPOINT take both
  - `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}` are replaced by the builder (not by a shell) in
    FROM, COPY, ADD, ENV, ARG, LABEL, EXPOSE, USER, VOLUME and WORKDIR, from the ENV and ARG values
    known at that line; single quotes and `\\$` keep a `$` as it is. RUN, CMD and ENTRYPOINT are left
    to the shell inside the container
  - ARG before the first FROM declares a variable FROM may use; it is out of scope after FROM

Every error is a LabError naming the line: `Dockerfile:7: unknown instruction FOO`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from labctl.errors import LabError

INSTRUCTIONS = ("FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "CMD", "ENTRYPOINT",
                "EXPOSE", "LABEL", "VOLUME")
NOT_HERE = {"HEALTHCHECK": "the lab's containers have no health checks", "ONBUILD": "no triggers in the lab",
            "STOPSIGNAL": "the lab stops with SIGTERM", "SHELL": "RUN uses /bin/sh -c",
            "MAINTAINER": "use LABEL maintainer=..."}
FLAGS = {"COPY": ("chown",), "ADD": ("chown",), "FROM": (), "RUN": ()}
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class DockerfileError(LabError):
    def __init__(self, path: str, line: int, cause: str, fix: str):
        super().__init__(f"{path}:{line}: {cause}", fix)
        self.line = line


@dataclass
class Instruction:
    line: int                 # where it starts (1-based)
    keyword: str              # FROM, RUN, ... (upper case)
    args: str                 # the rest of the line, continuations joined, flags removed
    flags: dict[str, str] = field(default_factory=dict)   # --chown=1000:1000 -> {"chown": "1000:1000"}
    path: str = "Dockerfile"

    @property
    def text(self) -> str:
        flags = "".join(f"--{k}={v} " for k, v in self.flags.items())
        return f"{self.keyword} {flags}{self.args}".rstrip()

    def error(self, cause: str, fix: str) -> DockerfileError:
        return DockerfileError(self.path, self.line, cause, fix)

    def exec_form(self) -> list[str] | None:
        """The JSON array of the exec form, or None for the shell form."""
        if not self.args.startswith("["):
            return None
        try:
            value = json.loads(self.args)
        except ValueError:
            return None   # Docker too runs a malformed array as a shell command
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{self.keyword}'s exec form must be an array of strings",
                             f'write it as {self.keyword} ["executable", "arg"] or in shell form')
        return value

    def command(self) -> list[str]:
        """RUN, CMD, ENTRYPOINT: argv (the exec form) or ["/bin/sh", "-c", text] (the shell form)."""
        form = self.exec_form()
        return form if form is not None else ["/bin/sh", "-c", self.args]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, the line with its continuations joined), comments and blank lines dropped."""
    out, current, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and current):
            continue   # a comment (or a blank line inside a continuation) is not part of the instruction
        if not current:
            start = number
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        if current.strip():
            out.append((start, current.strip()))
        current = ""
    if current.strip():
        out.append((start, current.strip()))
    return out


def _split_flags(inst: Instruction) -> None:
    allowed = FLAGS.get(inst.keyword, ())
    while inst.args.startswith("--"):
        word, _, rest = inst.args.partition(" ")
        name, eq, value = word[2:].partition("=")
        if name not in allowed or not eq:
            hint = "multi-stage builds are not supported by the lab" if name == "from" else \
                f"{inst.keyword} takes {', '.join('--' + a + '=...' for a in allowed) or 'no flags'} here"
            raise inst.error(f"unknown flag --{name} for {inst.keyword}", hint)
        inst.flags[name] = value
        inst.args = rest.lstrip()


def parse(text: str, path: str = "Dockerfile") -> list[Instruction]:
    """The instructions of a Dockerfile, checked: known keywords, arguments present, FROM first."""
    out = []
    for number, line in _logical_lines(text):
        keyword, _, args = line.partition(" ")
        inst = Instruction(number, keyword.upper(), args.strip(), path=path)
        if inst.keyword in NOT_HERE:
            raise inst.error(f"{inst.keyword} is not supported by the lab's builder", NOT_HERE[inst.keyword])
        if inst.keyword not in INSTRUCTIONS:
            raise inst.error(f"unknown instruction {keyword}",
                             f"the builder knows {', '.join(INSTRUCTIONS)}; check the spelling")
        _split_flags(inst)
        if not inst.args:
            raise inst.error(f"{inst.keyword} requires at least one argument", "see `labctl build --help`")
        out.append(inst)
    froms = [i for i in out if i.keyword == "FROM"]
    if not froms:
        raise DockerfileError(path, 1, "no FROM instruction", "start with e.g. `FROM busybox`")
    first = out.index(froms[0])
    for inst in out[:first]:
        if inst.keyword != "ARG":
            raise inst.error(f"{inst.keyword} before FROM", "only ARG may come before the first FROM")
    if len(froms) > 1:
        raise froms[1].error("a second FROM: multi-stage builds are not supported by the lab",
                             "build each stage as its own image and COPY from the context")
    return out


# ---------------------------------------------------------------------------------------------
# Words and variables, as Docker's shell-word lexer does it


def substitute(text: str, env: dict[str, str]) -> str:
    """$VAR, ${VAR}, ${VAR:-default}, ${VAR:+alternative} replaced from env (unset: empty)."""
    def replace(m: re.Match) -> str:
        name = m.group("braced") or m.group("plain")
        value = env.get(name, "")
        if m.group("op") == "-":
            return value or substitute(m.group("word"), env)
        if m.group("op") == "+":
            return substitute(m.group("word"), env) if value else ""
        return value
    return _VAR.sub(replace, text)


def words(text: str, env: dict[str, str]) -> list[str]:
    """Split on blanks outside quotes, substituting variables outside single quotes, removing quotes
    and backslash escapes (`\\$` keeps the dollar, `\\ ` the blank): Docker's ProcessWords."""
    out, word, have, i = [], [], False, 0
    while i < len(text):
        c = text[i]
        if c in " \t":
            if have:
                out.append("".join(word))
            word, have = [], False
            i += 1
            continue
        have = True
        if c == "\\" and i + 1 < len(text):
            word.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            end = len(text) if end < 0 else end
            word.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            j, chunk = i + 1, []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text) and text[j + 1] in '"\\$':
                    chunk.append("\x00" if text[j + 1] == "$" else text[j + 1])
                    j += 2
                    continue
                chunk.append(text[j])
                j += 1
            word.append(substitute("".join(chunk), env).replace("\x00", "$"))
            i = j + 1
        else:
            m = _VAR.match(text, i) if c == "$" else None
            word.append(substitute(m.group(0), env) if m else c)
            i = m.end() if m else i + 1
    if have:
        out.append("".join(word))
    return out


def key_values(inst: Instruction, env: dict[str, str], legacy: bool = True) -> list[tuple[str, str]]:
    """ENV and LABEL (and ARG) pairs: `K=V K2="v 2"`, or the old `ENV K the rest` form."""
    parts = words(inst.args, env)
    if legacy and parts and "=" not in parts[0]:
        if len(parts) < 2:
            raise inst.error(f"{inst.keyword} {parts[0]} has no value", f"write {inst.keyword} {parts[0]}=VALUE")
        return [(parts[0], " ".join(parts[1:]))]
    pairs = []
    for part in parts:
        key, eq, value = part.partition("=")
        if not key or not eq:
            raise inst.error(f"{inst.keyword} {part!r} is not KEY=VALUE", f"write {inst.keyword} KEY=VALUE")
        pairs.append((key, value))
    return pairs
