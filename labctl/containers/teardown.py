"""How a container ends: its exit recorded, then what only a running container needs removed (the
cgroup, the network, the overlay mount), and for --rm or `labctl rm` its files and record too.

finish() is what the supervisor calls once PID 1 has exited (supervisor.py), or the daemon it handed the
exit over to (daemon/engine.py); teardown() and remove_files() are also called by `labctl rm`
(lifecycle.remove), and undo_container() by `labctl cleanup` through the journal. Each tolerates the
others having run first: whoever comes first does it.
"""
from __future__ import annotations

import contextlib
import os
import time

from labctl import state
from labctl.containers import networking, resources, store
from labctl.containers.store import Container
from labctl.errors import LabError


def finish(container_id: str, exit_code: int | None) -> None:
    """PID 1 has ended: record the exit code, tear down the cgroup and the network, and for --rm the rest."""
    with contextlib.suppress(store.NoSuchContainer):
        container = store.load(container_id)
        if container.state.get("status") != "exited" and not container.spec.auto_remove:
            container.update(status="exited", exit_code=exit_code, finished_at=time.time())
        teardown(container)


def teardown(container: Container) -> None:
    """Remove what only a running container needs. Idempotent: the supervisor, `rm` and `cleanup` may all
    call it. (The supervisor may start threads and programs here: it went back to its own PID namespace
    for its children once PID 1 was forked, see labctl/runtime/create.py.)"""
    networking.detach(container.state.get("network"))
    for info in (container.state.get("networks") or {}).values():   # `network connect`'s
        networking.detach(info)
    if container.spec.runtime != "labctl":   # step 10: the OCI runtime that made it forgets it (its cgroups too)
        from labctl.containers import shim
        shim.delete(container)
    # (Sequential: removing the cgroup in a thread beside the files was measured slower, 10 ms against 7.)
    resources.remove(container.state.get("cgroup"))
    if container.spec.auto_remove:
        remove_files(container)
        return
    if container.state.get("root"):
        unmount_root(container)
    if container.state.get("network") or container.state.get("cgroup") or container.state.get("networks"):
        container.update(network=None, cgroup=None, networks=None)


def unmount_root(container: Container) -> None:
    """Unmount the overlay of an exited container; its upper layer stays until `rm`."""
    merged = container.state["root"]
    state.unmount(merged)
    for rec in state.records():
        if rec.kind == "mount" and rec.data.get("target") == merged:
            rec.forget()


def remove_files(container: Container) -> None:
    """The overlay's directories, the record, the name, the journal entry: what `rm` removes last."""
    from labctl.kernel.overlay import ContainerRoot
    with contextlib.suppress(LabError):
        ContainerRoot.open(container.id).remove()
    store.remove_record(container.id, container.name)
    journal = container.state.get("journal")
    if journal:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal)


def undo_container(container_id: str, name: str = "") -> None:
    """The journal's undo: kill the supervisor and PID 1 if they are still the recorded processes, tear
    down, and remove the container's files."""
    try:
        container = store.load(container_id)
    except store.NoSuchContainer:
        store.remove_record(container_id, name)
        return
    # the supervisor first: it would otherwise wake up when PID 1 dies and tear down alongside us
    state.kill_process(container.state.get("supervisor_pid") or 0, container.state.get("supervisor_start"))
    state.kill_process(container.pid or 0, container.state.get("pid_start"))
    teardown(container)
    remove_files(container)
