"""Limits in Docker's terms (`--memory 64m`, `--cpus 0.5`, `--pids-limit 32`, `--cpu-shares 512`),
parsed once and shared by `labctl cgroup run`, step 3 and `labctl run` (step 7).

How each maps to the kernel's files:

| Docker flag        | cgroup v1                                      | cgroup v2                         |
|--------------------|------------------------------------------------|-----------------------------------|
| `--memory 64m`     | memory.limit_in_bytes = 67108864               | memory.max = 67108864             |
| `--memory-swap`    | memory.memsw.limit_in_bytes (memory + swap)    | memory.swap.max (swap alone)      |
| `--cpus 0.5`       | cpu.cfs_quota_us = 50000, cfs_period_us=100000 | cpu.max = "50000 100000"          |
| `--cpu-shares 512` | cpu.shares = 512                               | cpu.weight = 59 (runc's curve)    |
| `--pids-limit 32`  | pids.max = 32                                  | pids.max = 32                     |
| `--device-read-bps /dev/sda:1mb` | blkio.throttle.read_bps_device = "8:0 1048576" | io.max = "8:0 rbps=1048576" |

One difference from Docker, on purpose: without `--memory-swap`, Docker lets a container swap as much
again as its memory limit; the lab allows no swap, so the memory limit is the point where the OOM
killer acts, the same on every machine.
"""
from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field

from labctl.errors import LabError

TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing (or argparse) for `labctl ps`
if TYPE_CHECKING:
    import argparse

CPU_PERIOD_US = 100_000   # Docker's and the kernel's default CFS period: 100 ms
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
IO_KEYS = ("rbps", "wbps", "riops", "wiops")


@dataclass
class Limits:
    """What a cgroup may use. None means "no limit" (the kernel's default)."""
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = None   # memory + swap, as Docker's --memory-swap; -1: unlimited swap
    cpus: float | None = None              # CPUs' worth of time per period
    cpu_period_us: int = CPU_PERIOD_US
    cpu_shares: int | None = None          # relative weight, v1 scale (2..262144, default 1024)
    pids_max: int | None = None
    io: dict[str, dict[str, int]] = field(default_factory=dict)  # "MAJ:MIN" -> {"rbps": n, ...}

    @property
    def cpu_quota_us(self) -> int | None:
        return None if self.cpus is None else max(1000, round(self.cpus * self.cpu_period_us))

    def controllers(self) -> set[str]:
        """The controllers these limits need (v2 names)."""
        needed = set()
        if self.memory_bytes is not None or self.memory_swap_bytes is not None:
            needed.add("memory")
        if self.cpus is not None or self.cpu_shares is not None:
            needed.add("cpu")
        if self.pids_max is not None:
            needed.add("pids")
        if self.io:
            needed.add("io")
        return needed

    def describe(self) -> str:
        parts = []
        if self.memory_bytes is not None:
            parts.append(f"memory {format_bytes(self.memory_bytes)}")
        if self.cpus is not None:
            parts.append(f"cpus {self.cpus:g}")
        if self.cpu_shares is not None:
            parts.append(f"cpu-shares {self.cpu_shares}")
        if self.pids_max is not None:
            parts.append(f"pids {self.pids_max}")
        for dev, values in self.io.items():
            parts.append(f"io {dev} " + " ".join(f"{k}={v}" for k, v in values.items()))
        return ", ".join(parts) or "no limits"


def parse_bytes(text: str | int, what: str = "memory") -> int:
    """Docker's byte sizes: 64m, 1g, 512k, 64mb, 64mib, 64mi, 1048576 (binary units, case-insensitive;
    go-units' RAMInBytes, which `docker run -m` uses). The one size parser: `labctl run` and
    `labctl cgroup run` both come here."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise LabError(f"{what} size {text!r} is not understood", "write it as Docker does: 64m, 1g, 512k or bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{int(n)} B"


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144, default 1024) to cpu.weight (1..10000, default 100).

    The curve runc uses since 1.3 (a log-quadratic fit): it maps the ends onto the ends and the default
    onto the default (2 -> 1, 1024 -> 100, 262144 -> 10000), which the older linear map did not."""
    shares = max(2, min(262144, shares))
    exponent = (math.log2(shares) ** 2 + 125 * math.log2(shares)) / 612.0 - 7.0 / 34.0
    return max(1, min(10000, math.ceil(10 ** exponent)))


