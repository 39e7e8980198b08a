"""The network's nftables table: masquerade, the lab's egress guard, and DNAT for published ports.

One table per network (`labctl` for lab0, `labctl_<bridge>` for others), loaded with the network's
first container and deleted with its last, so two networks never touch each other's rules:

    table ip labctl
      chain prerouting   (nat, dstnat)   DNAT for published ports, packets from other namespaces
      chain output       (nat, -100)     the same DNAT, for packets the host itself sends
      chain postrouting  (nat, srcnat)   masquerade: containers leave with the host's address
      chain forward      (filter)        drop what a container sends to another lab bridge (networks are
                                         isolated, as Docker's DOCKER-ISOLATION chains do; the upstream's
                                         labu* link excepted) or to a link that is not the lab's

Scripts go to `nft -f -`, which applies a whole script or nothing; each container's DNAT rules carry a
comment naming the container's owner tag (rule_comment), which is how they are found again: to delete
them (delete_nft_rules), and to see which ports are taken (published_ports, for portcheck.py).
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

from labctl.errors import LabError
from labctl.network import Network
from labctl.network.ports import DEFAULT_HOST_IP, PortMapping

COMMENT_PREFIX = "labctl:"
#: The masquerade rule's comment; the rule counts what it rewrites (`counter`: packets and bytes).
MASQUERADE_COMMENT = "containers go out with the host's address"
#: The isolation rule's comment: what one network routes towards another lab bridge is dropped.
ISOLATION_COMMENT = "networks are isolated from each other"


def rule_comment(owner: str) -> str:
    """The comment on every DNAT rule of one attachment: how its rules are found again."""
    return f"{COMMENT_PREFIX}{owner}"


def nft(script: str) -> None:
    """Apply an nftables script atomically (`nft -f -`: all of it or nothing)."""
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"nft refused the lab's rules: {result.stderr.strip().splitlines()[0] if result.stderr else '?'}",
                       "is nftables available (`nft list tables`) and are you root?")


def nft_table_json(table: str) -> list[dict] | None:
    """The table's objects as `nft -j list table ip NAME` reports them (None when there is no such table)."""
    result = subprocess.run(["nft", "-j", "list", "table", "ip", table], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)["nftables"]


def nft_table_text(table: str) -> list[str]:
    """The table as nft prints it, one line per chain header or rule (empty when missing)."""
    result = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True, text=True)
    return [line.rstrip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def table_script(net: Network) -> str:
    """The nft script that creates the network's table, its four chains and the rules every container shares."""
    bridge, subnet = net.bridge, net.subnet
    guard = "" if net.allow_egress else (
        f'    iifname "{bridge}" oifname != "lab*" drop comment "containers reach only the lab\'s own links"\n')
    return f"""table ip {net.table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" counter masquerade comment "{MASQUERADE_COMMENT}"
    oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade comment "host to a published port on 127.0.0.1"
    oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade comment "a container to its own published port"
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{bridge}" oifname "lab*" oifname != "{bridge}" oifname != "labu*" drop comment "{ISOLATION_COMMENT}"
{guard}  }}
}}
"""


def publish_ports(net: Network, address: str, ports: Sequence[PortMapping], comment: str) -> None:
    """DNAT HOST_PORT on any of the host's addresses to ADDRESS:CONTAINER_PORT.

    Two hooks, because they see different traffic: prerouting sees packets arriving from other
    namespaces and machines; packets the host itself sends to 127.0.0.1:8080 or to its own
    addresses never pass prerouting, only output. DNAT in output changes the destination after the
    source (127.0.0.1 for loopback) was chosen; the kernel refuses to route 127.0.0.0/8 sources out of
    a real interface unless route_localnet is set on it (we set it on the bridge only), and the
    masquerade rule for 127.0.0.0/8 in postrouting gives the packet the bridge's address, so the
    container can answer. Packets from other machines arrive on eth0, where the lab leaves
    forwarding off: published ports answer the host, the containers and the lab's upstream only.
    Docker does the same with userland-proxy=false; by default it runs
    docker-proxy, a userspace process per port that accepts on the host and copies bytes. The kernel
    way needs no process to supervise, and conntrack shows every connection.

    The default host IP (127.0.0.1, what `ps` shows) matches every address of the host; another one
    (`-p 10.0.0.5:8080:80`, checked to be the host's by portcheck.py) matches that address only."""
    lines = []
    for port in ports:
        daddr = "fib daddr type local" if port.host_ip == DEFAULT_HOST_IP else f"ip daddr {port.host_ip}"
        match = f"{daddr} {port.protocol} dport {port.host_port}"
        target = f'dnat to {address}:{port.container_port} comment "{comment}"'
        lines += [f"add rule ip {net.table} prerouting {match} {target}",
                  f"add rule ip {net.table} output {match} {target}"]
    if lines:
        nft("\n".join(lines) + "\n")


def delete_nft_table(table: str) -> None:
    """`nft delete table ip TABLE`, tolerating a table already gone."""
    subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)


def delete_nft_rules(table: str, comment: str) -> None:
    """Delete the rules of the table that carry this comment (one container's published ports)."""
    objects = nft_table_json(table) or []
    script = [f"delete rule ip {table} {o['rule']['chain']} handle {o['rule']['handle']}"
              for o in objects if "rule" in o and o["rule"].get("comment") == comment]
    if script:
        subprocess.run(["nft", "-f", "-"], input="\n".join(script) + "\n", capture_output=True, text=True)


def published_ports() -> list[tuple[PortMapping, str]]:
    """Every port the lab's DNAT rules publish, in every lab table (`nft -j list ruleset ip`), as
    (PortMapping with the container's port 0, the owner tag from the rule's comment)."""
    result = subprocess.run(["nft", "-j", "list", "ruleset", "ip"], capture_output=True, text=True)
    found = []
    for obj in json.loads(result.stdout or '{"nftables": []}')["nftables"] if result.returncode == 0 else []:
        rule = obj.get("rule")
        if not rule or not rule["table"].startswith("labctl") or rule["chain"] != "output":
            continue   # (each port has a prerouting twin of its output rule: count it once)
        host_ip, protocol, host_port = DEFAULT_HOST_IP, None, None
        for expr in rule.get("expr", []):
            left, right = expr.get("match", {}).get("left", {}), expr.get("match", {}).get("right")
            payload = left.get("payload", {}) if isinstance(left, dict) else {}
            if payload.get("field") == "daddr":
                host_ip = right
            elif payload.get("field") == "dport":
                protocol, host_port = payload.get("protocol"), right
        if protocol and isinstance(host_port, int):
            owner = rule.get("comment", "").removeprefix(COMMENT_PREFIX)
            found.append((PortMapping(host_port, 0, protocol, host_ip), owner))
    return found
