"""Step 6's demonstrations and measurements: processes with a network, and what the bridge costs.

    start_container(argv, name, mode, publish, network)   a process in new net+UTS namespaces, attached
    nettool_argv("serve", "--port", "80")                 the argv of the lab's TCP tool (nettool.py)
    measure_paths(count, total_bytes, network)            round trip and throughput: loopback vs bridge

The step 6 demo, its notebook, bench/network.py and the tests use these; the library does not.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from labctl import state
from labctl.demos import nettool
from labctl.network import Attachment, LinkInfo, Network, attach, in_netns, links


@dataclass
class NetContainer:
    """A process in new net (and UTS) namespaces, attached to a network. Not a full container: it
    keeps the host's filesystem, so it can run `python -m labctl.demos.nettool` (step 7 adds the rootfs)."""
    proc: Any
    attachment: Attachment

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str | None:
        return self.attachment.address

    def stop(self) -> None:
        try:
            self.proc.kill()
        finally:
            self.attachment.detach()

    def __enter__(self) -> NetContainer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_container(argv: Sequence[str], name: str, mode: str = "bridge", publish: Iterable[str] = (),
                    network: Network | None = None, stdout: int | None = None) -> NetContainer:
    """spawn(argv) in new namespaces without starting it, attach its network from outside by PID,
    then let it exec: the program finds its network ready."""
    from labctl.kernel import namespaces
    kinds = ("uts", "net") if mode != "host" else ("uts",)
    proc = namespaces.spawn(list(argv), namespaces=kinds, hostname=name, start=False, stdout=stdout,
                            what=f"network demo container {name}")
    try:
        att = attach(proc.pid, name, mode, publish, network)
    except BaseException:
        proc.kill()
        raise
    container = NetContainer(proc, att)
    try:
        proc.start()
    except BaseException:
        container.stop()
        raise
    return container


def nettool_argv(*args: str) -> list[str]:
    """`python -m labctl.demos.nettool ARGS...` with this interpreter."""
    return [sys.executable, "-m", "labctl.demos.nettool", *args]


def measure_paths(count: int = 300, total_bytes: int = 32 << 20, network: Network | None = None) -> dict:
    """Round-trip times and throughput of the lab's TCP tool over the host's loopback and between two
    containers over the bridge, plus the packet and byte counters of each container's veth.

    Both ways the server is a separate process (`python -m labctl.demos.nettool serve`) and the client runs
    in this process (for the bridge, in a thread that joined the client container's namespace), so
    the only difference is the path: lo, or eth0 → veth → bridge → veth → eth0."""
    results: dict[str, Any] = {"count": count, "total_bytes": total_bytes,
                               "loopback": _measure_loopback(count, total_bytes)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        srv = start_container(nettool_argv("serve", "--port", "7"), "lab-srv", network=network, stdout=devnull)
    finally:
        os.close(devnull)
    try:
        with start_container(["sleep", "120"], "lab-cli", network=network) as cli:
            before = {l.name: l for l in links(prefix="lab")}
            t0 = time.monotonic()
            results["bridge"] = in_netns(cli.pid, lambda: {
                "rtt_us": nettool.measure_rtt(srv.address, 7, count),
                "bytes_per_second": nettool.measure_throughput(srv.address, 7, total_bytes)})
            results["bridge"]["seconds"] = time.monotonic() - t0
            after = {l.name: l for l in links(prefix="lab")}
            results["veth_counters"] = {
                f"{box.attachment.host_link} ({who})": _counter_deltas(before[box.attachment.host_link],
                                                                       after[box.attachment.host_link])
                for who, box in (("server", srv), ("client", cli))}
    finally:
        srv.stop()
    return results


def _measure_loopback(count: int, total_bytes: int) -> dict:
    """The same measurements between two processes over the host's loopback."""
    server = subprocess.Popen(nettool_argv("serve", "--host", "127.0.0.1", "--port", "0"), stdout=subprocess.PIPE,
                              text=True)
    rec = state.record_process(server.pid, "nettool loopback server")
    try:
        port = int(server.stdout.readline().split(":")[-1])
        return {"rtt_us": nettool.measure_rtt("127.0.0.1", port, count),
                "bytes_per_second": nettool.measure_throughput("127.0.0.1", port, total_bytes)}
    finally:
        server.kill()
        server.wait()
        rec.forget()


def _counter_deltas(before: LinkInfo, after: LinkInfo) -> dict[str, int]:
    return {counter: getattr(after, counter) - getattr(before, counter)
            for counter in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")}