def device_number(device: str) -> str:
    """'/dev/sda' or '8:0' -> '8:0' (the major:minor both blkio and io.max use)."""
    if re.fullmatch(r"\d+:\d+", device):
        return device
    try:
        st = os.stat(device)
    except FileNotFoundError:
        raise LabError(f"no device {device}", "give a block device path such as /dev/vda, or MAJOR:MINOR") from None
    if not stat.S_ISBLK(st.st_mode):
        raise LabError(f"{device} is not a block device", "I/O limits apply to disks, e.g. /dev/vda")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def parse_limits(memory: str | int | None = None, memory_swap: str | int | None = None,
                 cpus: str | float | None = None, cpu_shares: str | int | None = None,
                 pids_limit: str | int | None = None, device_read_bps: list[str] = (),
                 device_write_bps: list[str] = (), device_read_iops: list[str] = (),
                 device_write_iops: list[str] = ()) -> Limits:
    """Docker's flags to Limits; a value Docker would refuse is a LabError saying what is wrong."""
    limits = Limits()
    if memory is not None:
        limits.memory_bytes = parse_bytes(memory)
        if limits.memory_bytes < 6 << 20:
            raise LabError(f"--memory {memory} is below 6 MiB: nothing useful runs in that",
                           "give at least 6m, as Docker requires")
    if memory_swap is not None:
        limits.memory_swap_bytes = -1 if str(memory_swap) == "-1" else parse_bytes(memory_swap, "memory-swap")
        if limits.memory_bytes is None:
            raise LabError("--memory-swap needs --memory too", "add --memory, e.g. --memory 64m --memory-swap 128m")
        if limits.memory_swap_bytes != -1 and limits.memory_swap_bytes < limits.memory_bytes:
            raise LabError("--memory-swap is memory plus swap, so it cannot be below --memory",
                           "make it at least as large as --memory, or -1 for unlimited swap")
    if cpus is not None:
        try:
            limits.cpus = float(cpus)
        except ValueError:
            raise LabError(f"--cpus {cpus!r} is not a number", "e.g. --cpus 0.5 for half a CPU") from None
        if not 0.01 <= limits.cpus <= (os.cpu_count() or 1):
            raise LabError(f"--cpus {cpus} is outside 0.01..{os.cpu_count()}",
                           f"this machine has {os.cpu_count()} CPUs")
    if cpu_shares is not None:
        limits.cpu_shares = int(cpu_shares)
        if not 2 <= limits.cpu_shares <= 262144:
            raise LabError(f"--cpu-shares {cpu_shares} is outside 2..262144", "the default weight is 1024")
    if pids_limit is not None:
        limits.pids_max = int(pids_limit)
        if limits.pids_max == 0 or limits.pids_max < -1:
            raise LabError(f"--pids-limit {pids_limit}: give a positive number, or -1 for unlimited",
                           "e.g. --pids-limit 32")
        if limits.pids_max == -1:
            limits.pids_max = None
    for key, specs in zip(IO_KEYS, (device_read_bps, device_write_bps, device_read_iops, device_write_iops)):
        for spec in specs:
            device, _, rate = spec.rpartition(":")
            if not device:
                raise LabError(f"{spec!r} is not DEVICE:RATE", "e.g. --device-read-bps /dev/vda:1mb")
            value = parse_bytes(rate, "rate") if key.endswith("bps") else int(rate)
            limits.io.setdefault(device_number(device), {})[key] = value
    return limits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The Docker-style limit flags, for every command that starts something in a cgroup."""
    group = parser.add_argument_group("resource limits (as Docker's)")
    group.add_argument("-m", "--memory", help="memory limit, e.g. 64m (the OOM killer acts above it)")
    group.add_argument("--memory-swap", help="memory plus swap, e.g. 128m; -1 for unlimited (default: no swap)")
    group.add_argument("--cpus", help="CPU quota in CPUs, e.g. 0.5")
    group.add_argument("--cpu-shares", type=int, help="relative CPU weight (default 1024)")
    group.add_argument("--pids-limit", type=int, help="maximum number of processes, e.g. 32")
    group.add_argument("--device-read-bps", action="append", default=[], metavar="DEV:RATE")
    group.add_argument("--device-write-bps", action="append", default=[], metavar="DEV:RATE")
    group.add_argument("--device-read-iops", action="append", default=[], metavar="DEV:N")
    group.add_argument("--device-write-iops", action="append", default=[], metavar="DEV:N")


def from_arguments(args: argparse.Namespace) -> Limits:
    return parse_limits(memory=args.memory, memory_swap=args.memory_swap, cpus=args.cpus,
                        cpu_shares=args.cpu_shares, pids_limit=args.pids_limit,
                        device_read_bps=args.device_read_bps, device_write_bps=args.device_write_bps,
                        device_read_iops=args.device_read_iops, device_write_iops=args.device_write_iops)
