"""The network command (step 6): `labctl network [ls|rm|connect|disconnect]`, as `docker network ls|rm|
connect|disconnect`. Containers join a network with `labctl run --network bridge` (or a network's name)
and, running, one more with `connect`; the work is done in labctl/network and containers/networking.py.
Step 13: `labctl network create|rm -d overlay NAME`, an overlay network agreed in the cluster's store
(labctl/cluster/allocation.py).
"""
from __future__ import annotations

import argparse

from labctl.client.parsing import Commands
from labctl.errors import LabError, require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("network", cmd_network, "list the lab's bridge networks, remove one (bridge, nftables table), "
                     "connect a running container to one and disconnect it; overlay networks (step 13)",
                     ["labctl network ls", "labctl network rm              # lab0 and table labctl",
                      "labctl network rm --bridge labtest6",
                      "labctl network connect web c1  # c1 gets eth1 on network web's bridge",
                      "labctl network disconnect web c1",
                      "labctl network create -d overlay web   # step 13: a subnet and a VNI agreed in etcd",
                      "labctl network rm -d overlay web"])
    p.add_argument("--bridge", help="the bridge (default: lab0, or $LABCTL_BRIDGE)")   # `labctl network --bridge X`
    subcommands = p.add_subparsers(dest="action", metavar="ACTION")
    for action, text in (("ls", "list the networks (default)"), ("rm", "remove a network"),
                         ("create", "create an overlay network (step 13: -d overlay)")):
        q = subcommands.add_parser(action, help=text)
        if action != "ls":
            q.add_argument("name", nargs="?", help="the overlay network's name")
        q.add_argument("--bridge", default=argparse.SUPPRESS, help="the bridge (default: lab0, or $LABCTL_BRIDGE)")
        q.add_argument("-d", "--driver", choices=("bridge", "overlay"), default="bridge",
                       help="overlay: a network of the lab cluster (`labctl cluster up`), kept in its etcd")
        if action == "create":
            q.add_argument("--subnet", help="the subnet (default: a free /24 of 10.207.0.0/16)")
            q.add_argument("--vni", type=int, help="the VXLAN network identifier (default: the lowest free from 4096)")
    for action in ("connect", "disconnect"):
        q = subcommands.add_parser(action, help=f"{action} a running container (NETWORK CONTAINER)")
        q.add_argument("operands", nargs="*", metavar="NETWORK CONTAINER")


def cmd_network(args) -> int:
    from labctl import network, ui
    require_root("`labctl network`")
    args.action = args.action or "ls"
    if args.action in ("connect", "disconnect"):
        return _connect(args)
    if getattr(args, "driver", "bridge") == "overlay" or args.action == "create":
        return _overlay(args)
    if args.action == "rm":
        net = network.Network(args.bridge, network.DEFAULT_SUBNET) if args.bridge else network.default_network()
        network.remove_network(net)
        ui.ok(f"removed bridge {net.bridge} and nftables table {net.table} (if they were there)")
        return 0
    rows = []
    for net in network.known_networks():
        link = network.link_stats(net.bridge)
        users = network.allocations(net)
        rows.append((net.bridge, " ".join(link.addresses) if link else "(not created)", net.table,
                     ", ".join(f"{e['name']}={a}" for a, e in sorted(users.items())) or "-"))
    ui.table(("bridge", "address", "nftables table", "containers"), rows, title="The lab's networks")
    return 0


def _overlay(args) -> int:
    from labctl import ui
    from labctl.cluster import allocation
    from labctl.cluster.store import Store
    if args.driver != "overlay":
        raise LabError("`labctl network create` makes overlay networks only",
                       "give -d overlay (bridge networks: `docker network create NAME` through the daemon)")
    if args.action != "ls" and not getattr(args, "name", None):
        raise LabError(f"`labctl network {args.action} -d overlay` needs the network's name",
                       f"labctl network {args.action} -d overlay NAME")
    store = Store()
    if args.action == "create":
        record = allocation.create_network(store, args.name, args.subnet, args.vni)
        ui.ok(f"overlay network {record['Name']}: subnet {record['subnet']}, VNI {record['vni']}")
    elif args.action == "rm":
        record = allocation.remove_network(store, args.name)
        ui.ok(f"removed overlay network {record['Name']} (VNI {record['vni']}, {record['subnet']})")
    else:
        rows = [(n, r["subnet"], str(r["vni"]), r["Id"][:12]) for n, r in sorted(allocation.networks(store).items())]
        ui.table(("network", "subnet", "VNI", "id"), rows, title="Overlay networks in the cluster's store")
    return 0


def _connect(args) -> int:
    """`labctl network connect|disconnect NETWORK CONTAINER`: the functions the daemon's
    POST /networks/{id}/connect and /disconnect call (containers/networking.py)."""
    from labctl import ui
    from labctl.containers import networking, store
    if len(args.operands) != 2:
        raise LabError(f"`labctl network {args.action}` takes a network and a container",
                       f"e.g. `labctl network {args.action} bridge c1`")
    name, ref = args.operands
    container = store.find(ref)
    info = getattr(networking, args.action)(container, name)
    ui.ok(f"{container.name} {'joined' if args.action == 'connect' else 'left'} network {name}"
          f" ({info.get('interface', 'eth0')}, {info.get('address')})")
    return 0
