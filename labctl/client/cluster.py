"""The cluster command (step 13): `labctl cluster up N | down | status`, several lab hosts on one
machine, each a network namespace with its own daemon, joined by an underlay, with etcd as their
store (Docker's --cluster-store). The work is done in labctl/cluster."""
from __future__ import annotations

from labctl.client.parsing import Commands
from labctl.errors import require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("cluster", cmd_cluster,
                     "lab hosts: network namespaces with a daemon each, an underlay, etcd as the cluster store",
                     ["labctl cluster up 2        # host1, host2 on 10.206.0.0/24, etcd on 10.206.0.254",
                      "DOCKER_HOST=unix:///run/labctl/cluster/host1.sock docker version",
                      "labctl cluster status      # the hosts registered in etcd, with their leases",
                      "labctl cluster down"])
    p.add_argument("action", choices=("up", "down", "status"), nargs="?", default="status")
    p.add_argument("count", nargs="?", type=int, default=2, help="how many hosts (up; default 2)")
    p.add_argument("--ttl", type=int, default=None, metavar="SECONDS",
                   help="the hosts' lease TTL in etcd (default 10): how long a dead host stays listed")


def cmd_cluster(args) -> int:
    from labctl import ui
    from labctl.cluster import DEFAULT_TTL, hosts
    require_root("`labctl cluster`")
    if args.action == "up":
        made = hosts.up(args.count, args.ttl or DEFAULT_TTL)
        for host in made:
            ui.ok(f"{host.name}: netns {host.netns}, {host.address}, DOCKER_HOST=unix://{host.socket}")
        return 0
    if args.action == "down":
        ui.ok("cluster removed: daemons, etcd, namespaces, data" if hosts.down() else "no cluster was up")
        return 0
    info = hosts.status()
    if not info["namespaces"]:
        ui.say("no cluster is up (`labctl cluster up 2`)")
        return 1
    etcd = info["etcd"]
    ui.say(f"etcd: {'PID ' + str(etcd['pid']) if etcd else 'NOT running'}; namespaces: {' '.join(info['namespaces'])}")
    rows = [(r["name"], r["value"], f"{r['lease']:x}", str(r["ttl"])) for r in info["registered"]]
    ui.table(("host", "registration", "lease", "TTL left (s)"), rows, title="Hosts registered in etcd")
    return 0
