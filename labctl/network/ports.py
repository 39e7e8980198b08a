"""Published ports: `-p [IP:]HOST:CONTAINER[/tcp|udp]`, parsed in one place for the CLI, the container
spec and attach(). nat.py turns each mapping into DNAT rules.

    PortMapping.parse("8080:80")               PortMapping(8080, 80, "tcp", "127.0.0.1")
    PortMapping.parse("127.0.0.1:5353:53/udp") PortMapping(5353, 53, "udp", "127.0.0.1")
    PortMapping.parse("53/udp")                PortMapping(53, 53, "udp", ...): the same port on both sides

Docker binds a published port to HOST_IP (0.0.0.0 by default). The lab's DNAT rules match the host's
own addresses, and packets from other machines are not forwarded to the bridge (nat.py), so a
published port answers the host, the containers and the lab's upstream only: HOST_IP defaults to
127.0.0.1 and is what `labctl ps` shows.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from labctl.errors import LabError

DEFAULT_HOST_IP = "127.0.0.1"
PROTOCOLS = ("tcp", "udp")


@dataclass
class PortMapping:
    """Connections to HOST_PORT on the host go to CONTAINER_PORT in the container."""
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = DEFAULT_HOST_IP

    @classmethod
    def parse(cls, spec: str | PortMapping) -> PortMapping:
        """`[IP:]HOST:CONTAINER[/tcp|udp]`, or `PORT[/tcp|udp]` for the same port on both sides."""
        if isinstance(spec, PortMapping):
            return spec
        text, _, protocol = str(spec).partition("/")
        parts = text.split(":")
        host_ip = parts.pop(0) if len(parts) == 3 else DEFAULT_HOST_IP
        try:
            ipaddress.IPv4Address(host_ip)
            if len(parts) > 2:
                raise ValueError("too many colons")
            host_port, container_port = int(parts[0]), int(parts[-1])
        except ValueError:
            host_port = container_port = -1
        if (protocol or "tcp") not in PROTOCOLS or not (0 < host_port < 65536 and 0 < container_port < 65536):
            raise LabError(f"bad published port {spec!r}",
                           "write [IP:]HOST:CONTAINER[/udp], e.g. -p 8080:80 or -p 127.0.0.1:5353:53/udp")
        return cls(host_port, container_port, protocol or "tcp", host_ip)

    def __str__(self) -> str:
        """What parse() reads back: `8080:80/tcp`, with the host IP in front when it is not the default."""
        ip = "" if self.host_ip == DEFAULT_HOST_IP else f"{self.host_ip}:"
        return f"{ip}{self.host_port}:{self.container_port}/{self.protocol}"
