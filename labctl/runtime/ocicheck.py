"""Checking a config.json against the runtime specification before anything is made (step 10).

runc refuses a bad config.json in `create`, before it forks, with one line naming the field; so does
labctl: check(doc) raises a LabError whose cause names the field by its JSON path
(`linux.namespaces[2].type`, `mounts[4].destination`, ...) and whose fix says what the spec wants.
Only what the spec says MUST hold (config.md, config-linux.md) is refused; what it leaves to the
runtime (an annotation, an unknown top-level key) passes, as the spec asks.
"""
from __future__ import annotations

from labctl.errors import LabError

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = ("", "shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate", "runbindable")
HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
RLIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS", "RLIMIT_NPROC",
           "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE",
           "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME")   # <asm-generic/resource.h>: RLIMITS[N] is N
SPEC = "see the runtime specification, config.md and config-linux.md (github.com/opencontainers/runtime-spec)"


def bad(field: str, what: str, fix: str = SPEC) -> LabError:
    return LabError(f"config.json: {field} {what}", fix)


def check(doc) -> None:
    """Raise a LabError for the first field of `doc` that breaks the spec; return if it is sound."""
    if not isinstance(doc, dict):
        raise bad("(top level)", "is not a JSON object")
    if not isinstance(doc.get("ociVersion"), str) or not doc["ociVersion"]:
        raise bad("ociVersion", "is missing", 'add "ociVersion": "1.0.2"')
    root = doc.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise bad("root.path", "is missing (REQUIRED on Linux)", 'add "root": {"path": "rootfs"}')
    _type("root.readonly", root.get("readonly"), bool)
    _type("hostname", doc.get("hostname"), str)
    check_process(doc.get("process"))
    for i, m in enumerate(_list("mounts", doc.get("mounts"))):
        check_mount(f"mounts[{i}]", m)
    hooks = doc.get("hooks")
    _type("hooks", hooks, dict)
    for kind, entries in (hooks or {}).items():
        if kind not in HOOKS:
            continue
        for i, hook in enumerate(_list(f"hooks.{kind}", entries)):
            where = f"hooks.{kind}[{i}]"
            if not isinstance(hook, dict) or not isinstance(hook.get("path"), str) or not hook["path"].startswith("/"):
                raise bad(f"{where}.path", "must be an absolute path")
            _strings(f"{where}.args", hook.get("args"))
            _strings(f"{where}.env", hook.get("env"))
            if hook.get("timeout") is not None and (not isinstance(hook["timeout"], int) or hook["timeout"] <= 0):
                raise bad(f"{where}.timeout", "must be a positive number of seconds")
    check_linux(doc.get("linux"), doc)


def check_process(process) -> None:
    if process is None:
        return
    _type("process", process, dict)
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise bad("process.args", "must be a non-empty list of strings", 'e.g. "args": ["sh"]')
    cwd = process.get("cwd")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise bad("process.cwd", f"must be an absolute path (got {cwd!r})", 'e.g. "cwd": "/"')
    for i, e in enumerate(_strings("process.env", process.get("env"))):
        if "=" not in e:
            raise bad(f"process.env[{i}]", f"is not KEY=VALUE: {e!r}")
    user = process.get("user")
    _type("process.user", user, dict)
    for key in ("uid", "gid", "umask"):
        _uint(f"process.user.{key}", (user or {}).get(key))
    for i, g in enumerate(_list("process.user.additionalGids", (user or {}).get("additionalGids"))):
        _uint(f"process.user.additionalGids[{i}]", g)
    _type("process.terminal", process.get("terminal"), bool)
    _type("process.noNewPrivileges", process.get("noNewPrivileges"), bool)
    _type("process.oomScoreAdj", process.get("oomScoreAdj"), int)
    if process.get("oomScoreAdj") is not None and not -1000 <= process["oomScoreAdj"] <= 1000:
        raise bad("process.oomScoreAdj", "must be between -1000 and 1000")
    seen = set()
    for i, r in enumerate(_list("process.rlimits", process.get("rlimits"))):
        where = f"process.rlimits[{i}]"
        if not isinstance(r, dict) or r.get("type") not in RLIMITS:
            raise bad(f"{where}.type", f"is not a known rlimit: {r.get('type') if isinstance(r, dict) else r!r}",
                      "one of " + ", ".join(RLIMITS))
        if r["type"] in seen:
            raise bad(f"{where}.type", f"repeats {r['type']}")
        seen.add(r["type"])
        _uint(f"{where}.soft", r.get("soft"), required=True)
        _uint(f"{where}.hard", r.get("hard"), required=True)
        if r["soft"] > r["hard"]:
            raise bad(f"{where}", "has soft > hard")
    caps = process.get("capabilities")
    _type("process.capabilities", caps, dict)
    from labctl.security.capabilities import NAMES
    for kind, names in (caps or {}).items():
        for i, name in enumerate(_strings(f"process.capabilities.{kind}", names)):
            if name not in NAMES:
                raise bad(f"process.capabilities.{kind}[{i}]", f"is not a capability: {name!r}",
                          "use the kernel's names, e.g. CAP_CHOWN (capabilities(7))")


