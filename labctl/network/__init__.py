"""Step 6: container networking, the part of Docker that libnetwork and its "bridge" driver play.

A bridge, a veth pair per container, NAT and published ports, built from netlink calls (pyroute2's
IPRoute) and one nftables table:

    host network namespace                                        container's network namespace
    ┌───────────────────────────────────────────────────┐        ┌────────────────────────────────┐
    │ lab0 (bridge) 10.203.0.1/24 ── labv1a2b3c (veth) ─┼────────┼─ eth0 (veth) 10.203.0.2/24    │
    │   nft table `labctl`: masquerade, DNAT :8080→:80  │        │ lo 127.0.0.1, default via .0.1 │
    └───────────────────────────────────────────────────┘        └────────────────────────────────┘

For one container in "bridge" mode, attach() does, in order:
  1. create the bridge, give it the gateway address, switch on forwarding for packets arriving on it,
     and load the nftables table, if this is the network's first container;
  2. allocate an address from the network's allocator (a JSON file in the state directory, changed
     under a file lock, so concurrent labctl processes never hand out one address twice);
  3. create a veth pair (RTM_NEWLINK kind veth), enslave the host end to the bridge (IFLA_MASTER),
     move the peer into the container's network namespace (IFLA_NET_NS_PID);
  4. inside that namespace: rename the peer to eth0, bring it and lo up, add the address, add the
     default route via the bridge's address;
  5. add DNAT rules for published ports (`-p 8080:80`), and write /etc/hosts, /etc/resolv.conf and
     /etc/hostname for the container to bind-mount.
Every object is recorded in the journal before it is created, so `labctl cleanup` removes it even
after a SIGKILL. The bridge and the nftables table go away with the network's last container.

Where each part lives (one module per concern, each readable alone):
  __init__.py    the Network (a bridge and its subnet), default_network(), the network modes
  attachment.py  attach() and Attachment: steps 1-5 above for one container, and detach()  (docker network connect)
  ipam.py        the address allocator (libnetwork's IPAM driver)
  bridge.py      the bridge and its table: created with the first container, removed with the last
  veth.py        plug(): a veth pair from a network namespace to the bridge, eth0, address, route
  nat.py         the nftables table: masquerade, the lab's egress guard, DNAT for published ports
  ports.py       PortMapping: `-p [IP:]HOST:CONTAINER[/tcp|udp]`, the one parser of published ports
  portcheck.py   refusing a port a host service or another container has ("port is already allocated")
  etcfiles.py    /etc/hosts, /etc/resolv.conf and /etc/hostname for a container
  netns.py       network namespaces: by PID or by name, joined by a thread, created and removed
  netlink.py     the RTNL socket (pyroute2's IPRoute), in any namespace; deleting a link
  sysctl.py      the per-link switches in /proc/sys/net (forwarding, route_localnet, IPv6 off)
  inspect.py     reading it all back: links, routes, counters, the lab's networks   (docker network inspect/ls)
  named.py       user-defined networks by name (`docker network create NAME`, `run --network NAME`)
  upstream.py    a named namespace standing in for the internet, for the demo and the check
The measurements (TCP over the bridge vs loopback) are in labctl/demos/network.py.

The API step 7 (`labctl run`) uses:

    proc = namespaces.spawn(argv, namespaces=("uts", "pid", "ipc", "mnt", "net"), start=False, ...)
    att = network.attach(proc.pid, "web", mode="bridge", publish=["8080:80"])
    att.address          # "10.203.0.2" (None for modes none and host)
    att.etc_files        # {"/etc/hosts": Path, "/etc/resolv.conf": Path, "/etc/hostname": Path}
    proc.start()         # the container runs with its network in place
    ...
    att.detach()         # veth, DNAT rules, the address (and the bridge, if it was the last one)
    Attachment.from_dict(att.to_dict()).detach()   # the same, from another process (`labctl rm`)

Modes (MODES): "none" (the process's own network namespace with only lo, up), "host" (the process
shares the host's network namespace: nothing to create, only the /etc files), "bridge" (the above).

Which network: `Network(bridge="lab0", subnet="10.203.0.0/24")`, or $LABCTL_BRIDGE and $LABCTL_SUBNET
for default_network(). The nftables table is `labctl` for lab0 and `labctl_<bridge>` for others, so
two networks never touch each other's rules.

Traffic stays in the lab: a forward rule drops whatever a container sends towards a link that is not
the lab's (names lab*), unless the network is made with allow_egress=True. So containers reach each
other, the host, and the lab's own "upstream" namespace (create_upstream), and nothing else.

`labctl run` imports this package in every mode (for MODES, PortMapping and the /etc files), so this
file defines only what those need and loads the rest on first use: `network.attach` imports
attachment.py then (see _EXPORTS below). pyroute2 (~0.3 s to import) is imported only inside the
functions that talk netlink.
"""
from __future__ import annotations

