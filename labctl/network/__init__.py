"""Step 6: container networking. A bridge, a veth pair per container, NAT and published ports.

This is Docker's default "bridge" network built from netlink calls (pyroute2's IPRoute) and one
nftables table:

    host network namespace                                        container's network namespace
    ┌───────────────────────────────────────────────────┐        ┌────────────────────────────────┐
    │ lab0 (bridge) 10.203.0.1/24 ── labv1a2b3c (veth) ─┼────────┼─ eth0 (veth) 10.203.0.2/24    │
    │   nft table `labctl`: masquerade, DNAT :8080→:80  │        │ lo 127.0.0.1, default via .0.1 │
    └───────────────────────────────────────────────────┘        └────────────────────────────────┘

For one container in "bridge" mode, attach() does, in order:
  1. allocate an address from the network's allocator (a JSON file in the state directory, changed
     under a file lock, so concurrent labctl processes never hand out one address twice);
  2. create the bridge, give it the gateway address, switch on forwarding for packets arriving on it,
     and load the nftables table, if this is the network's first container;
  3. create a veth pair (RTM_NEWLINK kind veth), enslave the host end to the bridge (IFLA_MASTER),
     move the peer into the container's network namespace (IFLA_NET_NS_PID);
  4. inside that namespace: rename the peer to eth0, bring it and lo up, add the address, add the
     default route via the bridge's address;
  5. add DNAT rules for published ports (`-p 8080:80`), and write /etc/hosts, /etc/resolv.conf and
     /etc/hostname for the container to bind-mount.
Every object is recorded in the journal before it is created, so `labctl cleanup` removes it even
after a SIGKILL. The bridge and the nftables table go away with the network's last container.

The API step 7 (`labctl run`) uses:

    proc = namespaces.spawn(argv, namespaces=("uts", "pid", "ipc", "mnt", "net"), start=False, ...)
    att = network.attach(proc.pid, "web", mode="bridge", publish=["8080:80"])
    att.address          # "10.203.0.2" (None for modes none and host)
    att.etc_files        # {"/etc/hosts": Path, "/etc/resolv.conf": Path, "/etc/hostname": Path}
    proc.start()         # the container runs with its network in place
    ...
    att.detach()         # veth, DNAT rules, the address (and the bridge, if it was the last one)
    Attachment.from_dict(att.to_dict()).detach()   # the same, from another process (`labctl rm`)

Modes: "bridge" (the above), "none" (the process's own network namespace with only lo, up), "host"
(the process shares the host's network namespace: nothing to create, only the /etc files).

Which network: `Network(bridge="lab0", subnet="10.203.0.0/24")`, or $LABCTL_BRIDGE and $LABCTL_SUBNET
for default_network(). The nftables table is `labctl` for lab0 and `labctl_<bridge>` for others, so
two networks never touch each other's rules.

Traffic stays in the lab: a forward rule drops whatever a container sends towards a link that is not
the lab's (names lab*), unless the network is made with allow_egress=True. So containers reach each
other, the host, and the lab's own "upstream" namespace (create_upstream), and nothing else.

pyroute2 costs ~0.3 s to import: this module imports it inside the functions that need it.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from labctl import state
from labctl.errors import LabError
from labctl.kernel.syscalls import CLONE_NEWNET, namespace_inode, setns

DEFAULT_BRIDGE = "lab0"
DEFAULT_SUBNET = "10.203.0.0/24"
DEFAULT_UPSTREAM_SUBNET = "10.204.0.0/30"
MODES = ("bridge", "none", "host")
IFNAMSIZ = 15  # the longest interface name the kernel accepts (16 bytes with the NUL)


# ---------------------------------------------------------------------------------------------
# Networks and published ports


@dataclass(frozen=True)
class Network:
    """A bridge network: its bridge's name, its IPv4 subnet (the bridge takes the first address)."""
    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET
    allow_egress: bool = False

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


def default_network() -> Network:
    """lab0 on 10.203.0.0/24, or what $LABCTL_BRIDGE and $LABCTL_SUBNET say."""
    return Network(os.environ.get("LABCTL_BRIDGE", DEFAULT_BRIDGE), os.environ.get("LABCTL_SUBNET", DEFAULT_SUBNET))


