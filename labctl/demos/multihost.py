"""Step 13's tools: two namespaces joined by an underlay (the check's scene), an ICMP echo and a TCP
stream between namespaces (no ping binary: a raw ICMP socket made inside the namespace), and a packet
capture on an underlay link, decoded by hand down to the VXLAN header and the frame inside it.

A VXLAN packet on the underlay (RFC 7348, section 5), as an AF_PACKET socket reads it:

    Ethernet (14) | IPv4 (20+) | UDP (8), dport 4789 | VXLAN (8): flags 0x08, 3 reserved,
    VNI (24 bits), 1 reserved | the inner Ethernet frame | its IPv4 | ICMP or TCP ...

decode_vxlan() reads those fields with struct and nothing else: the same packet, once with its outer
addresses (the hosts' underlay) and once with its inner ones (the endpoints' overlay).
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from labctl.network.netlink import iproute
from labctl.network.netns import create_netns, remove_netns, socket_in_netns

ETH_P_ALL = 0x0003
VXLAN_PORT = 4789


@dataclass(frozen=True)
class Side:
    """One end of the check's scene: its namespace, underlay link and address, overlay address."""
    netns: str
    underlay_if: str
    underlay: str
    overlay: str            # address/prefixlen

    @property
    def overlay_ip(self) -> str:
        return self.overlay.split("/")[0]


SCENE = (Side("lab-c13-a", "lab13ua", "10.211.0.1", "10.212.0.1/24"),
         Side("lab-c13-b", "lab13ub", "10.211.0.2", "10.212.0.2/24"))


