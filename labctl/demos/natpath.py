"""Step 6's mechanism, measured: one TCP exchange from a container to the lab's stand-in upstream, and
what the kernel recorded of its NAT rewrite.

    container eth0 ─veth─ lab0 (bridge, gateway) ─ route ─ nft postrouting: masquerade ─ labu… ─ upstream

The packets leave the container from its own address; the masquerade rule in the `postrouting` chain
of the lab's nftables table rewrites their source to the host's address on the upstream link, and
conntrack remembers the rewrite (an entry with the original tuple and the reply tuple) so that the
answers are rewritten back. We read the rule's `counter` (packets and bytes it matched) before and
after, and the conntrack entry by netlink (NETLINK_NETFILTER, what `conntrack -L` does). The rule
counts one packet per connection: a nat chain sees only a connection's first packet, conntrack
applies the same rewrite to all the others (the veth's counters show how many there were).
Only the lab's own namespaces take part. labctl/plots/network.py's packet_path() draws the result.
"""
from __future__ import annotations

from labctl import network
from labctl.demos import nettool
from labctl.demos.network import start_container
from labctl.network.nat import MASQUERADE_COMMENT, nft_table_json, nft_table_text


def masquerade_counter(table: str) -> tuple[int, int] | None:
    """(packets, bytes) the masquerade rule of `table` has counted (None: no such rule or no counter)."""
    for obj in nft_table_json(table) or []:
        rule = obj.get("rule")
        if rule and rule.get("chain") == "postrouting" and rule.get("comment") == MASQUERADE_COMMENT:
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    return expr["counter"]["packets"], expr["counter"]["bytes"]
    return None


def conntrack_entries(saddr: str, daddr: str, dport: int) -> list[dict]:
    """The conntrack entries of TCP connections saddr → daddr:dport, each as its two tuples:
    {"original": (src, sport, dst, dport), "reply": (src, sport, dst, dport), "status": "..."}.
    pyroute2 runs an asyncio loop of its own, which it cannot do in a thread that runs one already
    (Jupyter's): the dump runs in a thread of its own."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1, thread_name_prefix="conntrack") as pool:
        return pool.submit(_dump_conntrack, saddr, daddr, dport).result()


def _dump_conntrack(saddr: str, daddr: str, dport: int) -> list[dict]:
    from pyroute2 import Conntrack
    found = []
    with Conntrack() as ct:
        for e in ct.dump_entries():
            o, r = e.tuple_orig, e.tuple_reply
            if (o.saddr, o.daddr, o.dport) == (saddr, daddr, dport):
                found.append({"original": (o.saddr, o.sport, o.daddr, o.dport),
                              "reply": (r.saddr, r.sport, r.daddr, r.dport), "status": e.status_name()})
    return found


def nat_exchange(net: network.Network | None = None, port: int = 7) -> dict:
    """Start an upstream namespace with a TCP server and a container on `net` (lab0 by default); the
    container connects once; return what each piece is and what the kernel counted and tracked."""
    net = net or network.default_network()
    with network.create_upstream(*network.upstream_for(net)) as up, \
            nettool.Server(nettool.listen("0.0.0.0", port, lambda: network.socket_in_netns(up.netns))), \
            start_container(["sleep", "30"], "lab-nat", network=net) as box:
        before, veth_before = masquerade_counter(net.table), network.link_stats(box.attachment.host_link)
        seen = network.in_netns(box.pid, nettool.whoami, up.address, port)
        after, veth_after = masquerade_counter(net.table), network.link_stats(box.attachment.host_link)
        seen_address, _, seen_port = seen.rpartition(":")
        entries = [e for e in conntrack_entries(box.address, up.address, port) if e["reply"][3] == int(seen_port)]
        rule = next((line.strip() for line in nft_table_text(net.table) if MASQUERADE_COMMENT in line), "")
        return {"container": {"pid": box.pid, "address": box.address, "ifname": "eth0"},
                "veth": box.attachment.host_link, "bridge": net.bridge, "gateway": net.gateway,
                "subnet": net.subnet, "table": net.table, "rule": rule,
                "counted": None if before is None or after is None else
                (after[0] - before[0], after[1] - before[1]),
                "veth_packets": (veth_after.rx_packets - veth_before.rx_packets,     # from the container
                                 veth_after.tx_packets - veth_before.tx_packets),    # to the container
                "upstream": {"netns": up.name, "address": up.address, "host_link": up.host_link,
                             "host_address": up.host_address},
                "port": port, "seen_from": (seen_address, int(seen_port)),
                "conntrack": entries[0] if entries else None}