import importlib
import ipaddress
import os
from collections.abc import Iterable   # not typing: `labctl run` imports this package, typing costs ~2 ms
from dataclasses import dataclass

from labctl.errors import LabError

DEFAULT_BRIDGE = "lab0"
DEFAULT_SUBNET = "10.203.0.0/24"
MODES = ("none", "host", "bridge")   # the one list: the CLI's --network, the container spec, attach()
IFNAMSIZ = 15  # the longest interface name the kernel accepts (16 bytes with the NUL)


def check_mode(mode: str, publish: Iterable[object] = ()) -> None:
    """Refuse a mode that is neither one of MODES nor a user-defined network's name (named.py), and
    published ports in modes none and host."""
    if mode not in MODES and resolve(mode)[0] == "overlay" and publish:   # (resolve: LabError, no such network)
        raise LabError(f"published ports need a bridge network: {mode} is an overlay network",
                       "drop -p (containers on the overlay reach each other's ports directly)")
    if publish and mode in ("none", "host"):
        raise LabError(f"published ports need network mode bridge, not {mode}", "drop -p, or use --network bridge")


@dataclass(frozen=True)
class Network:
    """A bridge network: its bridge's name, its IPv4 subnet (the bridge takes the first address).
    keep: the bridge stays when its last container goes (a user-defined network, named.py, is removed
    by `docker network rm`, not by its containers)."""
    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET
    allow_egress: bool = False
    keep: bool = False

    def __post_init__(self) -> None:
        if not self.bridge.startswith("lab") or len(self.bridge) > IFNAMSIZ:
            raise LabError(f"bad bridge name {self.bridge!r}",
                           f"the lab's links are named lab* and at most {IFNAMSIZ} characters, e.g. lab0")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as exc:
            raise LabError(f"bad subnet {self.subnet!r}: {exc}", "give an IPv4 network, e.g. 10.203.0.0/24")
        if not net.is_private or net.prefixlen > 29:
            raise LabError(f"subnet {self.subnet} is not a private network of at least 8 addresses",
                           "use a private range such as 10.203.0.0/24")

    @property
    def table(self) -> str:
        return "labctl" if self.bridge == DEFAULT_BRIDGE else f"labctl_{self.bridge}"

    @property
    def ip_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(next(self.ip_network.hosts()))

    @property
    def prefixlen(self) -> int:
        return self.ip_network.prefixlen


def resolve(mode: str) -> tuple[str, Network | None]:
    """--network VALUE -> (mode for attach(), Network): one of MODES with the default network (None),
    or ("bridge", its Network) for a user-defined network's name (`docker network create`, named.py),
    or ("overlay", None) on a cluster host for an overlay network's (`docker network create -d overlay`)."""
    if mode in MODES:
        return mode, None
    from labctl.network.named import find_record
    record = find_record(mode)
    if record is None:
        from labctl.cluster.endpoint import is_overlay
        if is_overlay(mode):   # step 13: the cluster's overlay network (labctl/cluster/endpoint.py)
            return "overlay", None
        raise LabError(f"unknown network mode {mode!r}: no mode nor network of that name",
                       f"use one of {', '.join(MODES)}, or create the network first (`docker network create {mode}`)")
    return "bridge", Network(record["bridge"], record["subnet"], keep=True)


def default_network() -> Network:
    """lab0 on 10.203.0.0/24, or what $LABCTL_BRIDGE and $LABCTL_SUBNET say."""
    return Network(os.environ.get("LABCTL_BRIDGE", DEFAULT_BRIDGE), os.environ.get("LABCTL_SUBNET", DEFAULT_SUBNET))


# What the other layers, the steps, the notebooks and the tests use, by the module that defines it.
# `network.attach` imports labctl.network.attachment on first use (PEP 562's module __getattr__). Journal
# records written before this package was split name their undo functions `labctl.network:NAME`, so
# those (delete_link, remove_bridge, remove_netns, release_address, delete_nft_table,
# delete_nft_rules) must stay reachable here too, for `labctl cleanup`.
_EXPORTS = {
    "attachment": ("Attachment", "attach"),
    "ipam": ("allocations", "release_address", "reclaim_stale"),
    "bridge": ("ensure_network", "remove_network", "remove_bridge"),
    "veth": ("plug", "loopback_up"),
    "nat": ("nft", "nft_table_json", "nft_table_text", "delete_nft_table", "delete_nft_rules", "publish_ports",
            "published_ports"),
    "ports": ("PortMapping",),
    "portcheck": ("refuse_taken_ports",),
    "etcfiles": ("etc_contents",),
    "netns": ("netns_path", "in_netns", "socket_in_netns", "create_netns", "remove_netns"),
    "netlink": ("iproute", "delete_link"),
    "sysctl": ("write_sysctl", "ip_forwarding"),
    "inspect": ("LinkInfo", "links", "routes", "link_stats", "known_networks"),
    "upstream": ("Upstream", "create_upstream", "upstream_for", "DEFAULT_UPSTREAM_SUBNET"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value   # the next lookup finds it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
