"""Step 6: networking. The demo, the check, and the reference solution of lab/06-networking/exercise.py."""
from __future__ import annotations

import json
import os
import random
import secrets
import socket
import sys

from labctl.steps import checking
from labctl import network, state, ui
from labctl.demos import nettool
from labctl.demos.network import nettool_argv, start_container
from labctl.errors import CheckFailed, require_root

EXPLANATION = """
A new **network namespace** (`CLONE_NEWNET`) holds nothing but a loopback device that is down. To give
a container a network, Docker's default `bridge` mode builds this, all with netlink messages:

| object | netlink | what it does |
|---|---|---|
| bridge `lab0` with `10.203.0.1/24` | `RTM_NEWLINK` kind bridge, `RTM_NEWADDR` | a virtual switch; its address is the containers' gateway |
| veth pair `labv…` ↔ `eth0` | `RTM_NEWLINK` kind veth, `IFLA_MASTER`, `IFLA_NET_NS_FD` | a virtual cable: one end on the bridge, the other moved into the container |
| `10.203.0.2/24` on `eth0`, default route | `RTM_NEWADDR`, `RTM_NEWROUTE` inside the namespace | the container's address (from the lab's allocator) and its way out |
| forwarding on `lab0` | `net.ipv4.conf.lab0.forwarding=1` | the host routes what arrives on the bridge |
| nftables table `labctl` | `nft` (nf_tables netlink) | **masquerade**: containers leave with the host's address; **DNAT**: `-p 8080:80` |

Network modes: `bridge` (the above), `none` (only `lo`), `host` (no namespace of its own: the host's links).
The demo's "upstream" is another namespace standing in for the internet, on a subnet of its own: it
has no route to `10.203.0.0/24`, and answers the containers anyway, because NAT makes their
connections come from the host's address on its link.
"""


def _free_port(preferred: int = 8080) -> int:
    """`preferred` unless something on the host listens there (output-chain DNAT would capture the
    host's own connections to it), else a free ephemeral port."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", preferred))
            return preferred
        except OSError:
            s.bind(("0.0.0.0", 0))
            return s.getsockname()[1]


def _show_links(rows: list[network.LinkInfo], title: str) -> None:
    ui.table(("link", "kind", "master", "state", "IPv4", "rx pkts", "tx pkts"),
             [(l.name, l.kind or "", l.master or "", "up" if l.up else "down", " ".join(l.addresses),
               l.rx_packets, l.tx_packets) for l in rows], title=title)


def _client_output(name: str, net: network.Network, *args: str) -> str:
    """Start a container running the lab's TCP client; return its output line."""
    read_fd, write_fd = os.pipe()
    try:
        with start_container(nettool_argv(*args), name, network=net, stdout=write_fd) as box:
            ui.kernel(f"container {name}: host PID {box.pid}, eth0 {box.address}/{net.prefixlen} "
                      f"(veth {box.attachment.host_link} on {net.bridge})")
            os.close(write_fd)
            write_fd = -1
            box.proc.wait(timeout=20)
            return json.loads(os.read(read_fd, 1 << 20))["seen_as"]
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def demo() -> None:
    require_root("the networking demo")
    net = network.default_network()
    port = _free_port()
    ui.say(f"Starting container [bold]web[/bold] (a TCP server, `python -m labctl.demos.nettool serve --port 80`) "
           f"in new net+UTS namespaces, attached to bridge {net.bridge} with -p {port}:80:")
    devnull = os.open(os.devnull, os.O_WRONLY)
    web = start_container(nettool_argv("serve", "--port", "80"), "web", publish=[f"{port}:80"], network=net,
                          stdout=devnull)
    os.close(devnull)
    upstream = None
    server = None
    try:
        ours = [l for l in network.links(prefix="lab") if net.bridge in (l.name, l.master)]
        _show_links(ours, f"Host links (RTM_GETLINK): the bridge {net.bridge} and web's veth, its port")
        ui.kernel(f"{net.bridge} forwarding={int(network.ip_forwarding(net.bridge))} "
                  f"(/proc/sys/net/ipv4/conf/{net.bridge}/forwarding; the global ip_forward is untouched)")
        _show_links(network.links(web.pid), f"Inside web's network namespace (/proc/{web.pid}/ns/net)")
        for route in network.routes(web.pid):
            ui.kernel(f"web route: {route}")
        ui.say(f"nftables table [bold]{net.table}[/bold], read back with `nft list table ip {net.table}`:")
        for line in network.nft_table_text(net.table):
            ui.kernel(line)

        ui.say("\nA second container connects to web over the bridge:")
        seen = _client_output("client", net, "whoami", web.address, "80")
        ui.ok(f"web saw the connection come from {seen}: container to container, no NAT on the bridge")

        ui.say(f"\nThe host connects to the published port 127.0.0.1:{port}:")
        seen = nettool.whoami("127.0.0.1", port)
        ui.ok(f"web answered; it saw {seen}: output-chain DNAT to {web.address}:80, then masquerade to "
              f"the bridge's address")

        name, subnet = network.upstream_for(net)
        ui.say(f"\nAn 'upstream' host: a named network namespace ({name}), linked to the host by its own veth:")
        upstream = network.create_upstream(name, subnet)
        _show_links(network.links(upstream.netns), f"Inside {name} (/run/netns/{name})")
        ui.kernel(f"{name} routes: {network.routes(upstream.netns)} (no route to {net.subnet})")
        server = nettool.Server(nettool.listen("0.0.0.0", 7, lambda: network.socket_in_netns(upstream.netns)))
        seen = _client_output("client2", net, "whoami", upstream.address, "7")
        ui.ok(f"upstream saw the container's connection come from {seen}: the host's address on that "
              f"link (masquerade = source NAT), not the container's {net.subnet} address")
        counters = [l for l in network.links(prefix="lab") if l.name in (web.attachment.host_link, net.bridge,
                                                                           upstream.host_link)]
        _show_links(counters, "Packet counters (IFLA_STATS64) after the demo's traffic")
    finally:
        if server:
            server.close()
        if upstream:
            upstream.remove()
        web.stop()
    _show_nat_path(net)
    left = [l.name for l in network.links(prefix="lab") if l.master == net.bridge or l.name == net.bridge]
    ui.ok(f"containers stopped: veths, DNAT rules, addresses{'' if left else ', the bridge and the table'} removed")


