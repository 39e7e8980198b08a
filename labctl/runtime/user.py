"""The user a container's process runs as: looked up inside the container, in the image's own
/etc/passwd and /etc/group (after pivot_root), then switched to, as runc's libcontainer/user does.

    "name" | "uid" | "name:group" | "uid:gid"  ->  uid, gid, supplementary groups, home
    then setgroups(2), setgid(2), setuid(2), in that order: after setuid nothing else can change.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from labctl.errors import LabError


@dataclass
class ResolvedUser:
    uid: int
    gid: int
    groups: list[int]
    home: str


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def resolve_user(user: str, passwd: str = "/etc/passwd", group: str = "/etc/group") -> ResolvedUser:
    """"name" | "uid" | "name:group" | "uid:gid" -> uid, gid, supplementary groups, home (as runc does)."""
    who, _, grp = (user or "root").partition(":")
    users = _read_db(passwd)
    groups = _read_db(group)
    entry = next((u for u in users if len(u) >= 7 and (u[0] == who or u[2] == who)), None)
    if entry is None:
        if not who.isdigit():
            raise LabError(f"unable to find user {who}: no matching entries in the image's passwd file",
                           "use a user the image defines, or a numeric uid like -u 1000")
        uid, gid, home, name = int(who), 0, "/", None
    else:
        uid, gid, home, name = int(entry[2]), int(entry[3]), entry[5] or "/", entry[0]
    if grp:
        g = next((g for g in groups if len(g) >= 3 and (g[0] == grp or g[2] == grp)), None)
        if g is None and not grp.isdigit():
            raise LabError(f"unable to find group {grp}: no matching entries in the image's group file",
                           "use a group the image defines, or a numeric gid")
        gid = int(g[2]) if g else int(grp)
    supplementary = sorted({int(g[2]) for g in groups
                            if len(g) >= 4 and name and name in g[3].split(",")} | {gid})
    return ResolvedUser(uid, gid, supplementary, home)


def switch_user(who: ResolvedUser) -> None:
    """setgroups(2), setgid(2), setuid(2) (in that order: after setuid we could no longer change groups)."""
    os.setgroups(who.groups)
    os.setgid(who.gid)
    os.setuid(who.uid)