@dataclass(frozen=True)
class PortMapping:
    """`-p HOST:CONTAINER[/tcp|udp]`: connections to HOST on any of the host's addresses go to CONTAINER."""
    host_port: int
    container_port: int
    protocol: str = "tcp"

    @classmethod
    def parse(cls, spec: "str | PortMapping") -> "PortMapping":
        if isinstance(spec, PortMapping):
            return spec
        text, _, proto = str(spec).partition("/")
        proto = proto or "tcp"
        host, _, container = text.partition(":")
        try:
            host_port, container_port = int(host), int(container or host)
        except ValueError:
            host_port = container_port = -1
        if proto not in ("tcp", "udp") or not (0 < host_port < 65536 and 0 < container_port < 65536):
            raise LabError(f"bad published port {spec!r}", "write HOST:CONTAINER, e.g. -p 8080:80 or -p 5353:53/udp")
        return cls(host_port, container_port, proto)

    def __str__(self) -> str:
        return f"{self.host_port}:{self.container_port}/{self.protocol}"


# ---------------------------------------------------------------------------------------------
# Small kernel helpers: sysctls, network namespaces joined by a thread, nft


def write_sysctl(path: str, value: str) -> None:
    """Write /proc/sys/...; the per-interface ones (net/ipv4/conf/<link>/...) vanish with the link."""
    with open(path, "w") as f:
        f.write(value)


def netns_path(target: int | str) -> str:
    """/proc/<pid>/ns/net for a PID, /run/netns/<name> for a named namespace, or a path as given."""
    if isinstance(target, int) or str(target).isdigit():
        return f"/proc/{int(target)}/ns/net"
    return str(target) if "/" in str(target) else f"/run/netns/{target}"


def in_netns(target: int | str, func: Callable[..., Any], *args: Any) -> Any:
    """Run func(*args) in a new thread that joined the network namespace `target` (setns(2), CLONE_NEWNET).

    A network namespace belongs to a thread, not to the whole process, so one short-lived thread can
    step in, make sockets there (they stay in that namespace for life) and end, while the rest of the
    program stays on the host. (The mount and user namespaces cannot be joined like this.)"""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(netns_path(target), os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            result["value"] = func(*args)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=body, name=f"netns {target}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def socket_in_netns(target: int | str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside another network namespace: it binds, listens and connects there."""
    return in_netns(target, socket.socket, family, kind)


@contextlib.contextmanager
def iproute(netns: int | str | None = None) -> Iterator[Any]:
    """A netlink (RTNL) socket, pyroute2's IPRoute, in the host's network namespace or in `netns`.

    For another namespace pyroute2 forks a child that joins it, opens the socket there and passes it
    back. It ends that child with SIGTERM: the child must not run labctl's SIGTERM handler (which
    raises KeyboardInterrupt, and would unwind a copy of our stack, running our `finally` blocks in
    the child), hence disable_mp_signal, which restores the default action in the child.
    pyroute2's synchronous API runs an asyncio loop of its own, which it cannot do in a thread that
    already runs one (Jupyter's): there, every call goes to a worker thread."""
    import asyncio
    from pyroute2 import IPRoute, config
    config.disable_mp_signal = True

    def make():
        return IPRoute(netns=netns_path(netns), flags=0) if netns is not None else IPRoute()

    try:
        asyncio.get_running_loop()
        ipr = _InWorkerThread(make)
    except RuntimeError:  # no loop running here: the usual case
        ipr = make()
    try:
        yield ipr
    finally:
        ipr.close()


class _InWorkerThread:
    """An object created, used and closed in one worker thread; its method results are made lists."""

    def __init__(self, factory: Callable[[], Any]):
        from concurrent.futures import ThreadPoolExecutor
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pyroute2")
        self._obj = self._pool.submit(factory).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            def run():
                result = attr(*args, **kwargs)
                return list(result) if hasattr(result, "__next__") else result
            return self._pool.submit(run).result()
        return call

    def close(self) -> None:
        try:
            self._pool.submit(self._obj.close).result()
        finally:
            self._pool.shutdown()


def nft(script: str) -> None:
    """Apply an nftables script atomically (`nft -f -`: all of it or nothing)."""
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"nft refused the lab's rules: {result.stderr.strip().splitlines()[0] if result.stderr else '?'}",
                       "is nftables available (`nft list tables`) and are you root?")


def nft_table_json(table: str) -> list[dict] | None:
    """The table's objects as `nft -j list table ip NAME` reports them (None when there is no such table)."""
    result = subprocess.run(["nft", "-j", "list", "table", "ip", table], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)["nftables"]


