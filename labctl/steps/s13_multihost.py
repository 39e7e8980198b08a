"""Step 13: several hosts, one network. The demo, the check, and the reference solution of lab/13-multi-host."""
from __future__ import annotations

import random
import socket
import sys

from labctl.errors import CheckFailed, LabError, require_root
from labctl.steps import checking

EXPLANATION = """
Until now every container lived on one machine, and a network was a bridge in one kernel. Two machines
cannot share a bridge; they share a network they did not choose (the *underlay*: a switch, a cloud's
subnet). An **overlay** network is a layer-2 network carried inside it: each host has a **VXLAN device**
(RFC 7348) that wraps every Ethernet frame it sends in UDP (port 4789) with a 24-bit network identifier,
the **VNI**, and sends it to the underlay address of the host that has the destination; the receiving
host's VXLAN device with the same VNI unwraps it and hands the frame on.

    host1 10.206.0.1                                   host2 10.206.0.2
    container 10.207.x.2 ─ bridge ─ vxlan (VNI) ═ UDP 4789 ═ vxlan (VNI) ─ bridge ─ container 10.207.x.3

Where to send a frame is the VXLAN device's **forwarding table (FDB)**: MAC → underlay address. It can
*learn* it (from packets received, and by flooding to a multicast group), or be *told*: Docker's overlay
driver turns learning off and programs each remote endpoint's MAC → its host, from a store all hosts
share (then etcd or Consul, `--cluster-store`), with a neighbour entry so ARP is answered locally.
That shared store also knows who is alive: each host's key lives on a **lease** it keeps refreshing; a
host that dies stops, and its key vanishes when the lease expires.

`labctl cluster up 2` makes two lab hosts (network namespaces with a `labctl daemon` each) on an
underlay bridge, and etcd. The demo creates one overlay network through host1's daemon, runs a server
container on host1 and a client container on host2, pings across it and shows the same packet inside
(the containers' addresses) and outside (UDP 4789, the VNI), measures what the wrapping costs against
loopback and a plain bridge, and kills host2's daemon with SIGKILL: its container's endpoint leaves
etcd, and host1's FDB, when its lease expires.
"""


TTL = 5      # the demo's lease, in seconds: short, so that the wait for a dead host is short


def demo() -> None:
    from labctl import ui
    from labctl.demos import clusterdemo
    require_root("the multi-host demo")
    ui.say("\n[bold]1. `labctl cluster up 2`[/bold]: two hosts (namespaces, a daemon each), etcd; through the "
           f"daemons' sockets, `network create -d overlay {clusterdemo.NETWORK}`, srv on host1, cli on host2")
    with clusterdemo.cluster(TTL) as c:
        _containers(c)
        inner, outer = clusterdemo.packet(c)
        src, dst = c.client, c.server
        ui.say(f"\n[bold]2. One ping from cli to srv, {src['address']} → {dst['address']}[/bold], captured twice "
               "(AF_PACKET sockets)")
        ui.table(["layer", f"in the client container (PID {src['pid']}, eth0)",
                  f"on the underlay (lab-underlay, {c.hosts[1].underlay_ifname})"],
                 clusterdemo.packet_rows(inner, outer))
        ui.say("The same frame: inside, the containers' addresses; outside, the hosts' underlay addresses, UDP to "
               "4789 and the VNI. 50 bytes of wrapping: outer Ethernet, IPv4, UDP and VXLAN (RFC 7348, section 5).")
        ui.say("\n[bold]3. What it costs[/bold]: ICMP round trips and one TCP stream, three paths")
        measured = clusterdemo.measure(c)
        ui.table(["path", "median RTT (µs)", "TCP (MiB/s)"], [[p, f"{_median(m['rtt']) * 1000:.0f}", f"{m['mibs']:.0f}"]
                                                             for p, m in measured.items()])
        ui.say(f"\n[bold]4. host2's daemon killed with SIGKILL[/bold]: nobody tells etcd; cli's endpoint key lives "
               f"on host2's lease (TTL {TTL} s), and host1 watches etcd")
        lease = clusterdemo.kill_and_time_lease(c)
        at_kill = "yes" if lease["fdb_at_kill"] else "no"
        ui.table(["what", "gone after"], [[k, f"{s:.1f} s"] for k, s in lease["gone"].items()],
                 title=f"daemon PID {lease['pid']}, lease {lease['lease']:x} ({lease['ttl_left']} s left at the kill); "
                       f"cli's MAC {lease['mac']} in host1's FDB at the kill: {at_kill}")
        _figures(measured, lease)
    ui.ok("`labctl cluster down`: containers, hosts, etcd, namespaces and the network's keys are gone")


