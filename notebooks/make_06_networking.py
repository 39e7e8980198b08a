"""Writes notebooks/06-networking.ipynb (without outputs). Run: python notebooks/make_06_networking.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
    new_markdown_cell("""# Step 6 — container networking

A new network namespace has only `lo`, down. Docker's default network gives each container a **veth
pair** — one end on a **bridge** on the host, the other moved into the container as `eth0` — an address
from the bridge's subnet, a default route via the bridge, **masquerade** (source NAT) to go out, and
**DNAT** for published ports. This notebook builds exactly that with `labctl.network` (pyroute2's
netlink calls and one nftables table), reads every object back from the kernel, and measures what the
bridge costs compared with the host's loopback.

Run as root (the lab's VM). Everything is removed at the end of each cell that creates it."""),
    new_code_cell("""from labctl import network
from labctl.demos import nettool
from labctl.demos.network import measure_paths, start_container
from labctl.plots import network as plots

net = network.default_network()
print(f"bridge {net.bridge}, subnet {net.subnet}, gateway {net.gateway}, nftables table {net.table}")"""),
    new_markdown_cell("""## One container, and what the kernel shows

`start_container` spawns a process in new net and UTS namespaces *without letting it run*, attaches
its network from outside by PID (`network.attach`), then lets it exec. Below: the host's `lab*` links
(the bridge and the container's veth, whose master is the bridge), the links and routes inside the
container's namespace, and the nftables table with the DNAT rules for `-p 8080:80`."""),
    new_code_cell("""import socket
with socket.socket() as s:   # a free host port, so the DNAT rule captures nobody else's connections
    s.bind(("0.0.0.0", 0)); port = s.getsockname()[1]

with start_container(["sleep", "30"], "web", publish=[f"{port}:80"], network=net) as web:
    print("host links:")
    for link in [l for l in network.links(prefix="lab") if net.bridge in (l.name, l.master)]:
        print(f"  {link.name:14} kind={link.kind:7} master={link.master or '-':6} up={link.up} {' '.join(link.addresses)}")
    print(f"inside /proc/{web.pid}/ns/net:")
    for link in network.links(web.pid):
        print(f"  {link.name:5} kind={link.kind or '-':5} up={link.up} {' '.join(link.addresses)}")
    for route in network.routes(web.pid):
        print("  route:", route)
    print("\\n".join(network.nft_table_text(net.table)))
    print(web.attachment.etc_text()["/etc/hosts"])"""),
    new_markdown_cell("""## NAT, seen from the other side

`create_upstream` makes a named namespace (`lab-up-lab0`) on its own subnet, linked to the host by a
veth pair: a stand-in for the internet. It has no route to the containers' subnet, yet it can answer
them: masquerade makes their connections arrive from the host's address on its link."""),
    new_code_cell("""with network.create_upstream(*network.upstream_for(net)) as up, \\
        nettool.Server(nettool.listen("0.0.0.0", 7, lambda: network.socket_in_netns(up.netns))), \\
        start_container(["sleep", "30"], "client", network=net) as client:
    print("upstream's routes:", network.routes(up.netns))
    seen = network.in_netns(client.pid, nettool.whoami, up.address, 7)
    print(f"the container {client.address} connected to {up.address}; upstream saw it come from {seen}")
    print(f"the host's address on the upstream link is {up.host_address}")"""),
    new_markdown_cell("""## The packet path, and the NAT rewrite the kernel recorded
One more connection from a container to the upstream. The masquerade rule counts the packets it
matched (`counter`); conntrack keeps the connection's original tuple and its reply tuple, read here by
netlink (what `conntrack -L` shows): the reply goes to the host's address, and conntrack rewrites it back."""),
    new_code_cell("""from labctl.demos.natpath import nat_exchange
path = nat_exchange(net)
print(path["rule"])
print("conntrack:", path["conntrack"])
plots.packet_path(path);"""),
    new_markdown_cell("""## What the bridge costs

The lab's TCP tool (`python -m labctl.demos.nettool`) measures round-trip time (64-byte ping-pongs on one
connection) and bulk throughput, first between two processes over the host's loopback, then between two
containers over eth0 → veth → bridge → veth → eth0. The veth counters (`IFLA_STATS64`) show every
packet of it crossing the host ends; bulk data travels in large GSO segments, so there are far fewer
packets than 1500-byte frames would need."""),
    new_code_cell("""results = measure_paths(count=500, total_bytes=64 << 20, network=net)
for key in ("loopback", "bridge"):
    r = results[key]
    times = sorted(r["rtt_us"])
    print(f"{key:8}: median RTT {times[len(times) // 2]:.1f} µs, throughput {r['bytes_per_second'] / 2**20:.0f} MiB/s")"""),
    new_code_cell("""plots.rtt(results);"""),
    new_code_cell("""plots.throughput(results);"""),
    new_code_cell("""plots.veth_counters(results);"""),
    new_markdown_cell("""Try next: `labctl step 6` runs the same live in the terminal, and `lab/06-networking/exercise.py`
asks you to plug a namespace into a bridge yourself (`labctl check 6` judges it)."""),
]

write_notebook(cells, "06-networking.ipynb")