def nft_table_text(table: str) -> list[str]:
    """The table as nft prints it, one line per chain header or rule (empty when missing)."""
    result = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True, text=True)
    return [line.rstrip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


# ---------------------------------------------------------------------------------------------
# Undo functions: each removes one kind of object and tolerates it being gone already.


def delete_link(ifname: str, netns: str | None = None, what: str = "") -> None:
    """RTM_DELLINK by name. Deleting one end of a veth pair deletes both."""
    from pyroute2.netlink.exceptions import NetlinkError
    if netns and not os.path.exists(netns_path(netns)):
        return
    with iproute(netns) as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)


def delete_nft_table(table: str) -> None:
    subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)


def delete_nft_rules(table: str, comment: str) -> None:
    """Delete the rules of the table that carry this comment (one container's published ports)."""
    objects = nft_table_json(table) or []
    script = [f"delete rule ip {table} {o['rule']['chain']} handle {o['rule']['handle']}"
              for o in objects if "rule" in o and o["rule"].get("comment") == comment]
    if script:
        subprocess.run(["nft", "-f", "-"], input="\n".join(script) + "\n", capture_output=True, text=True)


def remove_bridge(bridge: str, table: str, force: bool = False) -> bool:
    """The network's shared objects: its nftables table and its bridge. Unless forced, a bridge that
    still has ports (veths of containers started by another labctl, with another state directory) is
    left alone: the kernel's view decides, not our allocation file. Returns whether they went."""
    if not force and _bridge_ports(bridge):
        return False
    delete_nft_table(table)
    delete_link(bridge)
    return True


def _bridge_ports(bridge: str) -> list[str]:
    with iproute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return []
        return [m.get("ifname") for m in ipr.link("dump") if m.get("master") == found[0]]


