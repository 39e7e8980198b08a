"""The address allocator (IPAM, as libnetwork calls its address-management driver).

Each network keeps its allocations in <state>/network/<bridge>/addresses.json:

    {"10.203.0.2": {"owner": "web-4242-a1b2c3", "name": "web", "pid": 4242, "start_time": 81234567,
                    "host_link": "labv1a2b3c4d"}}

and changes that file only under the network's lock (lock(bridge)), which attach() also holds while it
creates the bridge, so two labctl processes never hand out one address twice nor remove a bridge the
other is about to use.

An entry whose process has ended is stale: a SIGKILLed labctl, or a container whose supervisor was
killed, could not release it. Its address is handed out again only after reclaim_stale() has removed
what still names it: the DNAT rules carrying the owner's comment (left behind, they would send a
published port's traffic to the address's next holder), the host end of its veth, its /etc files and
their journal records. Every allocate() reclaims first.
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


def allocate(net: Network, owner: str, name: str, pid: int, host_link: str | None = None) -> tuple[str, state.Record]:
    """The lowest free address of the network for the process `pid` (whose veth's host end will be
    `host_link`), and the journal record that gives it back. Call with lock(net.bridge) held."""
    table = reclaim_stale(net)
    taken = set(table) | {net.gateway}
    free = [str(ip) for ip in net.ip_network.hosts() if str(ip) not in taken]
    if not free:
        raise LabError(f"the network {net.bridge} ({net.subnet}) has no free address left",
                       "remove some containers, or use a larger subnet (LABCTL_SUBNET)")
    address = free[0]
    rec = state.record("address", release_address, bridge=net.bridge, address=address, owner=owner)
    table[address] = {"owner": owner, "name": name, "pid": pid, "start_time": state.process_start_time(pid),
                      "host_link": host_link}
    state.atomic_write_json(allocations_path(net.bridge), table)
    return address, rec


def reclaim_stale(net: Network) -> dict[str, dict]:
    """Remove what the stale entries' owners left (DNAT rules, host link, /etc files, their journal
    records), then drop the entries. Returns the live entries. Call with lock(net.bridge) held."""
    from labctl.network.nat import delete_nft_rules, rule_comment
    from labctl.network.netlink import delete_link
    entries = read_allocations(net.bridge)
    live = {address: entry for address, entry in entries.items() if is_live(entry)}
    for address, entry in entries.items():
        if address in live:
            continue
        owner, host_link = entry.get("owner", ""), entry.get("host_link")
        delete_nft_rules(net.table, rule_comment(owner))   # first: the address is still ours
        state.forget_records("nftables-rules", table=net.table, comment=rule_comment(owner))
        if host_link:   # the pair usually died with the namespace; not if its owner died mid-plug
            delete_link(host_link)
            state.forget_records("veth", ifname=host_link)
        etc_dir = state.subdir("network", "etc") / owner
        state.remove_path(str(etc_dir))
        state.forget_records("path", path=str(etc_dir))
        state.forget_records("address", bridge=net.bridge, address=address, owner=owner)
    if len(live) != len(entries):
        state.atomic_write_json(allocations_path(net.bridge), live)
    _forget_orphan_records(net.bridge, live)
    return live


def _forget_orphan_records(bridge: str, table: dict[str, dict]) -> None:
    """Drop the address records the table does not hold. allocate() journals an address before it
    writes the table, so a labctl killed between the two leaves a record for an address nobody holds;
    release_address() is the other way round (table first, record after). Under the lock no live
    allocate() is between its two writes, so such a record names nothing."""
    for rec in state.records("address"):
        if rec.data.get("bridge") == bridge:
            held = table.get(rec.data.get("address"), {})
            if held.get("owner") != rec.data.get("owner"):
                rec.forget()


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
