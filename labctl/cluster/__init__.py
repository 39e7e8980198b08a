"""Step 13 (phase 1): several lab "hosts" on one machine, joined by an underlay, with etcd as their
shared store, as Docker's first multi-host networking had (dockerd --cluster-store=etcd://...).

    root network namespace (untouched but for /run/netns and /run/labctl/cluster)
    ┌────────────────────────────────────────────────────────────────────────────────────┐
    │ lab-underlay (netns)                                                               │
    │   labul0 (bridge) 10.206.0.254/24     etcd: client URLs 10.206.0.254:2379 and       │
    │   ├── labuh1 ─┐                             127.0.0.1:2379 (of this netns only)     │
    │   └── labuh2 ─┼──────────┐                                                         │
    │ lab-host1     │          │  lab-host2 (netns)                                      │
    │   eth0 10.206.0.1/24     │    eth0 10.206.0.2/24                                   │
    │   labctl daemon          │    labctl daemon                                        │
    │   /run/labctl/cluster/host1.sock   /run/labctl/cluster/host2.sock                  │
    └────────────────────────────────────────────────────────────────────────────────────┘

A host is a network namespace with its own `labctl daemon`: the daemon process joins the namespace
(setns(2) between fork and exec, what `ip netns exec` does without its private mount namespace), so
every socket it makes, every bridge and nftables table it creates, is the host's own. Its Unix socket
lives in the shared file system (/run/labctl/cluster/hostN.sock), so `docker` on the real host reaches
each one by DOCKER_HOST. What else the daemon keeps per host: its state directory (LABCTL_STATE_DIR =
<state>/cluster/hostN: containers, networks, journal, its log); bridges, routes and nftables tables are
per network namespace anyway (`docker network create` on host1 makes its bridge in lab-host1 only).
The cgroup tree is the machine's, shared: a host's containers' cgroups are <own cgroup>/labctl/labctl-
hostN-<ID> ($LABCTL_CGROUP_PREFIX, containers/resources.cgroup_name), so each says which host made it
(and two hosts may run containers of one name: names are per daemon); labctl-runtime's
/run/labctl-runtime is keyed by container ID, which is unique. `cluster down` removes a host's
containers by replaying the host's own journal inside the host's namespace (hosts.clean_host).

Each daemon registers itself in etcd: /labctl/hosts/<name> → {"address", "socket"}, put with a lease
(a TTL) that it keeps alive; a daemon that dies stops refreshing it, and etcd deletes the key when the
lease expires. That is how the other hosts learn a host is gone (Docker's discovery did the same).

Subnets: 10.203.0.0/24 is the default bridge, 10.204.0.0/30 the upstream link, 10.205.0.0/16 the
daemon's user networks; the underlay takes 10.206.0.0/24, which overlaps none.

One module per concern:
  __init__.py    the names and addresses (Host, UNDERLAY, ...), shared by the others
  underlay.py    the namespaces, the underlay bridge and each host's veth (pyroute2), and their removal
  etcd.py        the etcd process: started in the underlay namespace, stopped by PID, data dir removed
  store.py       a small etcd v3 client over its JSON gateway (HTTP, stdlib only; see its docstring)
  membership.py  in a host's daemon: register with a lease and keep it alive
  allocation.py  overlay networks: subnet, VNI and endpoint addresses agreed in etcd transactions
  vxlan.py       the overlay's data path on a host: bridge and VXLAN device, endpoints, FDB from etcd
  watch.py       following a network's endpoints (etcd's watch): FDB and neighbour entries kept current
  endpoint.py    a container on an overlay network: veth, address from etcd under the host's lease, /etc/hosts
  agent.py       in a host's daemon: one watch on every network's endpoints, reconciled on start
  hosts.py       `labctl cluster up|down|status`: the whole, journaled as one record for `labctl cleanup`
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from labctl import state

UNDERLAY_NS = "lab-underlay"
UNDERLAY_BRIDGE = "labul0"
UNDERLAY_SUBNET = "10.206.0.0/24"
UNDERLAY_PREFIXLEN = 24
STORE_ADDRESS = "10.206.0.254"          # the underlay bridge's address, where etcd listens
STORE_PORT = 2379
STORE_URL = f"http://{STORE_ADDRESS}:{STORE_PORT}"
RUN_DIR = "/run/labctl/cluster"         # the hosts' sockets and PID files
MAX_HOSTS = 8
DEFAULT_TTL = 10                        # seconds a host's lease lives without a refresh
HOSTS_PREFIX = "/labctl/hosts/"


@dataclass(frozen=True)
class Host:
    """Host number `index` (1..MAX_HOSTS): its namespace, address, socket and state directory."""
    index: int

    @property
    def name(self) -> str:
        return f"host{self.index}"

    @property
    def netns(self) -> str:
        return f"lab-{self.name}"

    @property
    def address(self) -> str:
        return f"10.206.0.{self.index}"

    @property
    def underlay_ifname(self) -> str:
        """The host's veth end on the underlay bridge (its other end is the host's eth0)."""
        return f"labuh{self.index}"

    @property
    def socket(self) -> str:
        return os.path.join(RUN_DIR, f"{self.name}.sock")

    @property
    def state_dir(self) -> str:
        return str(cluster_dir() / self.name)


def cluster_dir():
    """<state>/cluster: the hosts' state directories and etcd's data directory."""
    return state.state_dir() / "cluster"


def hosts_up() -> list[Host]:
    """The hosts whose namespaces exist now."""
    present = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    return [Host(i) for i in range(1, MAX_HOSTS + 1) if Host(i).netns in present]