def check_mount(where: str, m) -> None:
    if not isinstance(m, dict):
        raise bad(where, "is not an object")
    dest = m.get("destination")
    if not isinstance(dest, str) or not dest.startswith("/"):
        raise bad(f"{where}.destination", f"must be an absolute path (got {dest!r})",
                  "write it from the container's root, e.g. /data")
    _type(f"{where}.type", m.get("type"), str)
    _type(f"{where}.source", m.get("source"), str)
    _strings(f"{where}.options", m.get("options"))


def check_linux(linux, doc: dict) -> None:
    if linux is None:
        return
    _type("linux", linux, dict)
    seen = set()
    for i, ns in enumerate(_list("linux.namespaces", linux.get("namespaces"))):
        where = f"linux.namespaces[{i}]"
        kind = ns.get("type") if isinstance(ns, dict) else None
        if kind not in NAMESPACE_TYPES:
            raise bad(f"{where}.type", f"is not a namespace type: {kind!r}", "one of " + ", ".join(NAMESPACE_TYPES))
        if kind in seen:
            raise bad(f"{where}.type", f"repeats {kind!r}", "give each namespace type once")
        seen.add(kind)
        path = ns.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise bad(f"{where}.path", f"must be an absolute path (got {path!r})", "e.g. /proc/1234/ns/net")
    if doc.get("hostname") and "uts" not in seen:
        raise bad("hostname", "is set but linux.namespaces has no uts namespace", 'add {"type": "uts"}')
    for key in ("uidMappings", "gidMappings"):
        for i, m in enumerate(_list(f"linux.{key}", linux.get(key))):
            for part in ("containerID", "hostID", "size"):
                _uint(f"linux.{key}[{i}].{part}", (m or {}).get(part), required=True)
        if linux.get(key) and "user" not in seen:
            raise bad(f"linux.{key}", "is set but linux.namespaces has no user namespace", 'add {"type": "user"}')
    if linux.get("rootfsPropagation", "") not in PROPAGATIONS:
        raise bad("linux.rootfsPropagation", f"is not a propagation: {linux['rootfsPropagation']!r}",
                  "one of " + ", ".join(p for p in PROPAGATIONS if p))
    for key in ("maskedPaths", "readonlyPaths"):
        for i, path in enumerate(_strings(f"linux.{key}", linux.get(key))):
            if not path.startswith("/"):
                raise bad(f"linux.{key}[{i}]", f"must be an absolute path (got {path!r})")
    sysctl = linux.get("sysctl")
    _type("linux.sysctl", sysctl, dict)
    for i, dev in enumerate(_list("linux.devices", linux.get("devices"))):
        where = f"linux.devices[{i}]"
        if not isinstance(dev, dict) or not str(dev.get("path", "")).startswith("/dev/"):
            raise bad(f"{where}.path", "must be a path under /dev")
        if dev.get("type") not in ("c", "b", "u", "p"):
            raise bad(f"{where}.type", f"must be c, b, u or p (got {dev.get('type')!r})")
    _type("linux.cgroupsPath", linux.get("cgroupsPath"), str)
    check_seccomp(linux.get("seccomp"))


def check_seccomp(seccomp) -> None:
    if seccomp is None:
        return
    from labctl.security.seccomp import ACTIONS, ARCHES
    _type("linux.seccomp", seccomp, dict)
    if seccomp.get("defaultAction") not in ACTIONS:
        raise bad("linux.seccomp.defaultAction", f"is not an action: {seccomp.get('defaultAction')!r}",
                  "one of " + ", ".join(ACTIONS))
    for i, arch in enumerate(_strings("linux.seccomp.architectures", seccomp.get("architectures"))):
        if arch.removeprefix("SCMP_ARCH_") not in ARCHES:
            raise bad(f"linux.seccomp.architectures[{i}]", f"is not an architecture: {arch!r}", "e.g. SCMP_ARCH_X86_64")
    for i, rule in enumerate(_list("linux.seccomp.syscalls", seccomp.get("syscalls"))):
        where = f"linux.seccomp.syscalls[{i}]"
        if not isinstance(rule, dict) or not rule.get("names"):
            raise bad(f"{where}.names", "is missing")
        if rule.get("action") not in ACTIONS:
            raise bad(f"{where}.action", f"is not an action: {rule.get('action')!r}", "one of " + ", ".join(ACTIONS))


def _type(field: str, value, kind: type) -> None:
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise bad(field, f"must be a JSON {_JSON_NAME[kind]} (got {type(value).__name__})")


_JSON_NAME = {bool: "boolean", str: "string", int: "integer", dict: "object", list: "array"}


def _list(field: str, value) -> list:
    _type(field, value, list)
    return value or []


def _strings(field: str, value) -> list[str]:
    for i, item in enumerate(_list(field, value)):
        if not isinstance(item, str):
            raise bad(f"{field}[{i}]", "must be a string")
    return value or []


def _uint(field: str, value, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad(field, f"must be a non-negative integer (got {value!r})")
