"""The container's network (step 6), through labctl.network: the one integration point with that package.

  none    a new network namespace with only `lo` (PID 1 brings it up itself: no netlink library needed)
  host    no network namespace: the host's interfaces, ports and /etc/hosts
  bridge  a new network namespace, a veth pair to the lab bridge, an address, NAT and published ports,
          attached by labctl from outside (by PID 1's PID) before the command runs
  NAME    the same, on a user-defined network's bridge and subnet (`docker network create NAME`,
          labctl/network/named.py) instead of lab0's; on a cluster host, an overlay network's name
          (step 13): a veth into that network's bridge on this host, an address from etcd
          (labctl/cluster/endpoint.py)

A running container joins a further network and leaves it again with connect() and disconnect()
(`docker network connect|disconnect`, `labctl network connect|disconnect`): one more veth pair, its
end inside named eth1, eth2, ..., recorded in the container's record under "networks" {name: attachment}
so that teardown removes it with the first.

/etc/hosts, /etc/hostname and /etc/resolv.conf are files in the container's directory, bind-mounted by
PID 1 before the network exists; in bridge mode they are rewritten in place (the bind mount pins the
inode, so no rename) once the address is known, still before the command runs.

`labctl run` imports this module in every mode, so it takes from labctl.network only the modes and
the /etc files (standard library only); attach() and detach() load the rest (pyroute2) for bridge mode.
"""
from __future__ import annotations

from labctl.network import check_mode
from labctl.network.etcfiles import etc_contents


def bridged(mode: str) -> bool:
    """Whether the mode puts the container on a bridge: "bridge" (lab0) or a user-defined network's name."""
    return mode not in ("none", "host")


def needs_namespace(mode: str) -> bool:
    """Whether the mode gives the container a network namespace of its own (all but host)."""
    check_mode(mode)
    return mode != "host"


def etc_files(mode: str, hostname: str) -> dict[str, str]:
    """The first content of /etc/hosts, /etc/hostname and /etc/resolv.conf. In bridge mode the address
    is not known yet: the files start as mode none's and attach() rewrites them."""
    return etc_contents(hostname, None, "none" if bridged(mode) else mode, hostname)


def check_ports(ports: list) -> None:
    """Refuse, before anything is created, a published port a host service or another container has,
    and a host IP that is not the host's (labctl/network/portcheck.py; attach() checks again under the
    network's lock)."""
    if ports:
        from labctl.network.portcheck import refuse_taken_ports
        refuse_taken_ports(ports)


def attach(mode: str, container_name: str, hostname: str, pid: int, ports: list, files: dict[str, str]) -> dict | None:
    """Bridge mode or a user-defined network: connect PID 1's network namespace to that network's
    bridge (network.resolve: its Network), rewrite the /etc files with its address.
    Returns what detach() needs (stored in the container's record), None for the other modes.
    The caller first tears down the containers whose supervisor died (reconcile.py): their addresses and
    ports become free, and nothing of theirs can catch this container's traffic."""
    if not bridged(mode):
        check_mode(mode, ports)
        return None
    from labctl import network
    kind, net = network.resolve(mode)
    if kind == "overlay":   # step 13: a veth into the overlay's bridge on this host, an address from etcd
        from labctl.cluster import endpoint
        return endpoint.attach(mode, container_name, hostname, pid, files)
    att = network.attach(pid, container_name, kind, publish=ports, network=net, hostname=hostname)
    for target, text in att.etc_text().items():
        if target in files:
            with open(files[target], "w") as f:   # in place: PID 1 has this inode bind-mounted
                f.write(text)
    return att.to_dict()


def detach(info: dict | None) -> None:
    """Undo what attach() made (veth, DNAT rules, the address; the bridge if it was the last user), from
    any process: network.Attachment.from_dict finds its journal records again."""
    if not info:
        return
    if info.get("driver") == "overlay":
        from labctl.cluster import endpoint
        return endpoint.detach(info)
    from labctl import network
    network.Attachment.from_dict(info).detach()


def joined(container) -> dict[str, dict]:
    """{network name: its attachment} of the networks the container is on now: its own (the record's
    "network") and those connect() added."""
    out = {container.spec.network: container.state["network"]} if container.state.get("network") else {}
    return out | dict(container.state.get("networks") or {})


def overlay_attachments() -> list[dict]:
    """The overlay attachments (step 13) of the running containers: what a cluster host's daemon puts
    in etcd again on each new lease (labctl/cluster/endpoint.py reregister)."""
    from labctl.containers.store import all_containers
    return [info for c in all_containers() if c.is_alive()
            for info in joined(c).values() if info.get("driver") == "overlay"]


def connect(container, name: str) -> dict:
    """Put the running container also on the network NAME (lab0's "bridge", or a user-defined one): a
    veth pair from that network's bridge into PID 1's network namespace, the end inside named the first
    free ethN, an address from that network. Returns the attachment, as recorded."""
    from labctl import network
    from labctl.errors import LabError
    if container.status != "running" or not container.pid:
        raise LabError(f"container {container.name} is not running", f"start it first: `labctl start {container.name}`")
    if not bridged(container.spec.network):
        raise LabError(f"container {container.name} runs with --network {container.spec.network}: it has no "
                       "namespace of its own to connect" if container.spec.network == "host" else
                       f"container {container.name} runs with --network none: it stays without a network",
                       "run it with --network bridge or a network's name")
    if name in joined(container):
        raise LabError(f"container {container.name} is already on network {name}",
                       f"`labctl network disconnect {name} {container.name}` first")
    kind, net = network.resolve(name)
    if kind != "bridge":
        raise LabError(f"a running container cannot join network {name!r}", "give bridge or a user-defined network")
    interface = _free_interface(container.pid)
    att = network.attach(container.pid, container.name, kind, network=net, interface=interface)
    info = att.to_dict() | {"interface": interface}
    container.update(networks=dict(container.state.get("networks") or {}) | {name: info})
    return info


def _free_interface(pid: int) -> str:
    """eth1, eth2, ...: the first name no link in the process's network namespace has."""
    from labctl.network.netlink import iproute
    from labctl.network.netns import netns_path
    with iproute(netns_path(pid)) as ns:
        taken = {link.get_attr("IFLA_IFNAME") for link in ns.get_links()}
    return next(f"eth{n}" for n in range(1, 100) if f"eth{n}" not in taken)


def disconnect(container, name: str) -> dict:
    """Take the container off the network NAME: its veth pair deleted (the end inside goes with it), its
    address released. Its own network too, as Docker allows: it is left with `lo` only."""
    from labctl.errors import LabError
    info = joined(container).get(name)
    if info is None:
        raise LabError(f"container {container.name} is not on network {name}",
                       f"`docker inspect {container.name}` lists its networks")
    detach(info)
    others = dict(container.state.get("networks") or {})
    if others.pop(name, None) is not None:
        container.update(networks=others)
    else:
        container.update(network=None)
    return info
