"""The containers' records: one directory per container under <state>/containers/<id>/.

    container.json   the spec (what to run) and the state (status, PIDs with their start times, exit code)
    upper/ work/     the overlay's writable layer (the container's own changes to its root filesystem)
    log              stdout and stderr of a detached container
    hosts, resolv.conf, hostname   bind-mounted into the container
    lock             flock(2)ed while the record is changed (it goes with the directory, see locked())

container.json is rewritten atomically (temporary file, rename; write_json) under a per-container lock, so
labctl, the supervisor and `labctl ps` never see half a record. The truth about a running container is
the kernel's: a record that says "running" whose PID 1 (same PID *and* start time) no longer exists is
reported as exited, so `ps` stays right after labctl, the supervisor or the host was killed.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from collections.abc import Iterator   # not typing: it costs `labctl run` ~2 ms
from pathlib import Path

from labctl import state
from labctl.containers.spec import ContainerSpec
from labctl.errors import LabError, NoSuchContainer

_ADJECTIVES = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "nimble", "quiet", "stoic",
               "swift", "tidy", "vivid", "witty", "zen", "bold")
_NAMES = ("curie", "dijkstra", "hopper", "knuth", "lamport", "liskov", "lovelace", "noether", "pike",
          "ritchie", "shannon", "thompson", "torvalds", "turing", "wirth", "yonath")


def containers_dir() -> Path:
    return state.subdir("containers")


@dataclass
class Container:
    id: str
    spec: ContainerSpec
    state: dict

    @property
    def dir(self) -> Path:
        return containers_dir() / self.id

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def pid(self) -> int | None:
        return self.state.get("pid")

    @property
    def status(self) -> str:
        """created | running | exited, judged by the kernel: is PID 1 (PID and start time) still there?"""
        status = self.state.get("status", "created")
        if status == "running" and not self.is_alive():
            return "exited"
        if status == "created" and not _alive(self.state.get("creator_pid"), self.state.get("creator_start")):
            return "exited"
        return status

    def is_alive(self) -> bool:
        return _alive(self.pid, self.state.get("pid_start"))

    def supervisor_alive(self) -> bool:
        return _alive(self.state.get("supervisor_pid"), self.state.get("supervisor_start"))

    def describe_status(self) -> str:
        status = self.status
        if status == "running":
            return f"Up {_ago(self.state.get('started_at'))}"
        if status == "exited":
            code = self.state.get("exit_code")
            when = _ago(self.state.get("finished_at")) + " ago" if self.state.get("finished_at") else ""
            return f"Exited ({'?' if code is None else code}) {when}".strip()
        return "Created"

    def to_json(self) -> dict:
        return {"id": self.id, "spec": self.spec.to_json(), "state": self.state}

    def save(self) -> None:
        write_json(self.dir / "container.json", self.to_json())

    def update(self, **changes) -> None:
        """Change state fields: re-read, change, write, under the container's lock. The spec is carried
        over as the JSON it was read as (it never changes after create): rebuilding its dataclasses and
        turning them back into JSON took 1 ms of each of the 3-4 updates on a `run`'s path."""
        with locked(self.id):
            path = self.dir / "container.json"
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError:
                raise NoSuchContainer(f"no such container: {self.id}", "`labctl ps -a` lists the containers") from None
            data["state"].update(changes)
            write_json(path, data)
            self.state = data["state"]


