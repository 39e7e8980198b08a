"""User-defined networks, by name: what `docker network create NAME` makes and what `docker run --network
NAME` and `labctl run --network NAME` join (libnetwork keeps the same in its store).

A named network is a bridge network like the default lab0 (a Network: its own bridge and subnet), with a
record in <state>/networks/NAME.json that the daemon writes (labctl/daemon/resources.py):

    {"Name": "web", "Id": "3f1c...", "Driver": "bridge", "bridge": "lab3f1c09ab", "subnet": "10.205.1.0/24"}

A container joins it exactly as it joins lab0 (attachment.attach with this Network: the same veth pair
and bridge, an address from this network's allocator); only the bridge and the subnet differ. Each
network's nftables table drops what is routed from its bridge to another lab bridge (nat.table_script),
so containers of two networks cannot reach each other, as Docker's DOCKER-ISOLATION chains do.

`labctl run` reads this only for a --network that is not one of MODES (labctl.network.resolve):
standard library and state only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def networks_dir() -> Path:
    from labctl import state
    return state.subdir("networks")


def records() -> dict[str, dict]:
    """{name: record} of every user-defined network."""
    out = {}
    for path in sorted(networks_dir().glob("*.json")):
        try:
            record = json.loads(path.read_text())
            out[record["Name"]] = record
        except (OSError, ValueError, KeyError):
            continue
    return out


def find_record(name: str) -> dict | None:
    """The record of the user-defined network NAME, or None when there is none of that name.
    (labctl.network.resolve() turns it into a Network.)"""
    if "/" in name or name.startswith("."):
        return None
    from labctl import state
    directory = Path(os.environ.get("LABCTL_STATE_DIR", state.DEFAULT_STATE_DIR)) / "networks"   # (not created)
    try:
        record = json.loads((directory / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "bridge" in record and "subnet" in record else None
