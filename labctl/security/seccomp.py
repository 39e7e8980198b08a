"""Seccomp: a filter the kernel runs on every system call of the container, Docker's default profile.

Capabilities decide what root may do inside a call (mount needs CAP_SYS_ADMIN); seccomp decides which
calls may be made at all, whatever the caller's privileges. A filter is a small classic-BPF program
attached to the process (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)): for each system call the kernel
runs it on the call's number, architecture and arguments, and does what it returns (allow, fail with
an errno, kill, ...). Filters are inherited by every child and kept across execve, and can never be
removed: only more filters added. Loading one needs CAP_SYS_ADMIN or no_new_privs set first.

Docker's default profile (default-seccomp.json here, moby's profiles/seccomp/default.json, v0.2.3) is an
allowlist: "defaultAction": "SCMP_ACT_ERRNO" with "defaultErrnoRet": 1 makes every call it does not list
fail with EPERM (keyctl, add_key, bpf, mount, unshare(CLONE_NEWUSER), init_module, clock_settime, ...),
and some rules look at arguments: clone and unshare only without namespace flags
(SCMP_CMP_MASKED_EQ 0x7E020000), personality only with the values programs use, socket not for AF_VSOCK
(40). Rules may be conditional, resolved here as Docker does (moby's seccomp.setupSeccomp):
  "includes"/"excludes": {"caps": [...]}   by the container's final capability set (--cap-add SYS_ADMIN
                                           allows mount, unshare with namespace flags, ...)
  {"arches": [...]}, {"minKernel": "4.8"}  by this machine's architecture (Go's names) and kernel
"archMap" adds the sub-architectures of this one (x86 and x32 beside x86_64): a 32-bit syscall made
through int 0x80 is then judged by the rules for that ABI, instead of killing the process as a foreign
architecture.

libseccomp (Debian's python3-seccomp) turns the rules into the BPF program (compile_filter). Its
Python binding is imported only to compile (and to check a profile file's syscall names), never by
`labctl --help`. The program is made before the fork and loaded by PID 1 at the last moment (load,
runtime/confine.py): the same split as runc, which exports libseccomp's program and loads it with
seccomp(2) itself (libcontainer/seccomp/patchbpf).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from labctl.errors import LabError
from labctl.kernel.syscalls import seccomp_filter

DEFAULT_FILE = Path(__file__).with_name("default-seccomp.json")
EPERM = 1

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
           "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
             "SCMP_CMP_MASKED_EQ")
ARCHES = ("X86", "X86_64", "X32", "ARM", "AARCH64", "MIPS", "MIPS64", "MIPS64N32", "MIPSEL", "MIPSEL64",
          "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390", "S390X", "PARISC", "PARISC64", "RISCV64")
#: uname's machine -> Go's name of it, which the profile's "arches" use.
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "x86", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}
FIX = "correct the profile (Docker's format: docs.docker.com/engine/security/seccomp), or use seccomp=unconfined"


def default_profile() -> dict:
    with open(DEFAULT_FILE) as f:
        return json.load(f)


def resolve(option: str | None, privileged: bool) -> tuple[dict | None, str]:
    """--security-opt seccomp=... -> (the profile, where it came from): none given is Docker's default
    (and, with --privileged, no filter at all), "unconfined" no filter, a path that JSON file, checked."""
    if option == "unconfined" or (option is None and privileged):
        return None, "unconfined"
    if option in (None, "default", "builtin"):
        return default_profile(), "default"
    return load_file(option), os.path.abspath(option)


def load_file(path: str) -> dict:
    """A Docker-format profile file, read and checked; LabError naming the file and what is wrong."""
    try:
        with open(path) as f:
            profile = json.load(f)
    except OSError as exc:
        raise LabError(f"cannot read seccomp profile {path}: {exc.strerror}",
                       "give the path of a JSON profile, e.g. --security-opt seccomp=./profile.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise LabError(f"seccomp profile {path} is not valid JSON: {getattr(exc, 'msg', exc)}{where}", FIX) from None
    check(profile, path)
    return profile


def check(profile, where: str) -> None:
    """Docker's rules for a profile; the first thing wrong -> LabError."""
    def bad(what: str):
        raise LabError(f"seccomp profile {where}: {what}", FIX)
    if not isinstance(profile, dict):
        bad("the top level must be a JSON object")
    if profile.get("defaultAction") not in ACTIONS:
        bad(f"unknown defaultAction {profile.get('defaultAction')!r} (one of {', '.join(ACTIONS)})")
    if profile.get("architectures") and profile.get("archMap"):
        bad("both 'architectures' and 'archMap' are given: use one")
    arches = list(profile.get("architectures") or []) + [a for m in profile.get("archMap") or []
                                                         for a in [m.get("architecture")] + m.get("subArchitectures", [])]
    for arch in arches:
        if not isinstance(arch, str) or arch.removeprefix("SCMP_ARCH_") not in ARCHES:
            bad(f"unknown architecture {arch!r} (e.g. SCMP_ARCH_X86_64)")
    if not isinstance(profile.get("syscalls", []), list):
        bad("'syscalls' must be a list")
    known = _known_names()
    for rule in profile.get("syscalls", []):
        if not isinstance(rule, dict) or rule.get("action") not in ACTIONS:
            bad(f"rule {json.dumps(rule)[:60]}: unknown action {rule.get('action') if isinstance(rule, dict) else None!r}")
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        if not names or not all(isinstance(n, str) for n in names):
            bad(f"rule {json.dumps(rule)[:60]}: no syscall 'names'")
        for name in names:
            if name not in known(name):
                bad(f"unknown syscall {name!r}")
        for arg in rule.get("args") or []:
            if not isinstance(arg, dict) or arg.get("op") not in OPERATORS or arg.get("index") not in range(6) \
                    or not isinstance(arg.get("value", 0), int) or not isinstance(arg.get("valueTwo", 0), int):
                bad(f"syscall {names[0]}: bad argument filter {json.dumps(arg)} (index 0-5, op SCMP_CMP_*, integer value)")


