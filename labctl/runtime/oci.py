"""An OCI runtime bundle's config.json <-> the runtime's Config: the one place the two meet (step 10).

A bundle is a directory holding the container's root filesystem and config.json (the OCI runtime
specification, 1.0.2/1.1). Every field has a step of the course behind it:

    ociVersion                "1.0.2"
    root.path, root.readonly  step 2 (pivot_root into it), step 9 (--read-only)
    process.args/env/cwd      step 7 (the image's Entrypoint + Cmd, Env, WorkingDir; Docker's rules)
    process.user              step 7 (uid/gid numbers: the image's /etc/passwd is read when the bundle is
                              written, as containerd does), additionalGids
    process.capabilities      step 9 (bounding, effective, permitted; inheritable and ambient empty)
    process.noNewPrivileges   step 9
    process.rlimits, oomScoreAdj, terminal   setrlimit(2), /proc/self/oom_score_adj, --console-socket
    hostname                  step 1 (the UTS namespace)
    mounts                    step 2 (proc, a tmpfs /dev, devpts, shm, sysfs), step 7 (volumes, binds, tmpfs)
    linux.namespaces          step 1 (new ones, or joined by "path": setns(2))
    linux.uid/gidMappings     step 9 (--userns remap: the user namespace's maps)
    linux.resources, cgroupsPath   step 3 (memory.limit, cpu.quota/period/shares, pids.limit), and
                              step 9's device allowlist (resources.devices: the devices cgroup, or a BPF
                              program on cgroup v2)
    linux.seccomp             step 9, in the OCI's format: the rules Docker's profile keeps for these
                              capabilities on this machine, its includes/excludes resolved
    linux.maskedPaths/readonlyPaths   step 9; linux.sysctl, linux.devices, linux.rootfsPropagation
    hooks                     prestart, createRuntime, createContainer, startContainer, poststart, poststop

to_oci(config) writes what labctl run would do as a config.json; from_oci(bundle) reads one back into a
Config (checked first by ocicheck.py: a bad field is refused in one line before anything is made).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from labctl.errors import LabError
from labctl.runtime.config import Config, OciExtras
from labctl.security.profile import SecurityProfile
from labctl.security.userns import IdMap

OCI_VERSION = "1.0.2"
#: labctl's names of namespaces (/proc/PID/ns/*) <-> the spec's.
NS_OCI = {"pid": "pid", "net": "network", "mnt": "mount", "ipc": "ipc", "uts": "uts", "user": "user",
          "cgroup": "cgroup", "time": "time"}
NS_LABCTL = {v: k for k, v in NS_OCI.items()}
INIT_PATH = "/sbin/labctl-init"   # where --init's tini appears inside (Docker uses /sbin/docker-init)

#: The mounts every labctl container gets, as the spec writes them (kernel/rootfs.py teaches them).
BASE_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "mode=755", "size=64k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=64m"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
]


def read_config(bundle: str | os.PathLike) -> dict:
    """The bundle's config.json as a dict; LabError if it is missing or not JSON."""
    path = Path(bundle) / "config.json"
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise LabError(f"{path} does not exist", "give --bundle a directory with a config.json "
                       "(`labctl bundle IMAGE DIR` or `labctl runtime spec` writes one)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabError(f"{path} is not valid JSON: {exc}", "correct the file (runtime-spec config.md)") from None


# ---------------------------------------------------------------------------------------------
# Config -> config.json


def to_oci(config: Config, root_path: str = "rootfs", uid: int = 0, gid: int = 0,
           additional_gids: list[int] = (), resources: dict | None = None, cgroups_path: str = "",
           time_namespace: bool = False) -> dict:
    """What labctl does for `config`, as a config.json. The user is given as numbers (the caller
    looked it up in the image's /etc/passwd: user.resolve_user). time_namespace: keep the time namespace
    (labctl's own runtime reads the file; a bundle for runc 1.1, which knows none, leaves it out)."""
    sec = config.security
    caps = list(sec.capabilities)
    process = {"terminal": False, "user": {"uid": uid, "gid": gid}, "args": _exec_argv(config),
               "env": list(config.env), "cwd": config.workdir,
               "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
               "noNewPrivileges": sec.no_new_privileges}
    if additional_gids:
        process["user"]["additionalGids"] = list(additional_gids)
    namespaces = [{"type": NS_OCI[k]} for k in config.namespaces if k != "time" or time_namespace]
    if config.new_cgroup_namespace:
        namespaces.append({"type": "cgroup"})
    linux: dict = {"namespaces": namespaces, "maskedPaths": list(sec.masked_paths),
                   "readonlyPaths": list(sec.readonly_paths)}
    if sec.uid_map:
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [_mapping(m) for m in sec.uid_map]
        linux["gidMappings"] = [_mapping(m) for m in sec.gid_map]
    if sec.seccomp is not None:
        linux["seccomp"] = seccomp_to_oci(sec.seccomp, caps)
    resources = dict(resources or {})
    resources["devices"] = device_rules(sec.privileged)
    linux["resources"] = resources
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    doc = {"ociVersion": OCI_VERSION, "process": process, "root": {"path": root_path, "readonly": sec.read_only},
           "hostname": config.hostname, "mounts": labctl_mounts(config), "linux": linux}
    return doc


def _exec_argv(config: Config) -> list[str]:
    return ([INIT_PATH, "--"] if config.init_binary else []) + list(config.argv)


def _mapping(m: IdMap) -> dict:
    return {"containerID": m.inside, "hostID": m.outside, "size": m.count}


def device_rules(privileged: bool) -> list[dict]:
    """linux.resources.devices: step 9's allowlist (security/devices.py) in the spec's words."""
    from labctl.security.devices import rules_for
    out = []
    for rule in rules_for(privileged):
        entry = {"allow": rule.allow, "type": rule.type, "access": rule.access}
        entry.update({k: v for k, v in (("major", rule.major), ("minor", rule.minor)) if v is not None})
        out.append(entry)
    return out


def labctl_mounts(config: Config) -> list[dict]:
    """The container's mounts, in order: BASE_MOUNTS, /etc/hosts & co, volumes and tmpfs, tini."""
    mounts = [dict(m, options=list(m["options"])) for m in BASE_MOUNTS]
    if config.security.privileged:
        mounts[-1]["options"].remove("ro")
    for inside, host_file in config.files.items():
        mounts.append({"destination": inside, "type": "bind", "source": host_file, "options": ["rbind"]})
    for m in config.mounts:
        if m.kind == "tmpfs":
            mounts.append({"destination": m.target, "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "mode=1777"]})
        else:
            mounts.append({"destination": m.target, "type": "bind", "source": m.source,
                           "options": ["rbind"] + (["rro"] if m.readonly else [])})
    if config.init_binary:
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": config.init_binary,
                       "options": ["rbind", "rro"]})
    return mounts


def seccomp_to_oci(profile: dict, capabilities: list[str]) -> dict:
    """A Docker-format profile -> linux.seccomp: the architectures of this machine, and the rules whose
    includes/excludes hold for these capabilities here (Docker resolves them the same way before it
    writes the spec: moby's profiles/seccomp.setupSeccomp)."""
    if "architectures" in profile and "archMap" not in profile and \
            not any("includes" in r or "excludes" in r for r in profile.get("syscalls", [])):
        return profile   # already in the OCI's format
    from labctl.security.seccomp import select
    arches, rules = select(profile, capabilities)
    out = {"defaultAction": profile["defaultAction"], "architectures": arches, "syscalls": []}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    for rule in rules:
        names = rule.get("names") or [rule["name"]]
        kept = {"names": list(names), "action": rule["action"]}
        for key in ("errnoRet", "args"):
            if rule.get(key) is not None:
                kept[key] = rule[key]
        out["syscalls"].append(kept)
    return out


# ---------------------------------------------------------------------------------------------
# config.json -> Config


def from_oci(bundle: str | os.PathLike, doc: dict | None = None) -> Config:
    """A bundle -> the Config PID 1 carries out, with the spec's own fields in Config.oci. The document
    is checked first (ocicheck.check): LabError naming the first bad field."""
    from labctl.runtime import ocicheck
    doc = read_config(bundle) if doc is None else doc
    ocicheck.check(doc)
    bundle = Path(bundle).resolve()
    process = doc.get("process") or {}
    linux = doc.get("linux") or {}
    root = Path(doc["root"]["path"])
    root = root if root.is_absolute() else bundle / root
    kinds = [NS_LABCTL[n["type"]] for n in linux.get("namespaces") or []]
    paths = {NS_LABCTL[n["type"]]: n["path"] for n in linux.get("namespaces") or [] if n.get("path")}
    user = process.get("user") or {}
    extras = OciExtras(
        mounts=list(doc.get("mounts") or []), namespace_paths=paths, uid=user.get("uid", 0),
        gid=user.get("gid", 0), additional_gids=list(user.get("additionalGids") or []), umask=user.get("umask"),
        rlimits=[(rlimit_number(r["type"]), r["soft"], r["hard"]) for r in process.get("rlimits") or []],
        oom_score_adj=process.get("oomScoreAdj"), sysctl=dict(linux.get("sysctl") or {}),
        devices=list(linux.get("devices") or []), rootfs_propagation=linux.get("rootfsPropagation", ""),
        capabilities={k: list(v or []) for k, v in (process.get("capabilities") or {}).items()},
        hooks={k: v for k, v in (doc.get("hooks") or {}).items() if k in ("createContainer", "startContainer")})
    if "mnt" not in kinds:
        raise LabError("labctl's runtime needs a mount namespace: linux.namespaces has no \"mount\"",
                       'add {"type": "mount"} (runc needs one too for any mounts)')
    return Config(
        root=str(root), argv=list(process.get("args") or []), env=list(process.get("env") or []),
        workdir=process.get("cwd") or "/", user=f"{extras.uid}:{extras.gid}", hostname=doc.get("hostname", ""),
        namespaces=tuple(k for k in kinds if k not in ("cgroup", "user") and k not in paths),
        new_cgroup_namespace="cgroup" in kinds and "cgroup" not in paths, loopback_up="net" in kinds and "net" not in paths,
        mounts=[], security=_security(doc, process, linux), oci=extras)


def _security(doc: dict, process: dict, linux: dict) -> SecurityProfile:
    caps = (process.get("capabilities") or {})
    sets = {k: list(caps.get(k) or []) for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    return SecurityProfile(
        privileged=False, capabilities=sets["bounding"] or sets["permitted"], seccomp=linux.get("seccomp"),
        seccomp_source="config.json" if linux.get("seccomp") else "unconfined",
        no_new_privileges=bool(process.get("noNewPrivileges")), read_only=bool(doc["root"].get("readonly")),
        masked_paths=list(linux.get("maskedPaths") or []), readonly_paths=list(linux.get("readonlyPaths") or []),
        userns="remap" if linux.get("uidMappings") else "host",
        uid_map=[IdMap(m["containerID"], m["hostID"], m["size"]) for m in linux.get("uidMappings") or []],
        gid_map=[IdMap(m["containerID"], m["hostID"], m["size"]) for m in linux.get("gidMappings") or []])


def rlimit_number(name: str) -> int:
    from labctl.runtime.ocicheck import RLIMITS
    return RLIMITS.index(name)

