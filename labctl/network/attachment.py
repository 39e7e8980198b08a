"""attach(): give a process's network namespace a network of one of the modes, and detach() it again
(`docker network connect`/`disconnect`, done by Docker's daemon when a container starts and ends).

The steps for bridge mode are in this package's docstring (labctl/network/__init__.py); here they
are put together, each recorded in the journal before it is made:

    attach(pid, name, "bridge", publish=["8080:80"])
      bridge.ensure_...  the bridge and its table       journal: "bridge", "nftables"  (the first time)
      ipam.allocate      an address (after reclaiming   journal: "address"        (release_address)
                         those of dead containers)
      portcheck          -p: refuse a port a host service or another container has
      veth.plug          veth pair, eth0, route         journal: "veth"           (delete_link)
      nat.publish_ports  DNAT rules for -p              journal: "nftables-rules" (delete_nft_rules)
      etcfiles           /etc/hosts, resolv.conf, hostname, in the state directory
An Attachment keeps its journal records, so detach() undoes exactly these, newest first, and
to_dict()/from_dict() let another process (`labctl rm`, the container's supervisor) do it later.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from labctl import state
from labctl.kernel.syscalls import namespace_inode
from labctl.network import Network, check_mode, default_network, ipam
from labctl.network.bridge import ensure_bridge, remove_bridge_if_unused
from labctl.network.etcfiles import etc_contents
from labctl.network.nat import delete_nft_rules, publish_ports, rule_comment
from labctl.network.netns import netns_path
from labctl.network.portcheck import refuse_taken_ports
from labctl.network.ports import PortMapping
from labctl.network.veth import loopback_up, plug
from labctl.errors import LabError


@dataclass
class Attachment:
    """A container's network: what attach() made, and detach() to remove it."""
    pid: int
    name: str
    mode: str
    network: Network | None
    address: str | None = None
    host_link: str | None = None
    published: list[PortMapping] = field(default_factory=list)
    etc_files: dict[str, Path] = field(default_factory=dict)
    _records: list[state.Record] = field(default_factory=list, repr=False)
    _owner: str = ""

    @property
    def gateway(self) -> str | None:
        return self.network.gateway if self.network and self.mode == "bridge" else None

    @property
    def netns(self) -> str:
        return netns_path(self.pid)

    def etc_text(self) -> dict[str, str]:
        return {target: Path(source).read_text() for target, source in self.etc_files.items()}

    def detach(self) -> None:
        """Remove the DNAT rules, the veth pair, the address and the /etc files; the bridge and the
        nftables table too when this was the network's last container (unless the network is kept:
        a user-defined one). Safe to call twice."""
        for rec in reversed(self._records):
            state.undo_record(rec)
        self._records.clear()
        if self.mode == "bridge" and self.network and not self.network.keep:
            remove_bridge_if_unused(self.network)

    def to_dict(self) -> dict:
        """Everything needed to detach later from another process (`labctl rm`, a daemon): JSON-safe."""
        return {"pid": self.pid, "name": self.name, "mode": self.mode, "address": self.address,
                "host_link": self.host_link, "owner": self._owner,
                "network": {"bridge": self.network.bridge, "subnet": self.network.subnet,
                            "allow_egress": self.network.allow_egress, "keep": self.network.keep}
                if self.network else None,
                "published": [str(p) for p in self.published],
                "etc_files": {k: str(v) for k, v in self.etc_files.items()},
                "records": [str(r.path) for r in self._records]}

    @classmethod
    def from_dict(cls, data: dict) -> Attachment:
        """The inverse of to_dict(): its journal records are found again by their file names."""
        by_path = {str(r.path): r for r in state.records()}
        return cls(data["pid"], data["name"], data["mode"],
                   Network(**data["network"]) if data.get("network") else None,
                   data.get("address"), data.get("host_link"),
                   [PortMapping.parse(p) for p in data.get("published", [])],
                   {k: Path(v) for k, v in data.get("etc_files", {}).items()},
                   [by_path[p] for p in data.get("records", []) if p in by_path], data.get("owner", ""))

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def attach(pid: int, name: str, mode: str = "bridge", publish: Iterable[str | PortMapping] = (),
           network: Network | None = None, hostname: str | None = None, interface: str = "eth0") -> Attachment:
    """Give the process `pid` (its network namespace) a network of the given mode; see the module doc.
    `interface` other than eth0: a further network of a namespace that has one (`docker network
    connect`), reached on its subnet only: the default route stays the first network's."""
    ports = [PortMapping.parse(p) for p in publish]
    check_mode(mode, ports)
    own_netns = namespace_inode(pid, "net") != namespace_inode("self", "net")
    if mode == "host" and own_netns:
        raise LabError(f"process {pid} has a network namespace of its own, so it cannot use the host's",
                       "start it without 'net' in its namespaces for --network host")
    if mode != "host" and not own_netns:
        raise LabError(f"process {pid} shares the host's network namespace",
                       "start it with 'net' among its namespaces (namespaces.spawn(..., start=False))")
    net = (network or default_network()) if mode == "bridge" else None
    owner = f"{name}-{pid}-{secrets.token_hex(3)}"
    att = Attachment(pid, name, mode, net, _owner=owner)
    try:
        if mode == "none":
            loopback_up(pid)
        elif mode == "bridge":
            _attach_bridge(att, net, ports, interface)
        _write_etc(att, hostname)
    except BaseException as exc:
        att.detach()
        from pyroute2.netlink.exceptions import NetlinkError
        if isinstance(exc, NetlinkError):
            raise LabError(f"the kernel refused to set up the network of {name}: {exc}",
                           "is the process already attached, or a link name taken? `ip link`, `labctl cleanup`") from exc
        raise
    return att


def _attach_bridge(att: Attachment, net: Network, ports: list[PortMapping], interface: str = "eth0") -> None:
    # One lock for the bridge and the address: a container detaching elsewhere cannot remove the
    # bridge between the two, because it sees this container's address taken.
    # Ports are checked under it too: two `run -p 8080:80` at once cannot both pass (portcheck.py).
    att.host_link = f"labv{secrets.token_hex(4)}"  # unique host-wide, like Docker's veth1a2b3c4
    with ipam.lock(net.bridge):
        ensure_bridge(net)
        att.address, rec = ipam.allocate(net, att._owner, att.name, att.pid, att.host_link)
        att._records.append(rec)
        refuse_taken_ports(ports)
    att._records.append(plug(att.pid, net.bridge, att.host_link, att.address, net.prefixlen,
                             net.gateway if interface == "eth0" else None, what=f"container {att.name}",
                             inside_ifname=interface))
    if ports:
        comment = rule_comment(att._owner)
        att._records.append(state.record("nftables-rules", delete_nft_rules, table=net.table, comment=comment))
        publish_ports(net, att.address, ports, comment)
        att.published = ports


def _write_etc(att: Attachment, hostname: str | None) -> None:
    directory = state.subdir("network", "etc") / att._owner
    att._records.append(state.record_path(str(directory), f"/etc files of {att.name}"))
    for target, text in etc_contents(att.name, att.address, att.mode, hostname).items():
        source = directory / Path(target).name
        state.atomic_write(source, text)
        att.etc_files[target] = source
