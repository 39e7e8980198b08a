"""The container's network (step 6), through labctl.network: the one integration point with that module.

  none    a new network namespace with only `lo` (PID 1 brings it up itself: no netlink library needed)
  host    no network namespace: the host's interfaces, ports and /etc/hosts
  bridge  a new network namespace, a veth pair to the lab bridge, an address, NAT and published ports,
          attached by labctl from outside (by PID 1's PID) before the command runs

/etc/hosts, /etc/hostname and /etc/resolv.conf are files in the container's directory, bind-mounted by
PID 1 before the network exists; in bridge mode they are rewritten in place (the bind mount pins the
inode, so no rename) once the address is known, still before the command runs.
"""
from __future__ import annotations


from labctl.errors import LabError

MODES = ("none", "host", "bridge")


def needs_namespace(mode: str) -> bool:
    if mode not in MODES:
        raise LabError(f"unknown network mode {mode!r}", "use --network none, host or bridge")
    return mode != "host"


def etc_files(mode: str, hostname: str) -> dict[str, str]:
    """The first content of /etc/hosts, /etc/hostname and /etc/resolv.conf. Bridge and host mode take
    it from network.etc_contents; mode none writes the same three lines itself, because importing
    labctl.network (ipaddress, subprocess, threading) would cost `labctl run` ~25 ms for nothing."""
    if mode != "none":
        from labctl.network import etc_contents
        return etc_contents(hostname, None, "none" if mode == "bridge" else mode, hostname)
    return {"/etc/hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n",
            "/etc/resolv.conf": "# network mode none: no nameserver\n", "/etc/hostname": hostname + "\n"}


def attach(mode: str, container_name: str, hostname: str, pid: int, ports: list, files: dict[str, str]) -> dict | None:
    """Bridge mode: connect PID 1's network namespace, rewrite the /etc files with its address.
    Returns what detach() needs (stored in the container's record), None for the other modes."""
    if mode != "bridge":
        if ports:
            raise LabError("published ports need --network bridge", "add --network bridge, or drop -p")
        return None
    from labctl import network
    att = network.attach(pid, container_name, mode, publish=[f"{p.host_port}:{p.container_port}/{p.protocol}"
                                                             for p in ports], hostname=hostname)
    for target, text in att.etc_text().items():
        if target in files:
            with open(files[target], "w") as f:   # in place: PID 1 has this inode bind-mounted
                f.write(text)
    return att.to_dict()


def detach(info: dict | None) -> None:
    """Undo what attach() made (veth, DNAT rules, the address; the bridge if it was the last user), from
    any process: network.Attachment.from_dict finds its journal records again."""
    if not info:
        return
    from labctl import network
    network.Attachment.from_dict(info).detach()
