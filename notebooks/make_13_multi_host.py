"""Writes notebooks/13-multi-host.ipynb (without outputs). Run: python notebooks/make_13_multi_host.py [OUTPUT]"""
from nbformat.v4 import new_code_cell, new_markdown_cell

from nbwriter import write_notebook

cells = [
 new_markdown_cell("""# Step 13 — multi-host: an overlay network over VXLAN

Two machines share no bridge: they share an *underlay* (here: a bridge in the namespace `lab-underlay`),
and an overlay network is an Ethernet carried inside it, in UDP packets to port 4789 with a 24-bit
network identifier (the VNI, RFC 7348). This notebook first joins two namespaces by VXLAN with the
reference solution of `labctl check 13` and reads a packet on the wire; then it starts a cluster of two
lab hosts (`labctl cluster up 2`: a namespace and a `labctl daemon` each, and etcd), creates an overlay
network through host1's daemon, runs a server container on host1 and a client container on host2,
measures what the overlay costs against loopback and a bridge, and kills a host's daemon to watch its
container leave etcd and the other host's FDB when its lease expires. It uses the same library as `labctl step 13` and `labctl check 13`."""),
 new_code_cell("""%matplotlib inline
from labctl.demos import clusterdemo, multihost
from labctl.plots import multihost as plots
from labctl.steps import s13_multihost"""),
 new_markdown_cell("""## 1. Two namespaces, one VXLAN link, by hand
`multihost.two_namespaces()` makes `lab-c13-a` and `lab-c13-b` joined by a veth pair (the underlay,
10.211.0.0/24). The reference solution makes a VXLAN device in each (VNI 42, port 4789, learning off),
puts 10.212.0.1 and 10.212.0.2 on them, and programs the FDB: the all-zero MAC → the peer's underlay
address. An AF_PACKET socket on the underlay link catches what one ping sends."""),
 new_code_cell("""with multihost.two_namespaces() as (a, b):
    s13_multihost.reference(["42", a.netns, a.underlay, a.overlay, b.netns, b.underlay, b.overlay])
    for side in (a, b):
        dev = s13_multihost._vxlan_devices(side.netns)[0]
        print(side.netns, dev, s13_multihost.fdb_entries(side.netns, dev["index"]))
    capture = multihost.open_capture(a.netns, a.underlay_if)
    print("RTT (ms):", multihost.ping(a.netns, b.overlay_ip, count=3))
    for d in multihost.udp_seen(multihost.drain(capture)):
        print(f"UDP {d['outer_src']} -> {d['outer_dst']}:{d['dport']} VNI {d['vni']} | "
              f"{d.get('inner_type')} {d.get('inner_src', '')} -> {d.get('inner_dst', '')} ({d['length']} bytes)")
    capture.close()"""),
 new_markdown_cell("""## 2. A cluster of two hosts, one overlay network
`clusterdemo.cluster()` runs `labctl cluster up 2`, then talks to the hosts' daemons over their Unix
sockets as `docker -H unix://...` would: `network create -d overlay demo13` on host1 (subnet and VNI
agreed in etcd, in a transaction), `run -d --network demo13 --name srv busybox sh -c 'while true; do echo
pong | nc -l -p 80; done'` on host1 and `run -d --network demo13 --name cli busybox sleep 1000` on host2.
Each daemon plugs its container into the network (labctl/cluster/endpoint.py: a bridge and a VXLAN device
per host, the container's veth on the bridge, its address key in etcd on the host's lease), and each
host's agent programs the other's MAC in its FDB. The containers are read from the kernel through
`/proc/PID/ns/net` of their PID 1. Everything below runs inside the `with`; leaving it runs
`labctl cluster down`, which removes the containers with their hosts."""),
 new_code_cell("""with clusterdemo.cluster(ttl=5) as c:
    print("network", c.net["subnet"], "VNI", c.net["vni"])
    print("server", c.server, "\\nclient", c.client)
    print("cli asks srv:80 ->", clusterdemo.ask(c))
    print("host1's FDB", clusterdemo.fdb(c.hosts[0], c.net["vni"]), "host2's", clusterdemo.fdb(c.hosts[1], c.net["vni"]))
    inner, outer = clusterdemo.packet(c)
    for row in clusterdemo.packet_rows(inner, outer):
        print(f"{row[0]:10} {row[1]:40} {row[2]}")
    measured = clusterdemo.measure(c)
    lease = clusterdemo.kill_and_time_lease(c)
for path, m in measured.items():
    print(f"{path:9} median RTT {sorted(m['rtt'])[len(m['rtt']) // 2] * 1000:.0f} µs, TCP {m['mibs']:.0f} MiB/s")
print("after SIGKILL of PID", lease["pid"], {k: round(v, 1) for k, v in lease["gone"].items()}, "seconds")"""),
 new_markdown_cell("""## 3. What the overlay costs, and how long a dead host lingers
Each overlay packet crosses two more veth pairs, two bridges and two VXLAN devices, and is wrapped and
unwrapped once (50 bytes); the bridge path is one veth pair each way and a bridge. A daemon killed with
SIGKILL refreshes its host's lease no more: etcd deletes its keys, its container's endpoint key with them,
when the TTL runs out, not before; host1's watch sees the delete and drops cli's MAC from its FDB."""),
 new_code_cell("""plots.rtt_and_throughput(measured);"""),
 new_code_cell("""plots.lease_timeline(lease, 5);"""),
]

write_notebook(cells, "13-multi-host.ipynb")
