"""The "upstream": a named network namespace standing in for the internet, for step 6's demo, its
check and the tests (network tests never send a packet beyond the lab's own namespaces).

    lab-up-lab0 (/run/netns)  eth0 10.204.0.2/30 ── labu1a2b3c4 10.204.0.1/30 (host)

It has no route to the containers' subnet: it can only answer them because NAT (nat.py's masquerade)
makes their packets come from the host's address on this link.
"""
from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field

from labctl import state
from labctl.network import Network
from labctl.network.bridge import check_subnet_is_free
from labctl.network.netlink import delete_link, iproute
from labctl.network.netns import create_netns, in_netns, netns_path
from labctl.network.sysctl import enable_forwarding, quiet_ipv6

DEFAULT_UPSTREAM_SUBNET = "10.204.0.0/30"


@dataclass
class Upstream:
    """A named network namespace (`lab-*` in /run/netns) linked to the host by its own veth pair,
    on its own subnet."""
    name: str
    host_link: str
    host_address: str
    address: str
    prefixlen: int
    _records: list[state.Record] = field(default_factory=list, repr=False)

    @property
    def netns(self) -> str:
        return netns_path(self.name)

    def remove(self) -> None:
        for rec in reversed(self._records):
            state.undo_record(rec)
        self._records.clear()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def upstream_for(net: Network) -> tuple[str, str]:
    """A name and a /30 for a network's demo upstream: 10.203.X.0/24 gets lab-up-<bridge> on 10.204.X.0/30,
    so two networks' demos never share one."""
    base = ipaddress.IPv4Address(int(net.ip_network.network_address) + (1 << 16))
    return f"lab-up-{net.bridge}"[:40], str(ipaddress.IPv4Network(f"{base}/30", strict=False))


def create_upstream(name: str = "lab-upstream", subnet: str = DEFAULT_UPSTREAM_SUBNET) -> Upstream:
    """Create the upstream namespace `name` on `subnet` (the host takes the first address, it the second)."""
    net = ipaddress.IPv4Network(subnet)
    with iproute() as ipr:
        check_subnet_is_free(ipr, net)
    hosts = list(net.hosts())
    host_address, address = str(hosts[0]), str(hosts[1])
    up = Upstream(name, f"labu{secrets.token_hex(4)}", host_address, address, net.prefixlen)
    try:
        up._records.append(create_netns(name))
        # The same plug as a container's, with no bridge: the host end takes an address itself.
        up._records.append(state.record("veth", delete_link, ifname=up.host_link, what=f"upstream {name}"))
        with iproute() as ipr:
            ipr.link("add", ifname=up.host_link, kind="veth", peer={"ifname": "eth0", "net_ns_fd": up.netns})
            index = ipr.link_lookup(ifname=up.host_link)[0]
            quiet_ipv6(up.host_link)
            ipr.addr("add", index=index, address=host_address, prefixlen=net.prefixlen)
            ipr.link("set", index=index, state="up")
            # Replies to the containers arrive here; they are forwarded (after conntrack undoes the NAT).
            enable_forwarding(up.host_link)
        with iproute(up.netns) as ns:
            inside = ns.link_lookup(ifname="eth0")[0]
            in_netns(up.netns, quiet_ipv6, "eth0")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.addr("add", index=inside, address=address, prefixlen=net.prefixlen)
            ns.link("set", index=inside, state="up")
    except BaseException:
        up.remove()
        raise
    return up