def _containers(c) -> None:
    """The two containers as the kernel has them, and one TCP exchange between them."""
    from labctl import ui
    from labctl.demos import clusterdemo
    h1, h2 = c.hosts
    rows = [[ct["name"], h.name, h.address, str(ct["pid"]), f"{ct['address']}/{ct['prefixlen']}", ct["mac"],
             f"{other.name}: → {clusterdemo.fdb(other, c.net['vni']).get(ct['mac'], 'none')}"]
            for h, other, ct in ((h1, h2, c.server), (h2, h1, c.client))]
    ui.table(["container", "host", "underlay", "PID 1", "eth0 (netlink)", "MAC", "the other host's FDB"], rows,
             title=f"network {clusterdemo.NETWORK}: {c.net['subnet']}, VNI {c.net['vni']} (agreed in etcd)")
    answer = clusterdemo.ask(c)
    ui.say(f"cli connects to {c.server['address']}:80; srv's `nc` answers {answer.decode().strip()!r}")


def _median(values: list[float]) -> float:
    import statistics
    return statistics.median(values) if values else float("nan")


def _figures(measured: dict, lease: dict) -> None:
    from labctl.plots import multihost as plots
    from labctl.steps import save_figure
    save_figure(plots.rtt_and_throughput(measured), "step13-rtt-throughput")
    save_figure(plots.lease_timeline(lease, TTL), "step13-lease")


# ---------------------------------------------------------------------------------------------
# The check: the student's program joins two namespaces by VXLAN; judged by netlink, a ping, a capture.

def check(command: list[str]) -> list[str]:
    """Judge `command VNI NS_A UNDERLAY_A OVERLAY_A NS_B UNDERLAY_B OVERLAY_B` on two fresh namespaces
    joined by a veth pair: a VXLAN device in each with the VNI, learning off and port 4789 (read over
    netlink), an FDB entry to the peer's underlay address, an ICMP echo answered through the overlay, and
    UDP 4789 packets with the VNI seen on the underlay link (an AF_PACKET capture)."""
    from labctl.demos import multihost
    require_root("`labctl check 13` (it makes network namespaces)")
    vni = random.randint(100, 9999)
    verified: list[str] = []
    with multihost.two_namespaces() as (a, b):
        verified.append(f"{a.netns} ({a.underlay}) and {b.netns} ({b.underlay}) share an underlay veth pair; VNI {vni}")
        args = [str(vni), a.netns, a.underlay, a.overlay, b.netns, b.underlay, b.overlay]
        status, _ = checking.run_to_end(command + args, timeout=60)
        for side, peer in ((a, b), (b, a)):
            verified.append(_judge_device(side, vni, status))
        checking.expect(status == 0, f"the exercise exited {status}" if status is not None
                        else "the exercise did not end within 60 s",
                        "run it by hand (the README's Try it) and read the command that failed",
                        verified, "the exercise exited 0")
        for side, peer in ((a, b), (b, a)):
            verified.append(_judge_fdb(side, peer))
        capture = multihost.open_capture(a.netns, a.underlay_if)
        try:
            rtts = multihost.ping(a.netns, b.overlay_ip, count=3, timeout=1.0)
            seen = multihost.udp_seen(multihost.drain(capture))
        finally:
            capture.close()
        checking.expect(bool(rtts), f"no ICMP echo reply from {b.overlay_ip} (overlay) to {a.netns}",
                        "the devices, their addresses and FDB entries are there: are both devices up, and "
                        "the overlay addresses on them?", verified,
                        f"ping {a.overlay_ip} → {b.overlay_ip} through the overlay: {len(rtts)} of 3 replies, "
                        f"{min(rtts or [0]):.2f} ms at best")
        verified.append(_judge_wire(seen, a, b, vni))
    return verified


