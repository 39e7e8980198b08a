"""In a cluster host's daemon (step 13): the overlay data path kept equal to what etcd says, always.

    start():  1. open one etcd watch on /labctl/overlay/ip/ (every network's endpoints), so that no
                 change made from here on is missed;
              2. reconcile: for every overlay network, its namespace on this host (vxlan.join), an FDB
                 entry (MAC → host) and a neighbour entry (IP → MAC) for each endpoint on another host,
                 and every such entry etcd no longer has removed (a daemon that was down missed the
                 DELETEs); the /etc/hosts of this host's containers on it rewritten;
              3. a thread applies each event: PUT of another host's endpoint adds its entries, DELETE
                 removes them; either way this host's containers on that network get a new /etc/hosts.

One watch for all networks rather than one per network (watch.py's EndpointWatch): a network created
later needs no new stream, and its namespace is made on its first event. A watch that breaks (etcd
restarted) is opened again, and the reconcile runs again, since events may have been lost meanwhile.
"""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import urllib.request

from labctl.cluster import vxlan
from labctl.cluster.allocation import networks
from labctl.cluster.endpoint import IP_PREFIX, store, write_hosts
from labctl.cluster.store import _OPENER, prefix_end
from labctl.errors import LabError

log = logging.getLogger("labctl.daemon")


class Agent:
    """The thread of the module docstring, for the Host this daemon serves."""

    def __init__(self, host):
        self.host, self.store = host, store()
        self._stop = threading.Event()
        self._response = None
        self._thread = threading.Thread(target=self._run, name="cluster overlay watch", daemon=True)
        self.applied = 0

    def start(self) -> "Agent":
        self._thread.start()
        return self

    def _open(self):
        body = {"create_request": {"key": base64.b64encode(IP_PREFIX.encode()).decode(),
                                   "range_end": base64.b64encode(prefix_end(IP_PREFIX).encode()).decode()}}
        request = urllib.request.Request(self.store.url + "/v3/watch", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        response = _OPENER.open(request)
        first = json.loads(response.readline())
        if not first.get("result", {}).get("created"):
            raise LabError(f"etcd refused the watch: {first}", "read etcd's log")
        return response

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._response = self._open()
                self.reconcile()
                for line in self._response:
                    for event in json.loads(line).get("result", {}).get("events", []):
                        self._apply(event)
            except Exception as exc:   # etcd away, a netlink error: open again, reconcile again
                if not self._stop.is_set():
                    log.warning("overlay watch: %r; again in 1 s", exc)
            self._stop.wait(1.0)

    def reconcile(self) -> None:
        """Step 2 of the module docstring, for every overlay network."""
        for name, net in networks(self.store).items():
            ov = vxlan.join(self.host, net)
            eps = vxlan.endpoints(self.store, name)
            remote = {a: e for a, e in eps.items() if e.get("host") != self.host.name and "mac" in e}
            with vxlan.iproute(ov) as ns:
                vx = ns.link_lookup(ifname=vxlan.vxlan_name(net["vni"]))[0]
                for entry in ns.fdb("dump", ifindex=vx):
                    mac = entry.get_attr("NDA_LLADDR")
                    if mac in {e["mac"] for e in remote.values()}:
                        continue
                    if entry.get_attr("NDA_DST"):   # the VXLAN device's own entry for an endpoint gone
                        with contextlib.suppress(Exception):
                            ns.fdb("del", ifindex=vx, lladdr=mac, flags=vxlan.NTF_SELF)
                    elif entry.get_attr("NDA_MASTER") and not entry["state"] & vxlan.NUD_PERMANENT:
                        with contextlib.suppress(Exception):   # what the bridge learned from it
                            ns.fdb("del", ifindex=vx, lladdr=mac, flags=vxlan.NTF_MASTER)
                for entry in ns.get_neighbours(ifindex=vx):
                    if entry.get_attr("NDA_DST") not in remote:
                        with contextlib.suppress(Exception):
                            ns.neigh("del", dst=entry.get_attr("NDA_DST"), ifindex=vx)
                for address, ep in remote.items():
                    program(ns, vx, address, ep)
            self.refresh_hosts(eps)

    def refresh_hosts(self, eps: dict[str, dict]) -> None:
        """Every /etc/hosts of this host's containers on the network: all its endpoints' names."""
        for address, ep in eps.items():
            if ep.get("host") == self.host.name and ep.get("hosts_file"):
                write_hosts(ep["hosts_file"], address, ep.get("hostname") or ep.get("name", ""), eps)

    def _apply(self, event: dict) -> None:
        key = base64.b64decode(event["kv"]["key"]).decode()[len(IP_PREFIX):]
        name, _, address = key.rpartition("/")
        value = json.loads(base64.b64decode(event["kv"]["value"])) if event["kv"].get("value") else {}
        net = networks(self.store).get(name)
        if net is None:
            return   # the network is being removed: its endpoints' keys go with it
        if value.get("host") != self.host.name:
            with vxlan.iproute(vxlan.join(self.host, net)) as ns:
                vx = ns.link_lookup(ifname=vxlan.vxlan_name(net["vni"]))[0]
                if event.get("type") == "DELETE":
                    unprogram(ns, vx, address)
                elif "mac" in value:
                    program(ns, vx, address, value)
        self.refresh_hosts(vxlan.endpoints(self.store, name))
        self.applied += 1

    def stop(self) -> None:
        self._stop.set()
        if self._response is not None:
            with contextlib.suppress(OSError, AttributeError):
                self._response.fp.raw._sock.shutdown(2)
            self._response.close()
        self._thread.join(timeout=5)


def program(ns, vx: int, address: str, ep: dict) -> None:
    """FDB: the endpoint's MAC → its host's underlay address; neighbour: its IP → its MAC (ARP proxy)."""
    ns.fdb("replace", ifindex=vx, lladdr=ep["mac"], dst=ep["underlay"], flags=vxlan.NTF_SELF,
           state=vxlan.NUD_PERMANENT)
    ns.neigh("replace", dst=address, lladdr=ep["mac"], ifindex=vx, state="permanent")


def unprogram(ns, vx: int, address: str) -> None:
    """Forget an endpoint that left: the VXLAN device's entry (where to send its frames), the bridge's
    (the port it learned the MAC on: left, it would outlive the endpoint by the bridge's ageing time,
    300 s, and a new container given that address on this host would get no frame until it sent one),
    and the neighbour entry."""
    from pyroute2.netlink.exceptions import NetlinkError
    for flags in (vxlan.NTF_SELF, vxlan.NTF_MASTER):
        with contextlib.suppress(NetlinkError):
            ns.fdb("del", ifindex=vx, lladdr=vxlan.mac_for(address), flags=flags)
    with contextlib.suppress(NetlinkError):
        ns.neigh("del", dst=address, lladdr=vxlan.mac_for(address), ifindex=vx)


def from_environment():
    """The daemon's Agent, if $LABCTL_CLUSTER_HOST names this daemon a cluster host; else None."""
    from labctl.cluster.endpoint import this_host
    host = this_host()
    return Agent(host) if host is not None else None
