"""Following an overlay network's endpoints as they come and go: etcd's watch, over its JSON gateway.

    POST /v3/watch {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end)}}
    ← one JSON object per event batch, streamed on the same response for as long as it is open:
      {"result": {"events": [{"type": "PUT"|"DELETE", "kv": {"key": b64, "value": b64}}]}}

EndpointWatch(host, network) programs the host's VXLAN device from that stream: first every endpoint
that exists (vxlan.sync), then, for each event about another host's endpoint, a PUT adds its FDB entry
(MAC → that host's underlay address) and its neighbour entry (IP → MAC), a DELETE removes both (the
MAC follows from the address: vxlan.mac_for). The stream's socket is opened inside the host's network
namespace, so the watch reaches etcd over the host's own underlay link, as the host's daemon would.
"""
from __future__ import annotations

import base64
import contextlib
import json
import threading

from labctl.cluster import STORE_URL, Host
from labctl.cluster.store import _OPENER, Store, prefix_end
from labctl.cluster.vxlan import NTF_SELF, NUD_PERMANENT, mac_for, overlay_netns, sync, vxlan_name


class EndpointWatch:
    """A thread that keeps one host's FDB and neighbour entries for one overlay network current."""

    def __init__(self, host: Host, network: str):
        import urllib.request
        self.host, self.network = host, network
        self.store = Store(STORE_URL, netns=host.netns)
        self.prefix = f"/labctl/overlay/ip/{network}/"
        body = {"create_request": {"key": base64.b64encode(self.prefix.encode()).decode(),
                                   "range_end": base64.b64encode(prefix_end(self.prefix).encode()).decode()}}
        self._request = urllib.request.Request(STORE_URL + "/v3/watch", data=json.dumps(body).encode(),
                                               headers={"Content-Type": "application/json"})
        self._response = None
        self._thread = threading.Thread(target=self._run, name=f"watch {network} on {host.name}", daemon=True)
        self.applied = 0   # events applied so far

    def start(self) -> "EndpointWatch":
        from labctl.network.netns import in_netns
        self._response = in_netns(self.host.netns, _OPENER.open, self._request)   # its socket: in the host
        first = json.loads(self._response.readline())   # the watch is created: no event is missed from here
        assert first.get("result", {}).get("created"), first
        sync(self.store, self.host, self.network)
        self._thread.start()
        return self

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):   # the stream closed by stop()
            for line in self._response:
                for event in json.loads(line).get("result", {}).get("events", []):
                    self._apply(event)

    def _apply(self, event: dict) -> None:
        from labctl.network.netlink import iproute
        from pyroute2.netlink.exceptions import NetlinkError
        kv = event["kv"]
        address = base64.b64decode(kv["key"]).decode()[len(self.prefix):]
        value = json.loads(base64.b64decode(kv["value"])) if kv.get("value") else {}
        if value.get("host") == self.host.name:
            return   # our own endpoint: the bridge knows it
        vni = next(r for k, v, _ in self.store.get_prefix("/labctl/networks/" + self.network)
                   for r in [json.loads(v)])["vni"]
        with iproute(overlay_netns(self.host, vni)) as ns:
            vx = ns.link_lookup(ifname=vxlan_name(vni))[0]
            if event.get("type") == "DELETE":
                with contextlib.suppress(NetlinkError):
                    ns.fdb("del", ifindex=vx, lladdr=mac_for(address), flags=NTF_SELF)
                with contextlib.suppress(NetlinkError):
                    ns.neigh("del", dst=address, lladdr=mac_for(address), ifindex=vx)
            elif "mac" in value:
                ns.fdb("replace", ifindex=vx, lladdr=value["mac"], dst=value["underlay"], flags=NTF_SELF,
                       state=NUD_PERMANENT)
                ns.neigh("replace", dst=address, lladdr=value["mac"], ifindex=vx, state="permanent")
        self.applied += 1

    def stop(self) -> None:
        """Close the stream (etcd cancels the watch with it); the thread ends."""
        if self._response is not None:
            with contextlib.suppress(OSError):
                self._response.fp.raw._sock.shutdown(2)
            self._response.close()
        self._thread.join(timeout=5)