def _vxlan_devices(netns: str) -> list[dict]:
    """The VXLAN devices in `netns`, read over netlink (RTM_GETLINK, IFLA_LINKINFO's IFLA_INFO_DATA)."""
    from labctl.network.netlink import iproute
    found = []
    with iproute(netns) as ns:
        for link in ns.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            if not info or info.get_attr("IFLA_INFO_KIND") != "vxlan":
                continue
            data = info.get_attr("IFLA_INFO_DATA")
            found.append({"name": link.get_attr("IFLA_IFNAME"), "index": link["index"],
                          "vni": data.get_attr("IFLA_VXLAN_ID"), "port": data.get_attr("IFLA_VXLAN_PORT"),
                          "learning": data.get_attr("IFLA_VXLAN_LEARNING"), "up": bool(link["flags"] & 1)})
    return found


def _judge_device(side, vni: int, status: int | None) -> str:
    devices = _vxlan_devices(side.netns)
    ran = f" (the exercise exited {status})" if status else ""
    if not devices:
        raise CheckFailed(f"no VXLAN device in {side.netns}{ran}",
                          "make one with the VNI given, learning off, dstport 4789 (ip-link(8), \"VXLAN Type "
                          "Support\"; TODO 1)")
    dev = devices[0]
    if dev["vni"] != vni:
        raise CheckFailed(f"the VXLAN device {dev['name']} in {side.netns} has VNI {dev['vni']}, not the {vni} given: "
                          "the peer drops what it receives under another VNI",
                          "use the VNI from the command line (the first argument) on both hosts")
    if dev["port"] != multihost_port():
        raise CheckFailed(f"the VXLAN device {dev['name']} in {side.netns} sends to UDP port {dev['port']}, not "
                          f"{multihost_port()}" + (" (Linux's old default, used when dstport is not given)"
                                                   if dev["port"] == 8472 else ""),
                          "give dstport 4789, IANA's port for VXLAN (RFC 7348, section 5)")
    return (f"{side.netns}: VXLAN device {dev['name']}, VNI {vni}, UDP port {dev['port']}, "
            f"learning {'on' if dev['learning'] else 'off'}")


def multihost_port() -> int:
    from labctl.demos.multihost import VXLAN_PORT
    return VXLAN_PORT


def fdb_entries(netns: str, ifindex: int) -> list[dict]:
    """The VXLAN device's own FDB entries (RTM_GETNEIGH, family AF_BRIDGE): MAC and underlay destination."""
    from labctl.network.netlink import iproute
    with iproute(netns) as ns:
        return [{"mac": m.get_attr("NDA_LLADDR"), "dst": m.get_attr("NDA_DST")}
                for m in ns.fdb("dump") if m["ifindex"] == ifindex and m.get_attr("NDA_DST")]


