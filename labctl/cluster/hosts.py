"""`labctl cluster up N | down | status`: N lab hosts on the underlay, etcd, a daemon per host.

up(N), in order, after refusing bad input before anything is made (N out of range, a cluster up
already, no etcd):
  1. one journal record, "cluster", naming teardown(): whatever happens next, a SIGKILLed `cluster up`
     leaves nothing `labctl cleanup` cannot find;
  2. the underlay namespace and bridge (underlay.py), etcd in it (etcd.py);
  3. per host: its namespace and veth (underlay.py), then its daemon: `labctl daemon --socket
     /run/labctl/cluster/hostN.sock` with LABCTL_STATE_DIR=<state>/cluster/hostN and the
     LABCTL_CLUSTER_* variables (membership.py), joined to the host's namespace between fork and exec.
A failure at any step runs teardown() and forgets the record: nothing half-made stays.

teardown() (`cluster down`, and `labctl cleanup` replaying the record) undoes it in reverse: each
daemon gets SIGTERM (it revokes its lease), then its host's own journal is replayed inside the host
(clean_host: the containers it ran), etcd is stopped by its PID, any process still inside a
cluster namespace gets SIGKILL (found by its /proc/PID/ns/net, the namespace's inode), then the
namespaces go (their veth pairs with them), then /run/labctl/cluster and <state>/cluster.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys

from labctl import state
from labctl.cluster import (DEFAULT_TTL, HOSTS_PREFIX, MAX_HOSTS, RUN_DIR, STORE_URL, Host, cluster_dir,
                            etcd, underlay)
from labctl.errors import LabError


def check_up(count: int) -> None:
    """Refuse, before anything is made, what cannot be a cluster."""
    if not 1 <= count <= MAX_HOSTS:
        raise LabError(f"cannot make {count} hosts: the lab's cluster has 1 to {MAX_HOSTS}",
                       f"give a number from 1 to {MAX_HOSTS}, e.g. `labctl cluster up 2`")
    present = underlay.lab_namespaces()
    if present or etcd.running():
        raise LabError(f"a lab cluster is up already ({', '.join(present) or 'etcd'})",
                       "`labctl cluster status` shows it; `labctl cluster down` removes it")
    etcd.etcd_binary()


def up(count: int, ttl: int = DEFAULT_TTL) -> list[Host]:
    """Make the cluster (the module docstring gives the steps); returns its hosts."""
    check_up(count)
    rec = state.record("cluster", teardown, directory=str(cluster_dir()))
    try:
        cluster_dir().mkdir(parents=True, exist_ok=True)
        os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
        underlay.make_underlay()
        etcd.start()
        hosts = [Host(i) for i in range(1, count + 1)]
        for host in hosts:
            underlay.add_host(host)
            start_daemon(host, ttl)
    except BaseException:
        teardown(str(cluster_dir()))
        rec.forget()
        raise
    state.atomic_write_json(cluster_dir() / "hosts.json", {"hosts": count}, durable=False)   # complete
    return hosts


def live_records() -> set[str]:
    """The journal record of a cluster that is up whole (its last step done, etcd and every daemon
    running): `labctl cleanup` leaves it, as it leaves a running daemon; --all removes it too.
    A cluster that a SIGKILL caught half-made has no hosts.json: cleanup removes it."""
    from labctl.daemon import control
    try:
        count = json.loads((cluster_dir() / "hosts.json").read_text())["hosts"]
    except (OSError, ValueError, KeyError):
        return set()
    if not etcd.running() or not all(control.running(Host(i).socket) for i in range(1, count + 1)):
        return set()
    return {str(r.path) for r in state.records() if r.kind == "cluster"}


def start_daemon(host: Host, ttl: int) -> dict:
    """The host's `labctl daemon`, in its namespace, with its own state directory and socket."""
    from labctl.daemon import control
    os.makedirs(host.state_dir, exist_ok=True)
    env = dict(os.environ, LABCTL_STATE_DIR=host.state_dir, LABCTL_CLUSTER_HOST=host.name,
               LABCTL_CLUSTER_ADDRESS=host.address, LABCTL_CLUSTER_STORE=STORE_URL, LABCTL_CLUSTER_TTL=str(ttl),
               LABCTL_CGROUP_PREFIX=f"{host.name}-")
    env.pop("LABCTL_HOST", None)
    return control.start(host.socket, env=env, preexec=etcd.join_netns(host.netns),
                         log_path=os.path.join(host.state_dir, "daemon.log"))


def down() -> bool:
    """Remove the cluster; returns whether there was one."""
    existed = bool(underlay.lab_namespaces() or etcd.running() or cluster_dir().exists())
    teardown(str(cluster_dir()))
    state.forget_records("cluster")
    return existed


def teardown(directory: str) -> None:
    """Undo up() from wherever it got (the module docstring gives the order). Tolerates anything gone."""
    from labctl.daemon import control
    for host in (Host(i) for i in range(1, MAX_HOSTS + 1)):
        if os.path.exists(control.pid_file(host.socket)) or os.path.exists(host.socket):
            control.stop(host.socket, timeout=5.0)
        clean_host(host)
    etcd.stop()
    kill_processes_inside(underlay.lab_namespaces())
    underlay.remove_namespaces()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    try:
        state.remove_path(directory)   # refuses rather than delete through a mount left below
    except RuntimeError as exc:
        raise LabError(f"the cluster's directory was kept: {exc}", "`labctl cleanup --all`, then `labctl cluster down`")


def clean_host(host: Host) -> None:
    """What the host's daemon made (containers: processes, mounts, cgroups; bridges, tables): its own
    journal, in its own state directory, replayed by `labctl cleanup --all` run inside the host's
    namespace, where those links and tables are (run on the real host, it would remove the real lab0)."""
    journal = os.path.join(host.state_dir, "journal")
    if not os.path.isdir(journal) or not os.listdir(journal) or host.netns not in underlay.lab_namespaces():
        return
    env = dict(os.environ, LABCTL_STATE_DIR=host.state_dir)
    env.pop("LABCTL_HOST", None)
    subprocess.run([sys.executable, "-m", "labctl", "cleanup", "--all"], env=env, capture_output=True,
                   preexec_fn=etcd.join_netns(host.netns), timeout=120)


def kill_processes_inside(namespaces: list[str]) -> list[int]:
    """SIGKILL every process whose network namespace is one of these (by inode); returns their PIDs."""
    inodes = {underlay.namespace_inode(n) for n in namespaces} - {None}
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                start_time = state.process_start_time(int(entry))
                os.kill(int(entry), signal.SIGKILL)
                state.kill_process(int(entry), start_time)   # waits until it is gone
                killed.append(int(entry))
    return killed


def status() -> dict:
    """What runs: the hosts' namespaces, etcd, and the hosts registered in it with their leases' TTLs."""
    from labctl.cluster.store import Store
    from labctl.daemon import control
    hosts = underlay.lab_namespaces()
    info = {"namespaces": hosts, "etcd": etcd.running(), "registered": [], "daemons": {}}
    for host in (Host(i) for i in range(1, MAX_HOSTS + 1)):
        if host.netns in hosts:
            info["daemons"][host.name] = control.running(host.socket)
    if info["etcd"]:
        store = Store()
        for key, value, lease in store.get_prefix(HOSTS_PREFIX):
            info["registered"].append({"name": key[len(HOSTS_PREFIX):], "value": value, "lease": lease,
                                       "ttl": store.time_to_live(lease) if lease else None})
    return info
