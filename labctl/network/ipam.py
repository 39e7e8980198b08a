"""The address allocator (IPAM, as libnetwork calls its address-management driver).

Each network keeps its allocations in <state>/network/<bridge>/addresses.json:

    {"10.203.0.2": {"owner": "web-4242-a1b2c3", "name": "web", "pid": 4242, "start_time": 81234567}}

and changes that file only under the network's lock (lock(bridge)), which attach() also holds while it
creates the bridge, so two labctl processes never hand out one address twice nor remove a bridge the
other is about to use. An entry whose process has ended is free again: a SIGKILLed labctl cannot
release its addresses (its journal can, but only when someone runs cleanup).
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from labctl import state
from labctl.errors import LabError
from labctl.network import Network


def lock(bridge: str) -> contextlib.AbstractContextManager[None]:
    """The network's lock: its allocation file, its bridge and its table change only under it."""
    return state.locked(f"network-{bridge}")


def allocations_path(bridge: str) -> Path:
    return state.subdir("network", bridge) / "addresses.json"


def read_allocations(bridge: str) -> dict[str, dict]:
    try:
        return json.loads(allocations_path(bridge).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def is_live(entry: dict) -> bool:
    """An allocation is stale when the process it was made for has ended (the same PID and start time
    means the same process, not a new one that reused the PID)."""
    pid = entry.get("pid")
    return pid is None or state.process_start_time(pid) == entry.get("start_time")


def allocations(net: Network) -> dict[str, dict]:
    """{address: {"owner", "name", "pid", ...}} of the network's containers."""
    return read_allocations(net.bridge)


def allocate(net: Network, owner: str, name: str, pid: int) -> tuple[str, state.Record]:
    """The lowest free address of the network for the process `pid`, and the journal record that gives
    it back. Call with lock(net.bridge) held."""
    table = {address: entry for address, entry in read_allocations(net.bridge).items() if is_live(entry)}
    taken = set(table) | {net.gateway}
    free = [str(ip) for ip in net.ip_network.hosts() if str(ip) not in taken]
    if not free:
        raise LabError(f"the network {net.bridge} ({net.subnet}) has no free address left",
                       "remove some containers, or use a larger subnet (LABCTL_SUBNET)")
    address = free[0]
    rec = state.record("address", release_address, bridge=net.bridge, address=address, owner=owner)
    table[address] = {"owner": owner, "name": name, "pid": pid, "start_time": state.process_start_time(pid)}
    state.atomic_write_json(allocations_path(net.bridge), table)
    return address, rec


def release_address(bridge: str, address: str, owner: str) -> None:
    """Give an address back to its network's allocator, if `owner` still holds it."""
    with lock(bridge):
        table = read_allocations(bridge)
        if table.get(address, {}).get("owner") == owner:
            del table[address]
            state.atomic_write_json(allocations_path(bridge), table)


def in_use(bridge: str) -> bool:
    """Whether a live process still holds an address of this network. Call with lock(bridge) held."""
    return any(is_live(entry) for entry in read_allocations(bridge).values())


def forget_network(bridge: str) -> None:
    """Drop the network's allocation file (`labctl network rm`). Call with lock(bridge) held."""
    with contextlib.suppress(FileNotFoundError):
        allocations_path(bridge).unlink()


def bridges_with_allocations() -> Iterator[str]:
    """The bridges of every network that has an allocation file in the state directory."""
    for path in sorted(state.subdir("network").glob("*/addresses.json")):
        yield path.parent.name
