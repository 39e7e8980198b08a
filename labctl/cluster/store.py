"""A small etcd v3 client over etcd's JSON gateway: HTTP POSTs of JSON to /v3/..., standard library only.

Why not python3-etcd3 (Debian's, 0.12): it works with etcd 3.4, but it speaks gRPC, and gRPC's threads do
not survive fork(2); the daemon forks children that go on running Python (a container's supervisor,
double-forked), so a gRPC client inside it could hang them. etcd serves the same API as JSON too (its
grpc-gateway): keys and values travel base64-encoded, 64-bit numbers as strings.

    POST /v3/lease/grant       {"TTL": 10}                       → {"ID": "7587...", "TTL": "10"}
    POST /v3/kv/put            {"key": b64, "value": b64, "lease": ID}
    POST /v3/lease/keepalive   {"ID": ID}                        → {"result": {"TTL": "10"}} (no TTL: expired)
    POST /v3/lease/timetolive  {"ID": ID}                        → {"TTL": "7"}  (-1: expired)
    POST /v3/kv/range          {"key": b64, "range_end": b64}    → {"kvs": [{"key", "value", "lease"}]}
    POST /v3/kv/deleterange    {"key": b64}
    POST /v3/kv/txn            {"compare": [...], "success": [...], "failure": [...]}  → {"succeeded": true}

A transaction is how hosts agree without a lock: create() puts several keys only if none of them
exists (each compared on create_revision = 0, "never created, or deleted since"), all at once or not
at all, so of two hosts asking for one VNI or one address, exactly one gets it.

Store(url, netns=...) talks from inside a network namespace (a thread that joined it, netns.in_netns):
the CLI on the real host reaches etcd through the underlay namespace's own 127.0.0.1, so etcd never
listens on an address of the real host.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

from labctl.cluster import STORE_PORT, UNDERLAY_NS
from labctl.errors import LabError


#: No proxy, whatever $http_proxy says: the store is inside the lab, and so is every byte sent to it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


def prefix_end(prefix: str) -> str:
    """The range_end that makes a range a prefix: the prefix with its last byte plus one."""
    raw = prefix.encode()
    return raw[:-1].decode() + chr(raw[-1] + 1)


class Store:
    """One etcd endpoint; every method is one HTTP request (timeout: seconds per request)."""

    def __init__(self, url: str = f"http://127.0.0.1:{STORE_PORT}", netns: str | None = UNDERLAY_NS,
                 timeout: float = 5.0):
        self.url, self.netns, self.timeout = url.rstrip("/"), netns, timeout

    def call(self, path: str, body: dict) -> dict:
        """POST the JSON body to path; the answer as a dict. LabError when etcd cannot be reached."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})

        def send() -> dict:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return json.load(response)
        try:
            if self.netns is None:
                return send()
            from labctl.network.netns import in_netns
            return in_netns(self.netns, send)
        except (urllib.error.URLError, OSError) as exc:
            raise LabError(f"the cluster store (etcd at {self.url}) is unreachable: {exc}",
                           "is the cluster up? `labctl cluster status`, or `labctl cluster up N`") from None

    def grant(self, ttl: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": ttl})["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh the lease; its TTL, or 0 if it had expired already."""
        return int(self.call("/v3/lease/keepalive", {"ID": lease}).get("result", {}).get("TTL", 0))

    def time_to_live(self, lease: int) -> int:
        """Seconds left on the lease (-1: expired or unknown)."""
        return int(self.call("/v3/lease/timetolive", {"ID": lease}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        self.call("/v3/lease/revoke", {"ID": lease})

    def put(self, key: str, value: str, lease: int = 0) -> None:
        self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": lease})

    def get_prefix(self, prefix: str) -> list[tuple[str, str, int]]:
        """(key, value, lease ID) of every key under prefix, in key order."""
        answer = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [(_text(kv["key"]), _text(kv.get("value", "")), int(kv.get("lease", 0)))
                for kv in answer.get("kvs", [])]

    def delete(self, key: str) -> None:
        self.call("/v3/kv/deleterange", {"key": _b64(key)})

    def create(self, entries: dict[str, str], lease: int = 0) -> bool:
        """Put every key only if none of them exists: one transaction. Whether it happened."""
        compare = [{"key": _b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": 0} for k in entries]
        success = [{"request_put": {"key": _b64(k), "value": _b64(v), "lease": lease}} for k, v in entries.items()]
        return bool(self.call("/v3/kv/txn", {"compare": compare, "success": success}).get("succeeded"))

    def claim(self, key: str, value: str, lease: int, mine) -> bool:
        """Put key on lease if it does not exist, or if its value is one mine(value) accepts: then the
        transaction compares the value read (target VALUE), so nobody took the key in between. Whether
        the key is ours now; False when another holds it."""
        for _ in range(8):
            if self.create({key: value}, lease):
                return True
            current = [v for k, v, _ in self.get_prefix(key) if k == key]
            if not current:
                continue   # deleted between the two requests: try to create it again
            if not mine(current[0]):
                return False
            compare = [{"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(current[0])}]
            success = [{"request_put": {"key": _b64(key), "value": _b64(value), "lease": lease}}]
            if self.call("/v3/kv/txn", {"compare": compare, "success": success}).get("succeeded"):
                return True
        return False

    def delete_all(self, keys: list[str]) -> None:
        """Delete these keys in one transaction: all go together."""
        self.call("/v3/kv/txn", {"success": [{"request_delete_range": {"key": _b64(k)}} for k in keys]})


def healthy(url: str = f"http://127.0.0.1:{STORE_PORT}", netns: str | None = UNDERLAY_NS) -> bool:
    """GET /health answers {"health": "true"}."""
    def ask() -> bool:
        with _OPENER.open(url + "/health", timeout=1.0) as response:
            return json.load(response).get("health") == "true"
    try:
        if netns is None:
            return ask()
        from labctl.network.netns import in_netns
        return in_netns(netns, ask)
    except (OSError, ValueError):
        return False
