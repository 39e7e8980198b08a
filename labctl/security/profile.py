"""A container's security profile as data: `labctl run`'s flags in, one SecurityProfile out.

Docker's defaults, which every container gets unless a flag says otherwise:
  capabilities   the 14 of capabilities.DEFAULT (CAP_CHOWN ... CAP_AUDIT_WRITE); --cap-add/--cap-drop
                 change the set (ALL too); --privileged keeps every capability the kernel has
  seccomp        Docker's default allowlist; --security-opt seccomp=PROFILE.json loads another in Docker's
                 JSON format, seccomp=unconfined none (and --privileged none)
  no_new_privs   ON, as in `runc spec`'s default (Docker leaves it off): a setuid-root file planted through
                 a volume gives no one root; --security-opt no-new-privileges=false turns it off for images
                 that need setuid (su, old ping); --privileged turns it off unless asked for
  read_only      off; --read-only mounts the container's root read-only
  masked/ro      runc's lists of /proc and /sys paths (paths.py); none with --privileged
  devices        Docker's allowlist (devices.py); every device with --privileged
  userns         "host" (root inside is root outside), or "remap" (root inside is an unprivileged uid
                 of the host: userns.py)

The profile is resolved when the container is created (a bad capability name or profile is refused
before anything exists) and stored whole in the container's record, so what `inspect` shows is what
PID 1 applied.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from labctl.security.userns import IdMap


@dataclass
class SecurityProfile:
    privileged: bool = False
    capabilities: list[str] = field(default_factory=list)   # "CAP_CHOWN", ...: all four sets, ambient empty
    seccomp: dict | None = None       # a Docker-format profile (the default one unless changed); None: unconfined
    seccomp_source: str = "default"   # where it came from, for inspect: default | unconfined | a file's path
    no_new_privileges: bool = False
    read_only: bool = False
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    userns: str = "host"              # host | remap
    uid_map: list[IdMap] = field(default_factory=list)
    gid_map: list[IdMap] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> "SecurityProfile":
        """A record's profile; a record written before step 9 has none and ran with none."""
        if data is None:
            from labctl.security.capabilities import available
            return cls(privileged=True, capabilities=available(), seccomp_source="unconfined")
        data = dict(data)
        data["uid_map"] = [IdMap(**m) for m in data.get("uid_map", [])]
        data["gid_map"] = [IdMap(**m) for m in data.get("gid_map", [])]
        return cls(**data)


def from_flags(*, cap_add: list[str] = (), cap_drop: list[str] = (), privileged: bool = False,
               security_opt: list[str] = (), read_only: bool = False, userns: str = "host") -> SecurityProfile:
    """The flags of `labctl run` -> the profile; LabError (one line with the fix) for a bad flag."""
    from labctl.security import capabilities, paths, seccomp, userns as usernamespaces
    no_new_privs, seccomp_option = parse_security_opts(security_opt)
    if no_new_privs is None:
        no_new_privs = not privileged
    profile = SecurityProfile(
        privileged=privileged, capabilities=capabilities.resolve(cap_add, cap_drop, privileged),
        no_new_privileges=no_new_privs, read_only=read_only, userns=userns)
    profile.seccomp, profile.seccomp_source = seccomp.resolve(seccomp_option, privileged)
    if not privileged:
        profile.masked_paths, profile.readonly_paths = list(paths.MASKED), list(paths.READONLY)
    profile.uid_map, profile.gid_map = usernamespaces.resolve(userns)
    return profile


SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}


def in_force(pid: int) -> dict:
    """What the kernel says of a process (/proc/PID/status): its five capability sets as names,
    no_new_privs, and its seccomp mode (with the number of filters attached)."""
    from labctl.security.capabilities import from_mask
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    view = {key: from_mask(fields[key]) for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb")}
    view["NoNewPrivs"] = fields.get("NoNewPrivs") == "1"
    view["Seccomp"] = SECCOMP_MODES.get(fields.get("Seccomp", "0"), fields.get("Seccomp"))
    view["Seccomp_filters"] = int(fields.get("Seccomp_filters", "0"))
    return view


def summary(profile: dict | None) -> dict | None:
    """A seccomp profile in a few fields, for inspect (the whole profile stays in the record)."""
    if profile is None:
        return None
    rules = profile.get("syscalls", [])
    return {"defaultAction": profile.get("defaultAction"), "defaultErrnoRet": profile.get("defaultErrnoRet"),
            "rules": len(rules), "syscalls named": len({n for r in rules for n in r.get("names") or [r.get("name")]})}


def parse_security_opts(options: list[str]) -> tuple[bool | None, str | None]:
    """--security-opt no-new-privileges[=true|false] | seccomp=PROFILE.json|unconfined -> (nnp, seccomp);
    nnp None when no option says."""
    from labctl.errors import LabError
    no_new_privs, seccomp_option = None, None
    for option in options:
        if option.startswith("no-new-privileges:"):   # Docker takes no-new-privileges:true as well
            option = option.replace(":", "=", 1)
        key, sep, value = option.partition("=")
        if key == "no-new-privileges" and value in ("", "true", "false"):
            no_new_privs = value != "false"
        elif key == "seccomp" and sep and value:
            seccomp_option = value
        else:
            raise LabError(f"bad --security-opt {option!r}",
                           "give no-new-privileges, seccomp=PROFILE.json or seccomp=unconfined")
    return no_new_privs, seccomp_option
