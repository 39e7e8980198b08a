"""Benchmark for step 13: what an overlay network costs, measured side by side (run as root).

    .venv/bin/python bench/overlay_net.py [--rounds 5]

Makes a 2-host lab cluster (`labctl cluster up 2`), an overlay network and a bridge network, and four
busybox containers: two on host1's bridge, one on the overlay on each host. Prints medians over the
rounds: TCP round-trip time (1-byte ping-pong) and throughput (64 MiB) over loopback (inside one
container), between two containers on one host's bridge, and between containers on two hosts over
the overlay (veth, bridge, VXLAN in UDP over the underlay, and back); then the time from `docker run
--network OVERLAY` returning on host1 until the new container answers a ping from host2. The cluster
goes at the end (`labctl cluster down`), also after a failure.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time

from labctl.network.netns import socket_in_netns


def docker(host: int, *args: str) -> str:
    out = subprocess.run(["docker", "-H", f"unix:///run/labctl/cluster/host{host}.sock", *args],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if out.returncode:
        sys.exit(f"docker {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


def container(host: int, name: str, network: str) -> tuple[int, str]:
    """(PID 1, address) of a new `sleep` container on the network."""
    docker(host, "run", "-d", "--network", network, "--name", name, "busybox", "sleep", "3600")
    pid = int(docker(host, "inspect", "-f", "{{.State.Pid}}", name))
    return pid, docker(host, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)


def measure(server_pid: int, client_pid: int, address: str, count: int = 1000, total: int = 64 << 20):
    """(median RTT in µs, MiB/s) between a server socket in one netns and a client in another."""
    server = socket_in_netns(server_pid)
    server.bind((address, 0))
    server.listen()
    port = server.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(1 << 16):
                    if len(data) == 1:
                        conn.sendall(data)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    rtts = []
    with socket_in_netns(client_pid) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect((address, port))
        for _ in range(count):
            start = time.perf_counter()
            client.sendall(b"x")
            client.recv(1)
            rtts.append((time.perf_counter() - start) * 1e6)
    chunk = b"y" * (1 << 16)
    with socket_in_netns(client_pid) as client:
        client.connect((address, port))
        start = time.perf_counter()
        for _ in range(total // len(chunk)):
            client.sendall(chunk)
        client.shutdown(socket.SHUT_WR)
        client.recv(1)
        rate = total / (time.perf_counter() - start) / (1 << 20)
    thread.join(timeout=10)
    server.close()
    return statistics.median(rtts), rate


def time_to_reachable(rounds: int, prober_pid: int) -> list[float]:
    """Seconds from `docker run` returning on host1 until the container answers ping from host2."""
    took = []
    for i in range(rounds):
        _, address = container(1, f"late{i}", "benchov")
        start = time.perf_counter()
        while subprocess.run(["nsenter", f"--net=/proc/{prober_pid}/ns/net", "busybox", "ping", "-c", "1", "-W",
                              "1", address], capture_output=True).returncode:
            if time.perf_counter() - start > 10:
                sys.exit(f"late{i} ({address}) did not answer within 10 s")
        took.append(time.perf_counter() - start)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "labctl", "cluster", "up", "2"], check=True, capture_output=True)
    try:
        docker(1, "network", "create", "-d", "overlay", "benchov")
        docker(1, "network", "create", "benchbr")
        (b1, b1_ip), (b2, _) = container(1, "br1", "benchbr"), container(1, "br2", "benchbr")
        (o1, o1_ip), (o2, _) = container(1, "ov1", "benchov"), container(2, "ov2", "benchov")
        paths = {"loopback": (o1, o1, "127.0.0.1"), "bridge": (b1, b2, b1_ip), "overlay": (o1, o2, o1_ip)}
        results = {k: [measure(*p) for _ in range(args.rounds)] for k, p in paths.items()}
        rtt = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
        rate = {k: statistics.median(t for _, t in v) for k, v in results.items()}
        for key in paths:
            print(f"{key:8}  median RTT {rtt[key]:7.1f} µs   throughput {rate[key]:7.0f} MiB/s")
        for key in ("bridge", "overlay"):
            print(f"{key}/loopback: RTT x{rtt[key] / rtt['loopback']:.2f}, throughput x{rate[key] / rate['loopback']:.2f}")
        print(f"overlay/bridge: RTT x{rtt['overlay'] / rtt['bridge']:.2f}, throughput x{rate['overlay'] / rate['bridge']:.2f}")
        took = time_to_reachable(args.rounds, o2)
        print(f"new endpoint on host1 answers ping from host2: median {statistics.median(took) * 1000:.0f} ms "
              f"after `docker run` returned (min {min(took) * 1000:.0f}, max {max(took) * 1000:.0f})")
    finally:
        subprocess.run([sys.executable, "-m", "labctl", "cluster", "down"], capture_output=True)


if __name__ == "__main__":
    main()
