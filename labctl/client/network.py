"""The network command (step 6): `labctl network [ls|rm|connect|disconnect]`, as `docker network ls|rm|
connect|disconnect`. Containers join a network with `labctl run --network bridge` (or a network's name)
and, running, one more with `connect`; the work is done in labctl/network and containers/networking.py.
"""
from __future__ import annotations

from labctl.client.parsing import Commands
from labctl.errors import require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("network", cmd_network, "list the lab's bridge networks, remove one (bridge, nftables table), "
                     "or connect a running container to one and disconnect it",
                     ["labctl network ls", "labctl network rm              # lab0 and table labctl",
                      "labctl network rm --bridge labtest6",
                      "labctl network connect web c1  # c1 gets eth1 on network web's bridge",
                      "labctl network disconnect web c1"])
    p.add_argument("action", choices=("ls", "rm", "connect", "disconnect"), nargs="?", default="ls")
    p.add_argument("operands", nargs="*", metavar="NETWORK CONTAINER", help="for connect and disconnect")
    p.add_argument("--bridge", help="the bridge (default: lab0, or $LABCTL_BRIDGE)")


def cmd_network(args) -> int:
    from labctl import network, ui
    require_root("`labctl network`")
    if args.action in ("connect", "disconnect"):
        return _connect(args)
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


def _connect(args) -> int:
    """`labctl network connect|disconnect NETWORK CONTAINER`: the functions the daemon's
    POST /networks/{id}/connect and /disconnect call (containers/networking.py)."""
    from labctl import ui
    from labctl.containers import networking, store
    from labctl.errors import LabError
    if len(args.operands) != 2:
        raise LabError(f"`labctl network {args.action}` takes a network and a container",
                       f"e.g. `labctl network {args.action} bridge c1`")
    name, ref = args.operands
    container = store.find(ref)
    info = getattr(networking, args.action)(container, name)
    ui.ok(f"{container.name} {'joined' if args.action == 'connect' else 'left'} network {name}"
          f" ({info.get('interface', 'eth0')}, {info.get('address')})")
    return 0