def _show_nat_path(net) -> None:
    """One more connection to the upstream, and what the kernel kept of its NAT rewrite (the figure)."""
    from labctl.demos.natpath import nat_exchange
    from labctl.plots.network import packet_path
    from labctl.steps import save_figure
    ui.say("\nOne more connection from a container to the upstream, and what the kernel kept of its rewrite:")
    path = nat_exchange(net)
    ui.kernel(f"nft list table ip {net.table}: {path['rule']}")
    ct = path["conntrack"]
    if ct:
        ui.kernel(f"conntrack (NETLINK_NETFILTER): original {ct['original']}, reply {ct['reply']} [{ct['status']}]")
    save_figure(packet_path(path), "06-packet-path")


# ---------------------------------------------------------------------------------------------
# The check


def check(command: list[str]) -> list[str]:
    """Judge `command NETNS BRIDGE HOST_IFNAME ADDRESS/PREFIX GATEWAY` by netlink, then by connecting."""
    verified: list[str] = []
    tag = secrets.token_hex(3)
    octet = random.randrange(100, 250)
    net = network.Network(f"labck{tag}", f"10.205.{octet}.0/24")
    netns = f"lab-ck-{tag}"
    host_ifname = f"labx{tag}"
    address = f"10.205.{octet}.50"
    records: list[state.Record] = []
    upstream = server = None
    try:
        network.ensure_network(net)
        records.append(network.create_netns(netns))
        records.append(state.record("veth", network.delete_link, ifname=host_ifname, what="step 6 check"))
        upstream = network.create_upstream(f"lab-ck-{tag}-up", f"10.206.{octet}.0/30")
        server = nettool.Server(nettool.listen("0.0.0.0", 7, lambda: network.socket_in_netns(upstream.netns)))
        args = [netns, net.bridge, host_ifname, f"{address}/{net.prefixlen}", net.gateway]
        status, output = checking.run_to_end(command + args, timeout=60)
        verified.append(f"ran the exercise with {' '.join(args)} (exit status {status})")
        try:
            _judge(verified, net, netns, host_ifname, address, upstream)
        except CheckFailed as exc:
            if status == 0:
                raise
            # What is missing follows from where the exercise stopped: say where first.
            last = output.splitlines()[-1] if output else "(no output)"
            raise CheckFailed(f"the exercise stopped with status {status} before it was done: {last!r}; "
                              f"so {exc.cause}", f"fix what it printed first; then: {exc.fix}") from None
    finally:
        if server:
            server.close()
        if upstream:
            upstream.remove()
        for rec in reversed(records):
            state.undo_record(rec)
        network.remove_network(net)
        state.forget_records("veth", ifname=host_ifname)  # also those the reference's plug() wrote
    return verified