def _judge_fdb(side, peer) -> str:
    dev = _vxlan_devices(side.netns)[0]
    entries = fdb_entries(side.netns, dev["index"])
    to_peer = [e for e in entries if e["dst"] == peer.underlay]
    if not to_peer:
        others = ", ".join(f"{e['mac']} → {e['dst']}" for e in entries) or "none"
        learning = (" Learning is on, but a device learns only from packets it receives, and with no entry it "
                    "sends none: nothing ever starts") if dev["learning"] else ""
        raise CheckFailed(f"the FDB of {dev['name']} in {side.netns} has no entry with dst {peer.underlay}, the "
                          f"peer's underlay address (its entries: {others}).{learning}",
                          "add one (bridge(8), `bridge fdb add`; the all-zero MAC is the default destination; TODO 2)"
                          + ("; and turn learning off (TODO 1)" if dev["learning"] else ""))
    if dev["learning"]:
        raise CheckFailed(f"the VXLAN device {dev['name']} in {side.netns} has learning on",
                          "programmed entries are the point: give nolearning (ip-link(8); TODO 1)")
    return f"{side.netns}: FDB {', '.join(e['mac'] for e in to_peer)} → dst {peer.underlay} (read over netlink)"


def _judge_wire(seen: list[dict], a, b, vni: int) -> str:
    port = multihost_port()
    ours = [d for d in seen if d["dport"] == port and d["vxlan"] and d["vni"] == vni
            and {d["outer_src"], d["outer_dst"]} == {a.underlay, b.underlay}]
    if not ours:
        what = ", ".join(sorted({f"UDP {d['dport']} VNI {d['vni']}" for d in seen})) or "no UDP at all"
        raise CheckFailed(f"the underlay link carried no UDP {port} packet with VNI {vni} between "
                          f"{a.underlay} and {b.underlay} (it carried: {what})",
                          "the devices' local address must be the underlay address, and dstport 4789")
    inner = sorted({f"{d['inner_proto']} {d['inner_src']} → {d['inner_dst']}" if "inner_src" in d
                    else d.get("inner_type", "?") for d in ours})
    return (f"the underlay carried {len(ours)} UDP {port} packets with VNI {vni} between {a.underlay} and "
            f"{b.underlay} (inside: {'; '.join(inner)})")


# ---------------------------------------------------------------------------------------------
# The reference solution: netlink messages through pyroute2, as labctl/cluster/vxlan.py sends them.

ZERO_MAC = "00:00:00:00:00:00"
NTF_SELF = 0x02
NUD_PERMANENT = 0x80


def reference(argv: list[str]) -> int:
    """Reference solution: `VNI NS_A UNDERLAY_A OVERLAY_A NS_B UNDERLAY_B OVERLAY_B`. In each namespace,
    RTM_NEWLINK kind vxlan (id, local, port 4789, learning 0), RTM_NEWADDR, RTM_NEWNEIGH family AF_BRIDGE
    on the device itself (NTF_SELF): 00:00:00:00:00:00 → dst the peer's underlay address."""
    from labctl.network.netlink import iproute
    if len(argv) != 7:
        print("usage: python -m labctl.steps.s13_multihost VNI NS_A UNDERLAY_A OVERLAY_A NS_B UNDERLAY_B "
              "OVERLAY_B", file=sys.stderr)
        return 2
    vni, a, b = int(argv[0]), argv[1:4], argv[4:7]
    for (netns, underlay, overlay), (_, peer, _) in ((a, b), (b, a)):
        address, _, prefix = overlay.partition("/")
        try:
            socket.inet_aton(address)
        except OSError:
            raise LabError(f"{overlay!r} is no IPv4 address/prefix", "give e.g. 10.212.0.1/24") from None
        with iproute(netns) as ns:
            ns.link("add", ifname="vx0", kind="vxlan", vxlan_id=vni, vxlan_local=underlay,
                    vxlan_port=multihost_port(), vxlan_learning=0)
            index = ns.link_lookup(ifname="vx0")[0]
            ns.addr("add", index=index, address=address, prefixlen=int(prefix or 24))
            ns.link("set", index=index, state="up")
            ns.fdb("append", ifindex=index, lladdr=ZERO_MAC, dst=peer, flags=NTF_SELF, state=NUD_PERMANENT)
        print(f"{netns}: vx0 VNI {vni}, {overlay}, FDB {ZERO_MAC} → {peer}")
    return 0


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