@contextlib.contextmanager
def two_namespaces(sides: tuple[Side, Side] = SCENE) -> Iterator[tuple[Side, Side]]:
    """Two namespaces, each with lo up, joined by a veth pair with their underlay addresses (/24), as
    two machines on one switch; journaled (`labctl cleanup` finds them) and removed on the way out."""
    records = []
    try:
        for side in sides:
            records.append(create_netns(side.netns))
        a, b = sides
        with iproute() as ipr:
            ipr.link("add", ifname=a.underlay_if, kind="veth", peer=b.underlay_if)
            for side in sides:
                fd = os.open(f"/run/netns/{side.netns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    ipr.link("set", index=ipr.link_lookup(ifname=side.underlay_if)[0], net_ns_fd=fd)
                finally:
                    os.close(fd)
        for side in sides:
            with iproute(side.netns) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                index = ns.link_lookup(ifname=side.underlay_if)[0]
                ns.addr("add", index=index, address=side.underlay, prefixlen=24)
                ns.link("set", index=index, state="up")
        yield sides
    finally:
        from labctl.network.netlink import delete_link
        with contextlib.suppress(Exception):
            delete_link(sides[0].underlay_if)        # a pair still in the root namespace, if setup stopped there
        for side, rec in zip(sides, records):
            remove_netns(side.netns)
            rec.forget()


# ---------------------------------------------------------------------------------------------
# Traffic: ICMP echo and a TCP stream, from sockets made inside the namespaces.

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(netns: str, dst: str, count: int = 3, timeout: float = 1.0, size: int = 56) -> list[float]:
    """ICMP echo requests from inside `netns` to `dst` (a raw socket, as ping(8) opens); returns the
    round-trip times in ms of the replies that came (an empty list: nothing came back)."""
    sock = _icmp_socket(netns)
    rtts = []
    ident = os.getpid() & 0xFFFF
    try:
        for seq in range(1, count + 1):
            payload = bytes(size)
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
            sent = time.perf_counter()
            sock.sendto(packet, (dst, 0))
            rtt = _await_reply(sock, dst, ident, seq, sent, timeout)
            if rtt is not None:
                rtts.append(rtt)
    finally:
        sock.close()
    return rtts


def _icmp_socket(netns: str) -> socket.socket:
    from labctl.network.netns import in_netns
    return in_netns(netns, socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def _await_reply(sock, dst: str, ident: int, seq: int, sent: float, timeout: float) -> float | None:
    deadline = sent + timeout
    while (left := deadline - time.perf_counter()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return None
        data, (src, _) = sock.recvfrom(65535)
        ihl = (data[0] & 0x0F) * 4
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if src == dst and kind == 0 and rid == ident and rseq == seq:
            return (time.perf_counter() - sent) * 1000
    return None


def tcp_throughput(src_ns: str, dst_ns: str, dst: str, megabytes: int = 16, port: int = 5013) -> float:
    """Send `megabytes` MiB over one TCP connection from `src_ns` to a listener in `dst_ns` at `dst`;
    returns MiB/s as the receiver counted them (from the connection's accept to its last byte)."""
    import threading
    server = socket_in_netns(dst_ns)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((dst, port))
    server.listen(1)
    server.settimeout(15)
    result: dict[str, float] = {}

    def receive() -> None:
        conn, _ = server.accept()
        start, got = time.perf_counter(), 0
        with conn:
            while chunk := conn.recv(1 << 16):
                got += len(chunk)
        result["rate"] = got / (1 << 20) / (time.perf_counter() - start)

    thread = threading.Thread(target=receive)
    thread.start()
    client = socket_in_netns(src_ns)
    try:
        client.settimeout(10)
        client.connect((dst, port))
        block = bytes(1 << 16)
        for _ in range(megabytes * 16):
            client.sendall(block)
    finally:
        client.close()
        thread.join(timeout=30)
        server.close()
    return result.get("rate", 0.0)


# ---------------------------------------------------------------------------------------------
# Capture on the underlay, and the decoding of what it caught.

def open_capture(netns: str, ifname: str) -> socket.socket:
    """An AF_PACKET socket inside `netns`, bound to `ifname`: every frame the link sends or receives."""
    from labctl.network.netns import in_netns

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((ifname, 0))
        return sock
    sock = in_netns(netns, make)
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    """The frames the capture socket holds now."""
    frames = []
    with contextlib.suppress(BlockingIOError):
        while True:
            frames.append(sock.recv(65535))
    return frames


def _ipv4(data: bytes) -> tuple[dict, bytes] | None:
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    fields = {"src": str(ipaddress.IPv4Address(data[12:16])), "dst": str(ipaddress.IPv4Address(data[16:20])),
              "proto": data[9]}
    return fields, data[ihl:]


def decode_vxlan(frame: bytes) -> dict | None:
    """The fields of a UDP-in-IPv4 Ethernet frame, with its VXLAN header and inner frame when the UDP
    payload is one (flags 0x08: "VNI valid"); None for anything else (ARP, IPv6, TCP on the underlay)."""
    if len(frame) < 14 or struct.unpack("!H", frame[12:14])[0] != 0x0800:
        return None
    parsed = _ipv4(frame[14:])
    if not parsed or parsed[0]["proto"] != socket.IPPROTO_UDP or len(parsed[1]) < 16:
        return None
    outer, udp = parsed
    sport, dport = struct.unpack("!HH", udp[:4])
    flags, vni_word = udp[8], struct.unpack("!I", udp[12:16])[0]
    out = {"outer_src_mac": ":".join(f"{b:02x}" for b in frame[6:12]),
           "outer_dst_mac": ":".join(f"{b:02x}" for b in frame[0:6]), "outer_src": outer["src"], "outer_dst": outer["dst"], "sport": sport, "dport": dport,
           "vxlan": bool(flags & 0x08), "vni": vni_word >> 8, "length": len(frame)}
    inner = udp[16:]
    if out["vxlan"] and len(inner) >= 14:
        out["inner_src_mac"] = ":".join(f"{b:02x}" for b in inner[6:12])
        out["inner_dst_mac"] = ":".join(f"{b:02x}" for b in inner[0:6])
        ethertype = struct.unpack("!H", inner[12:14])[0]
        out["inner_type"] = {0x0800: "IPv4", 0x0806: "ARP"}.get(ethertype, f"0x{ethertype:04x}")
        if ethertype == 0x0800 and (ip := _ipv4(inner[14:])):
            out["inner_src"], out["inner_dst"] = ip[0]["src"], ip[0]["dst"]
            out["inner_proto"] = {1: "ICMP", 6: "TCP", 17: "UDP"}.get(ip[0]["proto"], str(ip[0]["proto"]))
    return out


def udp_seen(frames: list[bytes]) -> list[dict]:
    """The UDP packets among captured frames, decoded (VXLAN or not)."""
    return [d for d in (decode_vxlan(f) for f in frames) if d]


def decode_ethernet(frame: bytes) -> dict | None:
    """An Ethernet frame carrying IPv4, as an endpoint's eth0 sees it: MACs, addresses, protocol, length."""
    if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != 0x0800:
        return None
    ip = _ipv4(frame[14:])
    if not ip:
        return None
    return {"dst_mac": ":".join(f"{b:02x}" for b in frame[0:6]), "src_mac": ":".join(f"{b:02x}" for b in frame[6:12]),
            "src": ip[0]["src"], "dst": ip[0]["dst"], "length": len(frame),
            "proto": {1: "ICMP", 6: "TCP", 17: "UDP"}.get(ip[0]["proto"], str(ip[0]["proto"]))}
