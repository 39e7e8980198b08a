"""The /etc files a container gets with its network: /etc/hosts, /etc/resolv.conf and /etc/hostname,
written as Docker writes them (libnetwork's etchosts and resolvconf packages). The container's root
bind-mounts them, so they can be rewritten once the container's address is known.

`labctl run` calls this for every container, in every mode: it imports the standard library only.
"""
from __future__ import annotations

from pathlib import Path


def etc_contents(name: str, address: str | None, mode: str, hostname: str | None = None) -> dict[str, str]:
    """/etc/hosts, /etc/resolv.conf and /etc/hostname for a container, as Docker writes them."""
    hostname = hostname or name
    if mode == "host":
        hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1\tlocalhost\n"
    else:
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts += f"{address}\t{hostname}\n" if address else f"127.0.1.1\t{hostname}\n"
    if mode == "none":
        resolv = "# network mode none: no nameserver\n"
    else:
        # The host's nameservers, without the 127.x ones: in bridge mode the container's loopback
        # is its own, and a resolver listening on the host's 127.0.0.1 is not reachable from it.
        try:
            host_lines = Path("/etc/resolv.conf").read_text().splitlines()
        except OSError:
            host_lines = []
        keep = [l for l in host_lines if l.strip() and not l.startswith("#")
                and not (mode == "bridge" and l.split()[:1] == ["nameserver"] and l.split()[1:2]
                         and l.split()[1].startswith("127."))]
        resolv = "# written by labctl from the host's /etc/resolv.conf\n" + "\n".join(keep) + "\n"
    return {"/etc/hosts": hosts, "/etc/resolv.conf": resolv, "/etc/hostname": hostname + "\n"}