@contextlib.contextmanager
def locked(container_id: str) -> Iterator[None]:
    """flock(2) on containers/<id>/lock for the duration of the block.

    The lock file lives in the container's directory, not in <state>/locks/, so that it goes with the
    container (a file per container ever run would pile up there), and it cannot outlive it: once the
    directory is gone, open(O_CREAT) fails instead of making a new lock file, and the container is gone
    for this caller too. remove_record() deletes the directory while holding the lock, so a holder that
    got the lock before finishes first, and one that gets it after finds no record (NoSuchContainer)."""
    try:
        fd = os.open(containers_dir() / container_id / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except (FileNotFoundError, NotADirectoryError):
        raise NoSuchContainer(f"no such container: {container_id}", "`labctl ps -a` lists the containers") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # closing the descriptor releases the lock


def write_json(path: Path, obj) -> None:
    """Atomic (a temporary file renamed over the old one: readers see the old record or the new one),
    but without state.atomic_write's fsyncs: these records are rewritten on every start and exit, on
    `labctl run`'s critical path, and what they say about a running container is checked against the
    kernel anyway (PID and start time). The journal, which cleanup depends on, keeps its fsyncs."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:   # json.dumps without indent is the C encoder: 5x faster than indent=1
        f.write(json.dumps(obj, sort_keys=True))
    os.rename(tmp, path)


def record_exited(container: Container) -> None:
    """Record as exited a container whose supervisor is gone without having done it: with the exit code
    it handed over to the daemon (<dir>/exit_code, supervisor.hand_over) if the record has none."""
    code = container.state.get("exit_code")
    if code is None:
        try:
            code = int((container.dir / "exit_code").read_text())
        except (OSError, ValueError):
            pass
    container.update(status="exited", exit_code=code, finished_at=time.time())


def _alive(pid: int | None, start_time: int | None) -> bool:
    """The process of that PID and start time still runs. A zombie does not: it has ended and only waits
    for its parent to reap it (a killed supervisor's parent is whatever reaps orphans, not always prompt)."""
    return bool(pid) and start_time is not None and state.process_start_time(pid) == start_time \
        and state.process_state(pid) not in ("Z", "X")


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    seconds = max(0, int(time.time() - timestamp))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"


def load(container_id: str) -> Container:
    path = containers_dir() / container_id / "container.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NoSuchContainer(f"no such container: {container_id}", "`labctl ps -a` lists the containers") from None
    return Container(data["id"], ContainerSpec.from_json(data["spec"]), data["state"])


def all_containers() -> list[Container]:
    found = []
    for entry in containers_dir().iterdir():
        with contextlib.suppress(NoSuchContainer, ValueError, KeyError, OSError):
            found.append(load(entry.name))
    return sorted(found, key=lambda c: c.state.get("created", 0), reverse=True)


def names_dir() -> Path:
    return state.subdir("containers-by-name")


def find(name_or_id: str) -> Container:
    """A container by name, full ID, or unique ID prefix (as Docker accepts them)."""
    # names and IDs are file names here, never paths; and none is longer than 64 characters (an ID's
    # length, and spec.NAME_MAX_LENGTH), so a longer one cannot fail with ENAMETOOLONG below
    if "/" in name_or_id or name_or_id in ("", ".", "..") or len(name_or_id) > 64:
        raise NoSuchContainer(f"no such container: {name_or_id}", "`labctl ps -a` lists the containers")
    if (containers_dir() / name_or_id / "container.json").exists():
        return load(name_or_id)
    link = names_dir() / name_or_id
    if link.is_symlink():
        with contextlib.suppress(NoSuchContainer):
            return load(os.readlink(link))
    matches = []
    if len(name_or_id) >= 3:
        matches = [c for c in all_containers() if c.id.startswith(name_or_id)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise LabError(f"{name_or_id!r} matches {len(matches)} containers", "give more of the ID, or the name")
    raise NoSuchContainer(f"no such container: {name_or_id}", "`labctl ps -a` lists the containers")


def new_id() -> str:
    return os.urandom(32).hex()


def _claim_name(name: str, container_id: str) -> bool:
    """symlink(2) names/<name> -> <id>: atomic, and it fails if the name exists, so two concurrent
    `labctl run --name x` cannot both get x. A name whose container is gone (crash) is taken over."""
    link = names_dir() / name
    for _ in range(2):
        try:
            os.symlink(container_id, link)
            return True
        except FileExistsError:
            owner = os.readlink(link) if link.is_symlink() else ""
            if owner and (containers_dir() / owner).is_dir():
                return False
            with state.locked("container-names"):    # a stale name: replace it, once, under the lock
                if link.is_symlink() and os.readlink(link) == owner:
                    link.unlink()
    return False


def create_record(spec: ContainerSpec, container_id: str, **extra_state) -> Container:
    """Make the container's directory, claim a unique name, then write the record (container.json).

    The directory comes first: a name whose container directory does not exist is stale and may be
    taken over, so a name must never point at a directory that is still to be made."""
    directory = containers_dir() / container_id
    directory.mkdir()
    if spec.name:
        try:
            claimed = _claim_name(spec.name, container_id)
        except BaseException:
            directory.rmdir()
            raise
        if not claimed:
            directory.rmdir()
            raise LabError(f"the container name {spec.name!r} is already in use",
                           f"remove it first (`labctl rm -f {spec.name}`) or choose another --name")
    else:
        for attempt in range(100):
            rnd = os.urandom(2)
            spec.name = f"{_ADJECTIVES[rnd[0] % len(_ADJECTIVES)]}_{_NAMES[rnd[1] % len(_NAMES)]}"
            if attempt > 50:
                spec.name += f"_{os.urandom(2).hex()}"
            if _claim_name(spec.name, container_id):
                break
    if not spec.hostname:
        spec.hostname = container_id[:12]
        spec.env = [f"HOSTNAME={spec.hostname}" if e.startswith("HOSTNAME=") else e for e in spec.env]
    container = Container(container_id, spec, {
        "status": "created", "created": time.time(),
        "creator_pid": os.getpid(), "creator_start": state.process_start_time(os.getpid()), **extra_state})
    container.save()
    return container


def remove_record(container_id: str, name: str = "") -> None:
    """Delete a container's directory (its record, its log) and its name. Refuses while anything is
    mounted below it."""
    path = containers_dir() / container_id
    if path.exists():
        with contextlib.suppress(NoSuchContainer), locked(container_id):   # its lock file goes with it
            state.remove_path(str(path))
    if name:
        link = names_dir() / name
        # OSError, not only FileNotFoundError: a name no link can have (too long, say) has nothing to remove
        with contextlib.suppress(OSError):
            if os.readlink(link) == container_id:
                link.unlink()


def inspect(container: Container) -> dict:
    """What `labctl inspect` shows: the record, its live status and, while PID 1 runs, the namespaces it
    is in (the links in /proc/PID/ns, e.g. "net:[4026532302]", as `lsns` names them), the security
    profile the kernel enforces on it (/proc/PID/status: capabilities, no_new_privs, seccomp) and the
    uid and gid maps of its user namespace (/proc/PID/uid_map, gid_map: "0 100000 65536" with --userns
    remap). The record's seccomp profile is shown in short (its rules are in container.json)."""
    from labctl.security.profile import in_force, summary
    data = container.to_json()
    data["state"]["status"] = container.status
    security = data["spec"]["security"]
    security["seccomp"] = summary(security["seccomp"])
    if container.status == "running":
        data["namespaces"] = {kind: os.readlink(f"/proc/{container.pid}/ns/{kind}")
                              for kind in ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")}
        with contextlib.suppress(OSError):   # it may end while we read
            data["security"] = in_force(container.pid)
            from labctl.security.userns import read_maps
            data["idmaps"] = read_maps(container.pid)
    return data