def _known_names():
    """name -> the set it must be in: what libseccomp knows, plus the newer calls Docker's profile names."""
    import seccomp as libseccomp
    newer = {n for rule in default_profile()["syscalls"] for n in rule["names"]}
    return lambda name: newer | ({name} if libseccomp.resolve_syscall(libseccomp.Arch.NATIVE, name) != -1 else set())


def _kernel_at_least(version: str) -> bool:
    def numbers(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("-")[0].split(".")[:2] if part.isdigit())
    return numbers(os.uname().release) >= numbers(version)


def _applies(rule: dict, capabilities: list[str], arch: str) -> bool:
    """Docker's conditions: any one of "excludes" drops the rule, every one of "includes" must hold."""
    excludes, includes = rule.get("excludes") or {}, rule.get("includes") or {}
    if arch in excludes.get("arches", []) or any(c in capabilities for c in excludes.get("caps", [])) \
            or (excludes.get("minKernel") and _kernel_at_least(excludes["minKernel"])):
        return False
    return (not includes.get("arches") or arch in includes["arches"]) \
        and all(c in capabilities for c in includes.get("caps", [])) \
        and (not includes.get("minKernel") or _kernel_at_least(includes["minKernel"]))


def select(profile: dict, capabilities: list[str]) -> tuple[list[str], list[dict]]:
    """The architectures and the rules that apply to this machine and this capability set."""
    arch = GO_ARCH.get(os.uname().machine, os.uname().machine)
    arches = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == "SCMP_ARCH_" + {"amd64": "X86_64", "arm64": "AARCH64"}.get(arch, arch.upper()):
            arches += [entry["architecture"]] + entry.get("subArchitectures", [])
    rules = [rule for rule in profile.get("syscalls", []) if _applies(rule, capabilities, arch)]
    return arches, rules


def _action(libseccomp, name: str, errno_ret: int | None):
    kind = name.removeprefix("SCMP_ACT_")
    if kind in ("ERRNO", "TRACE"):
        return getattr(libseccomp, kind)(EPERM if errno_ret is None else errno_ret)
    return {"KILL": libseccomp.KILL, "KILL_THREAD": libseccomp.KILL}.get(kind) or getattr(libseccomp, kind)


def compile_filter(profile: dict, capabilities: list[str]) -> bytes:
    """The profile -> the BPF program libseccomp makes of it (seccomp_export_bpf), for this machine.
    As runc: a syscall this libseccomp does not know (newer than it) is left out (so it gets the
    default action), and two conditions on the same argument become two rules."""
    import seccomp as libseccomp
    arches, rules = select(profile, capabilities)
    default = _action(libseccomp, profile["defaultAction"], profile.get("defaultErrnoRet"))
    program = libseccomp.SyscallFilter(default)
    for arch in arches:
        number = getattr(libseccomp.Arch, arch.removeprefix("SCMP_ARCH_"))
        if not program.exist_arch(number):
            program.add_arch(number)
    for rule in rules:
        action = _action(libseccomp, rule["action"], rule.get("errnoRet"))
        if action == default:
            continue   # libseccomp refuses a rule that says what the default says
        args = [libseccomp.Arg(a["index"], getattr(libseccomp, a["op"].removeprefix("SCMP_CMP_")),
                               a.get("value", 0), a.get("valueTwo", 0)) for a in rule.get("args") or []]
        same_argument = len({a["index"] for a in rule.get("args") or []}) < len(args)
        for name in rule.get("names") or [rule["name"]]:
            if libseccomp.resolve_syscall(libseccomp.Arch.NATIVE, name) == -1:
                continue
            for conditions in ([[a] for a in args] if same_argument else [args]):
                program.add_rule(action, name, *conditions)
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        program.export_bpf(_FileNumber(fd))
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


class _FileNumber:
    """What export_bpf wants of a file: its fileno()."""
    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def load(program: bytes) -> None:
    """Attach the compiled filter to this process, for good (and to everything it execs or forks)."""
    seccomp_filter(program)