def remove_netns(name: str) -> None:
    """`ip netns del NAME`: detach the bind mount that keeps the namespace alive, remove the file."""
    from labctl.kernel.syscalls import MNT_DETACH, umount2
    path = netns_path(name)
    with contextlib.suppress(OSError):
        umount2(path, MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def release_address(bridge: str, address: str, owner: str) -> None:
    """Give an address back to its network's allocator, if `owner` still holds it."""
    with state.locked(f"network-{bridge}"):
        table = _read_allocations(bridge)
        if table.get(address, {}).get("owner") == owner:
            del table[address]
            state.atomic_write_json(_allocations_path(bridge), table)


def _forget_records(kind: str, **match: Any) -> None:
    """Drop journal records of objects just removed, whichever process wrote them."""
    for rec in state.records():
        if rec.kind == kind and all(rec.data.get(k) == v for k, v in match.items()):
            rec.forget()


# ---------------------------------------------------------------------------------------------
# The address allocator: <state>/network/<bridge>/addresses.json, changed only under a file lock.


def _allocations_path(bridge: str) -> Path:
    return state.subdir("network", bridge) / "addresses.json"


def _read_allocations(bridge: str) -> dict[str, dict]:
    try:
        return json.loads(_allocations_path(bridge).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _live(entry: dict) -> bool:
    """An allocation is stale when the process it was made for has ended (a SIGKILLed labctl cannot
    release its addresses; its journal can, but only when someone runs cleanup)."""
    pid = entry.get("pid")
    return pid is None or state.process_start_time(pid) == entry.get("start_time")


def allocations(net: Network) -> dict[str, dict]:
    """{address: {"owner", "name", "pid", ...}} of the network's containers."""
    return _read_allocations(net.bridge)


# ---------------------------------------------------------------------------------------------
# The bridge, its nftables table, and the objects listed for students


def _table_script(net: Network) -> str:
    bridge, subnet = net.bridge, net.subnet
    guard = "" if net.allow_egress else (
        f'    iifname "{bridge}" oifname != "lab*" drop comment "containers reach only the lab\'s own links"\n')
    return f"""table ip {net.table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" masquerade comment "containers go out with the host's address"
    oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade comment "host to a published port on 127.0.0.1"
    oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade comment "a container to its own published port"
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
{guard}  }}
}}
"""


def _ensure_bridge(net: Network) -> None:
    """Create the bridge (with the gateway address) and the nftables table, unless they exist.
    Called with the network's lock held."""
    with iproute() as ipr:
        found = ipr.link_lookup(ifname=net.bridge)
        if found:
            kind = ipr.link("get", index=found[0])[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            if kind != "bridge":
                raise LabError(f"a link named {net.bridge} exists and is a {kind}, not a bridge",
                               f"remove it (`ip link del {net.bridge}`) or choose another bridge name")
            have = [a.get_attr("IFA_ADDRESS") for a in ipr.addr("dump", index=found[0], family=socket.AF_INET)]
            if net.gateway not in have:
                raise LabError(f"the bridge {net.bridge} exists with {', '.join(have) or 'no address'}, "
                               f"not the gateway {net.gateway} of {net.subnet}",
                               "use that bridge's subnet (LABCTL_SUBNET), or another bridge (LABCTL_BRIDGE)")
        else:
            _check_subnet_is_free(ipr, net.ip_network)
            state.record("bridge", remove_bridge, bridge=net.bridge, table=net.table)
            ipr.link("add", ifname=net.bridge, kind="bridge")
            index = ipr.link_lookup(ifname=net.bridge)[0]
            _quiet_ipv6(net.bridge)
            ipr.addr("add", index=index, address=net.gateway, prefixlen=net.prefixlen)
            ipr.link("set", index=index, state="up")
            # Forwarding per interface, not the global net.ipv4.ip_forward: IPv4 decides by the interface
            # a packet arrives on, so this routes what containers send, changes nothing else on the
            # host, and disappears with the bridge. route_localnet lets host→127.0.0.1:PORT be DNATed
            # out of this bridge (see publish_ports).
            write_sysctl(f"/proc/sys/net/ipv4/conf/{net.bridge}/forwarding", "1")
            write_sysctl(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet", "1")
    if nft_table_json(net.table) is None:
        state.record("nftables", delete_nft_table, table=net.table)
        nft(_table_script(net))


def _check_subnet_is_free(ipr, subnet: ipaddress.IPv4Network) -> None:
    """Refuse a subnet the host already routes somewhere (eth0's, another lab network's)."""
    for route in ipr.route("dump", family=socket.AF_INET, table=254):
        dst = route.get("dst")
        if dst and ipaddress.IPv4Network(f"{dst}/{route['dst_len']}").overlaps(subnet):
            raise LabError(f"the subnet {subnet} overlaps {dst}/{route['dst_len']}, already routed on this host",
                           "choose another one, e.g. LABCTL_SUBNET=10.213.0.0/24")


def _quiet_ipv6(ifname: str) -> None:
    """No IPv6 on the lab's links: no link-local address, so no router solicitations or MLD reports."""
    with contextlib.suppress(FileNotFoundError):
        write_sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "1")


def _remove_bridge_if_unused(net: Network) -> None:
    with state.locked(f"network-{net.bridge}"):
        if not any(_live(e) for e in _read_allocations(net.bridge).values()) and remove_bridge(net.bridge, net.table):
            _forget_records("nftables", table=net.table)
            _forget_records("bridge", bridge=net.bridge)


def ensure_network(net: Network | None = None) -> Network:
    """Create the network's bridge and nftables table now (attach() does it on demand)."""
    net = net or default_network()
    with state.locked(f"network-{net.bridge}"):
        _ensure_bridge(net)
    return net


def remove_network(net: Network | None = None) -> None:
    """Remove the bridge and its table now, whatever still uses them (`labctl network rm`)."""
    net = net or default_network()
    with state.locked(f"network-{net.bridge}"):
        remove_bridge(net.bridge, net.table, force=True)
        with contextlib.suppress(FileNotFoundError):
            _allocations_path(net.bridge).unlink()
        _forget_records("nftables", table=net.table)
        _forget_records("bridge", bridge=net.bridge)


# ---------------------------------------------------------------------------------------------
# Plugging a namespace into a bridge: the core of the step (the exercise's reference, too)


def plug(netns: int | str, bridge: str, host_ifname: str, address: str, prefixlen: int, gateway: str | None,
         what: str = "") -> state.Record:
    """Connect a network namespace to a bridge: veth pair, host end on the bridge, peer inside as eth0
    with an address and a default route via `gateway`. Returns the journal record of the veth."""
    if not host_ifname.startswith("lab") or len(host_ifname) > IFNAMSIZ:
        raise LabError(f"bad link name {host_ifname!r}", f"the lab's links are lab*, at most {IFNAMSIZ} characters")
    path = netns_path(netns)
    peer = "labp" + host_ifname[3:]  # lives in the host only until it moves; lab* so cleanup knows it
    peer = peer[:IFNAMSIZ]
    rec = state.record("veth", delete_link, ifname=host_ifname, what=what)
    try:
        with iproute() as ipr:
            bridges = ipr.link_lookup(ifname=bridge)
            if not bridges:
                raise LabError(f"there is no bridge {bridge}", "create the network first")
            ipr.link("add", ifname=host_ifname, kind="veth", peer=peer)
            host_index = ipr.link_lookup(ifname=host_ifname)[0]
            peer_index = ipr.link_lookup(ifname=peer)[0]
            _quiet_ipv6(host_ifname)
            ipr.link("set", index=host_index, master=bridges[0], state="up")
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link("set", index=peer_index, net_ns_fd=fd)
            finally:
                os.close(fd)
        with iproute(path) as ns:
            inside = ns.link_lookup(ifname=peer)[0]
            ns.link("set", index=inside, ifname="eth0")
            in_netns(path, _quiet_ipv6, "eth0")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.addr("add", index=inside, address=address, prefixlen=prefixlen)
            ns.link("set", index=inside, state="up")
            if gateway:
                ns.route("add", dst="0.0.0.0/0", gateway=gateway)
    except BaseException:
        state.undo_record(rec)  # half a plug is no plug: the pair goes, both ends
        raise
    return rec


def loopback_up(netns: int | str) -> None:
    with iproute(netns) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


def publish_ports(net: Network, address: str, ports: Sequence[PortMapping], comment: str) -> None:
    """DNAT HOST_PORT on any of the host's addresses to ADDRESS:CONTAINER_PORT.

    Two hooks, because they see different traffic: prerouting sees packets arriving from other
    namespaces and machines; packets the host itself sends to 127.0.0.1:8080 or to its own
    addresses never pass prerouting, only output. DNAT in output changes the destination after the
    source (127.0.0.1 for loopback) was chosen; the kernel refuses to route 127.0.0.0/8 sources out of
    a real interface unless route_localnet is set on it (we set it on the bridge only), and the
    masquerade rule for 127.0.0.0/8 in postrouting gives the packet the bridge's address, so the
    container can answer. Packets from other machines arrive on eth0, where the lab leaves
    forwarding off: published ports answer the host, the containers and the lab's upstream only.
    Docker does the same with userland-proxy=false; by default it runs
    docker-proxy, a userspace process per port that accepts on the host and copies bytes. The kernel
    way needs no process to supervise, and conntrack shows every connection."""
    lines = []
    for port in ports:
        match = f"fib daddr type local {port.protocol} dport {port.host_port}"
        target = f'dnat to {address}:{port.container_port} comment "{comment}"'
        lines += [f"add rule ip {net.table} prerouting {match} {target}",
                  f"add rule ip {net.table} output {match} {target}"]
    if lines:
        nft("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# /etc files for the container


def etc_contents(name: str, address: str | None, mode: str, hostname: str | None = None) -> dict[str, str]:
    """/etc/hosts, /etc/resolv.conf and /etc/hostname for a container, as Docker writes them."""
    hostname = hostname or name
    if mode == "host":
        hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1\tlocalhost\n"
    else:
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts += f"{address}\t{hostname}\n" if address else f"127.0.1.1\t{hostname}\n"
    if mode == "none":
        resolv = "# network mode none: no nameserver\n"
    else:
        # The host's nameservers, without the 127.x ones: in bridge mode the container's loopback
        # is its own, and a resolver listening on the host's 127.0.0.1 is not reachable from it.
        try:
            host_lines = Path("/etc/resolv.conf").read_text().splitlines()
        except OSError:
            host_lines = []
        keep = [l for l in host_lines if l.strip() and not l.startswith("#")
                and not (mode == "bridge" and l.split()[:1] == ["nameserver"] and l.split()[1:2]
                         and l.split()[1].startswith("127."))]
        resolv = "# written by labctl from the host's /etc/resolv.conf\n" + "\n".join(keep) + "\n"
    return {"/etc/hosts": hosts, "/etc/resolv.conf": resolv, "/etc/hostname": hostname + "\n"}


# ---------------------------------------------------------------------------------------------
# Attaching a container


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
        nftables table too when this was the network's last container. Safe to call twice."""
        for rec in reversed(self._records):
            state.undo_record(rec)
        self._records.clear()
        if self.mode == "bridge" and self.network:
            _remove_bridge_if_unused(self.network)

    def to_dict(self) -> dict:
        """Everything needed to detach later from another process (`labctl rm`, a daemon): JSON-safe."""
        return {"pid": self.pid, "name": self.name, "mode": self.mode, "address": self.address,
                "host_link": self.host_link, "owner": self._owner,
                "network": {"bridge": self.network.bridge, "subnet": self.network.subnet,
                            "allow_egress": self.network.allow_egress} if self.network else None,
                "published": [str(p) for p in self.published],
                "etc_files": {k: str(v) for k, v in self.etc_files.items()},
                "records": [str(r.path) for r in self._records]}

    @classmethod
    def from_dict(cls, data: dict) -> "Attachment":
        """The inverse of to_dict(): its journal records are found again by their file names."""
        by_path = {str(r.path): r for r in state.records()}
        return cls(data["pid"], data["name"], data["mode"],
                   Network(**data["network"]) if data.get("network") else None,
                   data.get("address"), data.get("host_link"),
                   [PortMapping.parse(p) for p in data.get("published", [])],
                   {k: Path(v) for k, v in data.get("etc_files", {}).items()},
                   [by_path[p] for p in data.get("records", []) if p in by_path], data.get("owner", ""))

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def attach(pid: int, name: str, mode: str = "bridge", publish: Iterable[str | PortMapping] = (),
           network: Network | None = None, hostname: str | None = None) -> Attachment:
    """Give the process `pid` (its network namespace) a network of the given mode; see the module doc."""
    if mode not in MODES:
        raise LabError(f"unknown network mode {mode!r}", f"use one of: {', '.join(MODES)}")
    ports = [PortMapping.parse(p) for p in publish]
    if ports and mode != "bridge":
        raise LabError(f"published ports need network mode bridge, not {mode}",
                       "drop -p, or use --network bridge")
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
            _attach_bridge(att, net, ports)
        _write_etc(att, hostname)
    except BaseException as exc:
        att.detach()
        from pyroute2.netlink.exceptions import NetlinkError
        if isinstance(exc, NetlinkError):
            raise LabError(f"the kernel refused to set up the network of {name}: {exc}",
                           "is the process already attached, or a link name taken? `ip link`, `labctl cleanup`") from exc
        raise
    return att


def _attach_bridge(att: Attachment, net: Network, ports: list[PortMapping]) -> None:
    with state.locked(f"network-{net.bridge}"):
        _ensure_bridge(net)
        table = {a: e for a, e in _read_allocations(net.bridge).items() if _live(e)}
        taken = set(table) | {net.gateway}
        free = [str(ip) for ip in net.ip_network.hosts() if str(ip) not in taken]
        if not free:
            raise LabError(f"the network {net.bridge} ({net.subnet}) has no free address left",
                           "remove some containers, or use a larger subnet (LABCTL_SUBNET)")
        att.address = free[0]
        att._records.append(state.record("address", release_address, bridge=net.bridge, address=att.address,
                                         owner=att._owner))
        table[att.address] = {"owner": att._owner, "name": att.name, "pid": att.pid,
                              "start_time": state.process_start_time(att.pid)}
        state.atomic_write_json(_allocations_path(net.bridge), table)
    att.host_link = f"labv{secrets.token_hex(4)}"  # unique host-wide, like Docker's veth1a2b3c4
    att._records.append(plug(att.pid, net.bridge, att.host_link, att.address, net.prefixlen, net.gateway,
                             what=f"container {att.name}"))
    if ports:
        comment = f"labctl:{att._owner}"
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


# ---------------------------------------------------------------------------------------------
# The "upstream": a named network namespace standing in for the internet


@dataclass
class Upstream:
    """A named network namespace (`lab-*` in /run/netns) linked to the host by its own veth pair,
    on its own subnet. It has no route to the containers' subnet: it can only answer them because NAT
    makes their packets come from the host's address on this link."""
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

    def __enter__(self) -> "Upstream":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def create_netns(name: str) -> state.Record:
    """`ip netns add NAME`: unshare(CLONE_NEWNET) in a child, bind-mount its /proc/self/ns/net on
    /run/netns/NAME so the namespace outlives the child."""
    from pyroute2 import netns as pyroute2_netns
    if not name.startswith("lab-"):
        raise LabError(f"bad namespace name {name!r}", "the lab's network namespaces are named lab-*")
    if os.path.exists(netns_path(name)):
        raise LabError(f"the network namespace {name} exists already",
                       f"pick another name, or remove it (`ip netns del {name}`, `labctl cleanup`)")
    rec = state.record("netns", remove_netns, name=name)
    pyroute2_netns.create(name)
    return rec


def upstream_for(net: Network) -> tuple[str, str]:
    """A name and a /30 for a network's demo upstream: 10.203.X.0/24 gets lab-up-<bridge> on 10.204.X.0/30,
    so two networks' demos never share one."""
    base = ipaddress.IPv4Address(int(net.ip_network.network_address) + (1 << 16))
    return f"lab-up-{net.bridge}"[:40], str(ipaddress.IPv4Network(f"{base}/30", strict=False))


def create_upstream(name: str = "lab-upstream", subnet: str = DEFAULT_UPSTREAM_SUBNET) -> Upstream:
    """Create the upstream namespace `name` on `subnet` (the host takes the first address, it the second)."""
    net = ipaddress.IPv4Network(subnet)
    with iproute() as ipr:
        _check_subnet_is_free(ipr, net)
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
            _quiet_ipv6(up.host_link)
            ipr.addr("add", index=index, address=host_address, prefixlen=net.prefixlen)
            ipr.link("set", index=index, state="up")
            # Replies to the containers arrive here; they are forwarded (after conntrack undoes the NAT).
            write_sysctl(f"/proc/sys/net/ipv4/conf/{up.host_link}/forwarding", "1")
        with iproute(up.netns) as ns:
            inside = ns.link_lookup(ifname="eth0")[0]
            in_netns(up.netns, _quiet_ipv6, "eth0")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.addr("add", index=inside, address=address, prefixlen=net.prefixlen)
            ns.link("set", index=inside, state="up")
    except BaseException:
        up.remove()
        raise
    return up


# ---------------------------------------------------------------------------------------------
# Reading it all back (the demo, the check and the tests use these)


@dataclass
class LinkInfo:
    name: str
    index: int
    kind: str | None
    state: str
    up: bool
    master: str | None
    addresses: list[str]
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0


def links(netns: int | str | None = None, prefix: str = "") -> list[LinkInfo]:
    """Every link (RTM_GETLINK dump) with its kind, master, state, IPv4 addresses and counters."""
    with iproute(netns) as ipr:
        dump = list(ipr.link("dump"))
        names = {m["index"]: m.get("ifname") for m in dump}
        addrs: dict[int, list[str]] = {}
        for a in ipr.addr("dump", family=socket.AF_INET):
            addrs.setdefault(a["index"], []).append(f"{a.get('address')}/{a['prefixlen']}")
        out = []
        for m in dump:
            name = m.get("ifname")
            if not name.startswith(prefix):
                continue
            stats = m.get("stats64") or {}
            out.append(LinkInfo(name, m["index"], m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                                m.get("operstate") or "", bool(m["flags"] & 1), names.get(m.get("master")), addrs.get(m["index"], []),
                                stats.get("rx_packets", 0), stats.get("rx_bytes", 0),
                                stats.get("tx_packets", 0), stats.get("tx_bytes", 0)))
        return out


def routes(netns: int | str | None = None) -> list[str]:
    """The main routing table (RTM_GETROUTE dump, table 254) as `ip route` would print it."""
    with iproute(netns) as ipr:
        names = {m["index"]: m.get("ifname") for m in ipr.link("dump")}
        out = []
        for r in ipr.route("dump", family=socket.AF_INET, table=254):
            dst = f"{r.get('dst')}/{r['dst_len']}" if r.get("dst") else "default"
            via = f" via {r.get('gateway')}" if r.get("gateway") else ""
            out.append(f"{dst}{via} dev {names.get(r.get('oif'), r.get('oif'))}")
        return out


def link_stats(ifname: str, netns: int | str | None = None) -> LinkInfo | None:
    for link in links(netns):
        if link.name == ifname:
            return link
    return None


def ip_forwarding(ifname: str) -> bool:
    try:
        return Path(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding").read_text().strip() == "1"
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------------------------
# A running process with a network: what the demo, the tests and the notebook start


@dataclass
class NetContainer:
    """A process in new net (and UTS) namespaces, attached to a network. Not a full container: it
    keeps the host's filesystem, so it can run `python -m labctl.demos.nettool` (step 7 adds the rootfs)."""
    proc: Any
    attachment: Attachment

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str | None:
        return self.attachment.address

    def stop(self) -> None:
        try:
            self.proc.kill()
        finally:
            self.attachment.detach()

    def __enter__(self) -> "NetContainer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_container(argv: Sequence[str], name: str, mode: str = "bridge", publish: Iterable[str] = (),
                    network: Network | None = None, stdout: int | None = None) -> NetContainer:
    """spawn(argv) in new namespaces without starting it, attach its network from outside by PID,
    then let it exec: the program finds its network ready."""
    from labctl.kernel import namespaces
    kinds = ("uts", "net") if mode != "host" else ("uts",)
    proc = namespaces.spawn(list(argv), namespaces=kinds, hostname=name, start=False, stdout=stdout,
                            what=f"network demo container {name}")
    try:
        att = attach(proc.pid, name, mode, publish, network)
    except BaseException:
        proc.kill()
        raise
    container = NetContainer(proc, att)
    try:
        proc.start()
    except BaseException:
        container.stop()
        raise
    return container


def nettool_argv(*args: str) -> list[str]:
    import sys
    return [sys.executable, "-m", "labctl.demos.nettool", *args]


# ---------------------------------------------------------------------------------------------
# Measuring the path: two containers over the bridge vs two processes over the host's loopback


def measure_paths(count: int = 300, total_bytes: int = 32 << 20, network: Network | None = None) -> dict:
    """Round-trip times and throughput of the lab's TCP tool over the host's loopback and between two
    containers over the bridge, plus the packet and byte counters of each container's veth.

    Both ways the server is a separate process (`python -m labctl.demos.nettool serve`) and the client runs
    in this process (for the bridge, in a thread that joined the client container's namespace), so
    the only difference is the path: lo, or eth0 → veth → bridge → veth → eth0."""
    import subprocess as sp
    import time
    from labctl.demos import nettool
    results: dict[str, Any] = {"count": count, "total_bytes": total_bytes}
    server = sp.Popen(nettool_argv("serve", "--host", "127.0.0.1", "--port", "0"), stdout=sp.PIPE, text=True)
    rec = state.record_process(server.pid, "nettool loopback server")
    try:
        port = int(server.stdout.readline().split(":")[-1])
        results["loopback"] = {"rtt_us": nettool.measure_rtt("127.0.0.1", port, count),
                               "bytes_per_second": nettool.measure_throughput("127.0.0.1", port, total_bytes)}
    finally:
        server.kill()
        server.wait()
        rec.forget()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        srv = start_container(nettool_argv("serve", "--port", "7"), "lab-srv", network=network, stdout=devnull)
    finally:
        os.close(devnull)
    try:
        with start_container(["sleep", "120"], "lab-cli", network=network) as cli:
            before = {l.name: l for l in links(prefix="lab")}
            t0 = time.monotonic()
            results["bridge"] = in_netns(cli.pid, lambda: {
                "rtt_us": nettool.measure_rtt(srv.address, 7, count),
                "bytes_per_second": nettool.measure_throughput(srv.address, 7, total_bytes)})
            results["bridge"]["seconds"] = time.monotonic() - t0
            after = {l.name: l for l in links(prefix="lab")}
            counters = {}
            for who, box in (("server", srv), ("client", cli)):
                name = box.attachment.host_link
                b, a = before[name], after[name]
                counters[f"{name} ({who})"] = {"rx_packets": a.rx_packets - b.rx_packets,
                                               "tx_packets": a.tx_packets - b.tx_packets,
                                               "rx_bytes": a.rx_bytes - b.rx_bytes,
                                               "tx_bytes": a.tx_bytes - b.tx_bytes}
            results["veth_counters"] = counters
    finally:
        srv.stop()
    return results


def known_networks() -> list[Network]:
    """The default network, and every network with an allocation file in the state directory."""
    found = {default_network().bridge: default_network()}
    base = state.subdir("network")
    for path in sorted(base.glob("*/addresses.json")):
        bridge = path.parent.name
        if bridge not in found:
            subnet = _subnet_of(bridge)
            if subnet:
                found[bridge] = Network(bridge, subnet)
    return list(found.values())


def _subnet_of(bridge: str) -> str | None:
    """The subnet of an existing bridge, from its IPv4 address."""
    link = link_stats(bridge)
    if not link or not link.addresses:
        return None
    return str(ipaddress.IPv4Interface(link.addresses[0]).network)
