"""The network command (step 6): `labctl network [ls|rm]`, as `docker network ls|rm`. Containers join
a network with `labctl run --network bridge`; the work is done in labctl/network.
"""
from __future__ import annotations

from labctl.client.parsing import Commands
from labctl.errors import require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("network", cmd_network, "list the lab's bridge networks, or remove one (bridge, nftables table)",
                     ["labctl network ls", "labctl network rm              # lab0 and table labctl",
                      "labctl network rm --bridge labtest6"])
    p.add_argument("action", choices=("ls", "rm"), nargs="?", default="ls")
    p.add_argument("--bridge", help="the bridge (default: lab0, or $LABCTL_BRIDGE)")


def cmd_network(args) -> int:
    from labctl import network, ui
    require_root("`labctl network`")
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