def _judge(verified, net, netns, host_ifname, address, upstream) -> None:
    host_end = network.link_stats(host_ifname)
    checking.expect(host_end is not None and host_end.kind == "veth",
                    f"there is no veth named {host_ifname} on the host",
                    "create the pair with host.link('add', ifname=host_ifname, kind='veth', peer=peer) (TODO 1)",
                    verified, f"{host_ifname} is a veth on the host (RTM_GETLINK)")
    checking.expect(host_end.master == net.bridge,
                    f"{host_ifname} is not on the bridge (its master is {host_end.master or 'nothing'})",
                    f"set master=<index of {net.bridge}> on the host end (TODO 2)",
                    verified, f"its master is {net.bridge} (IFLA_MASTER)")
    checking.expect(host_end.up, f"{host_ifname} is down", "bring the host end up with state='up' (TODO 2)",
                    verified, f"{host_ifname} is up")
    peer = "labp" + host_ifname[4:]
    checking.expect(network.link_stats(peer) is None,
                    f"the peer {peer} is still in the host's namespace",
                    "move it with host.link('set', index=..., net_ns_fd=netns) (TODO 3)",
                    verified, "the peer left the host's namespace")
    inside = {l.name: l for l in network.links(netns)}
    checking.expect("eth0" in inside, f"no eth0 in the namespace {netns} (it has: {', '.join(sorted(inside))})",
                    "rename the peer inside the namespace: ns.link('set', index=..., ifname='eth0') (TODO 4)",
                    verified, f"{netns} has eth0")
    eth0 = inside["eth0"]
    want = f"{address}/{net.prefixlen}"
    checking.expect(want in eth0.addresses, f"eth0 has {eth0.addresses or 'no IPv4 address'}, not {want}",
                    "ns.addr('add', index=<eth0>, address=..., prefixlen=...) (TODO 4)",
                    verified, f"eth0 has {want} (RTM_GETADDR)")
    checking.expect(eth0.up and inside["lo"].up, "eth0 or lo is down inside the namespace",
                    "bring both up with ns.link('set', index=..., state='up') (TODO 4)",
                    verified, "eth0 and lo are up")
    routes = network.routes(netns)
    checking.expect(f"default via {net.gateway} dev eth0" in routes,
                    f"no default route via {net.gateway} (the routes: {'; '.join(routes) or 'none'})",
                    "ns.route('add', dst='0.0.0.0/0', gateway=GATEWAY) (TODO 5)",
                    verified, f"default route via {net.gateway} (RTM_GETROUTE)")
    with nettool.Server(nettool.listen("0.0.0.0", 7, lambda: network.socket_in_netns(netns))):
        try:
            seen = nettool.whoami(address, 7, timeout=3)
        except OSError as exc:
            raise CheckFailed(f"the host could not connect to {address}:7 in the namespace: {exc}",
                              "check the bridge, the address and that every link is up")
    verified.append(f"the host connected to a server at {address}:7 inside the namespace (it saw {seen})")
    try:
        seen = network.in_netns(netns, lambda: nettool.whoami(upstream.address, 7, timeout=3))
    except OSError as exc:
        raise CheckFailed(f"from the namespace, {upstream.address} (beyond the gateway) is unreachable: {exc}",
                          "the default route must go via the bridge's address (TODO 5)")
    checking.expect(seen.split(":")[0] == upstream.host_address,
                    f"upstream saw {seen}, not the host's address", "is masquerade in place?",
                    verified, f"from the namespace, an upstream host at {upstream.address} was reached and saw "
                              f"{seen.split(':')[0]} (via the default route, with NAT)")


# ---------------------------------------------------------------------------------------------


def reference(argv: list[str]) -> int:
    """Reference solution: `NETNS BRIDGE HOST_IFNAME ADDRESS/PREFIX GATEWAY`, as the exercise."""
    if len(argv) != 5:
        print("usage: python -m labctl.steps.s06_networking NETNS BRIDGE HOST_IFNAME ADDRESS/PREFIX GATEWAY",
              file=sys.stderr)
        return 2
    netns, bridge, host_ifname, cidr, gateway = argv
    address, _, prefixlen = cidr.partition("/")
    network.plug(netns, bridge, host_ifname, address, int(prefixlen), gateway, what="step 6 reference")
    return 0


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
