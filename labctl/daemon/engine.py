"""The daemon's side of a container's life: create and start through lifecycle.py (what `labctl run`
calls), then watch it end, from the kernel, whoever started it.

    POST /containers/create  build_spec + lifecycle.create: the record, the overlay root, the cgroup;
                             the runtime Config waits in memory for the start (Docker's "created")
    POST /containers/{id}/start   lifecycle.start, always detached: the supervisor is double-forked, so
                             it is no child of the daemon and outlives it (live restore). Its stdout and
                             stderr go to the container's log file (O_APPEND), which attach and logs read;
                             with a TTY the daemon holds the pty master and copies it into that file
    the exit                 a socketpair (`notify`): the supervisor writes PID 1's exit code into its end;
                             the daemon records the exit and tears down (supervisor.py, hand_over: the
                             modules for that are loaded here already, in threads of its own so that no
                             request waiting for a supervisor can starve it), answers "done" (the
                             supervisor exits then), publishes "die", and for AutoRemove removes the
                             container (as dockerd does: the shim never removes anything). A container the
                             daemon did not start (restored after a restart): pidfd_open(2) of the
                             supervisor, readable once it has recorded the exit code and torn down itself

Restart the daemon and restore() finds the running containers in the state directory and watches them
again; those that ended meanwhile have their exit code in their record, written by their supervisor.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from labctl.daemon.api import ApiError, blocking
from labctl.daemon.events import EventBus


class Engine:
    def __init__(self):
        self.bus = EventBus()
        self.pending: dict[str, object] = {}          # id -> the runtime Config of a created container
        self.exits: dict[str, asyncio.Future] = {}    # id -> its exit code, once it has ended
        self.removed: dict[str, asyncio.Event] = {}   # id -> set once an AutoRemove container is gone
        self.stdin: dict[str, int] = {}               # id -> the write end of PID 1's stdin (OpenStdin)
        self.masters: dict[str, int] = {}             # id -> the pty master of a TTY container
        self.output: dict[str, asyncio.Event] = {}    # id -> set when the daemon appended to its log
        self.copiers: dict[str, asyncio.Task] = {}    # id -> the task copying its pty master to its log
        self.started: dict[str, asyncio.Event] = {}   # id -> set once it has been started
        self.execs: dict[str, dict] = {}              # exec ID -> its record (execs.py)
        self.notify: dict[str, int] = {}              # id -> the daemon's end of its exit socket (hand_over)
        self.teardowns = ThreadPoolExecutor(4, thread_name_prefix="teardown")   # _take_over's own threads
        self.tasks: set[asyncio.Task] = set()

    def started_event(self, container_id: str) -> asyncio.Event:
        return self.started.setdefault(container_id, asyncio.Event())

    # -- create and start ---------------------------------------------------------------------
    def create_blocking(self, arguments: dict, auto_remove: bool):
        """build_spec + lifecycle.create (in a thread). Returns the Container."""
        from labctl.containers import lifecycle
        from labctl.security.profile import from_flags
        arguments = dict(arguments)
        security = from_flags(**arguments.pop("security"))
        spec, image = lifecycle.build_spec(arguments.pop("image_ref"), arguments.pop("command"),
                                           security=security, **arguments)
        spec.detach = True   # the supervisor is double-forked: no child of the daemon (live restore)
        container, config = lifecycle.create(spec, image)
        container.update(auto_remove=auto_remove, daemon=True)
        for path in (container.dir / "log", container.dir / "log.times"):   # attach may open it before the start
            path.touch(0o640)
        self.pending[container.id] = config
        return container

    def start_blocking(self, container) -> tuple[int, int] | None:
        """lifecycle.start, in a thread. PID 1's stdout and stderr: a pipe, which its supervisor copies into
        the log with each chunk's time (containers/logs.py), or (-t) a terminal, whose master the daemon
        copies: then the log's and log.times' descriptors are returned for start() to copy into."""
        from labctl.containers import lifecycle
        from labctl.runtime.stdio import Stdio
        config = self.pending.pop(container.id, None)
        if config is None:
            raise ApiError(409, f"container {container.name} cannot be started: it is {container.status}")
        output = console = None
        if container.spec.tty:
            from labctl.containers.terminal import console_socket
            console, theirs = console_socket()
            stdio = Stdio(console=theirs)
        else:
            output, written = os.pipe()
            if container.spec.interactive:
                stdin, self.stdin[container.id] = os.pipe()
            else:
                stdin = os.open(os.devnull, os.O_RDONLY)
            stdio = Stdio(stdin, written, written)
        with contextlib.suppress(FileNotFoundError):   # a restarted container's last exit code
            os.unlink(container.dir / "exit_code")
        ours, supervisors = socket.socketpair()   # the exit socket (hand_over): one end goes to S
        exit_ours, exit_theirs = ours.detach(), supervisors.detach()
        try:
            lifecycle.start(container, config, stdio, output, notify=exit_theirs)
            os.set_blocking(exit_ours, False)
            self.notify[container.id], exit_ours = exit_ours, None
            if console is None:
                return None
            from labctl.containers.terminal import receive_master
            self.masters[container.id], console = receive_master(console), None
            os.set_blocking(self.masters[container.id], False)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            return (os.open(container.dir / "log", flags, 0o640),
                    os.open(f"{container.dir / 'log'}.times", flags, 0o640))
        except BaseException:
            self.close_stdin(container.id)
            raise
        finally:
            stdio.close()   # PID 1 has its copies, the supervisor its copy of the pipe's read end
            for fd in (output, console, exit_theirs, exit_ours):
                if fd is not None:
                    os.close(fd)

    async def start(self, container) -> None:
        try:
            log = await blocking(self.start_blocking, container)
        finally:   # started or failed: whoever waits for its exit may look now
            self.started_event(container.id).set()
            self.watch(container)
        if log is not None:
            self.copiers[container.id] = asyncio.get_running_loop().create_task(
                self._copy_terminal(container.id, self.masters[container.id], log))
        # beyond Docker's attributes: the host PIDs of PID 1 and its supervisor (the shim), as the kernel
        # gave them to fork(); step 11's timeline is judged against them
        self.bus.publish("container", "start", container.id, **attributes(container),
                         pid=str(container.state.get("pid") or 0),
                         supervisorPid=str(container.state.get("supervisor_pid") or 0))

    async def start_again(self, container) -> None:
        """`docker start` of an exited container, the second half of `docker restart`: lifecycle.create_again
        (the overlay mounted again over the upper layer it kept, a new cgroup), then start() as for a new
        one. Its last run's exit and output events are forgotten: wait and attach follow the new run."""
        from labctl.containers import lifecycle
        check_restartable(container)
        config = await blocking(lifecycle.create_again, container)
        for table in (self.exits, self.started, self.output):
            table.pop(container.id, None)
        self.pending[container.id] = config
        await self.start(container)

    async def _copy_terminal(self, container_id: str, master: int, log: tuple[int, int]) -> None:
        """A TTY container's output: from the pty master into its log file, with the times (attach and
        logs read them)."""
        from labctl.containers.logs import append
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(master, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    data = os.read(master, 65536)
                except BlockingIOError:
                    continue
                except OSError:   # EIO: the last process holding the terminal has ended
                    break
                if not data:
                    break
                append(*log, data)
                self.output.setdefault(container_id, asyncio.Event()).set()
        finally:
            loop.remove_reader(master)
            for fd in log:
                os.close(fd)
            self.masters.pop(container_id, None)
            self.copiers.pop(container_id, None)
            os.close(master)

    def close_stdin(self, container_id: str) -> None:
        fd = self.stdin.pop(container_id, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the end of a container ---------------------------------------------------------------
    def watch(self, container) -> asyncio.Future:
        """The future of the container's exit code; starts watching it if nobody does yet."""
        future = self.exits.get(container.id)
        if future is None:
            future = self.exits[container.id] = asyncio.get_running_loop().create_future()
            self._spawn(self._monitor(container, future))
        return future

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _monitor(self, container, future: asyncio.Future) -> None:
        from labctl import state
        notify = self.notify.pop(container.id, None)
        code = None if notify is None else await self._take_over(container, notify)
        if code is None:   # the supervisor tears down itself: its end is the container's
            for key in ("supervisor", "pid"):   # the supervisor, else (killed) PID 1 itself
                pid = container.state.get(f"{key}_pid" if key == "supervisor" else "pid")
                start = container.state.get(f"{key}_start" if key == "supervisor" else "pid_start")
                if pid:
                    await self._ended(pid, start, state.process_start_time)
            code = await blocking(_exit_code, container)
        future.set_result(code)
        self.close_stdin(container.id)
        copier = self.copiers.get(container.id)
        if copier is not None:   # a TTY's last output: in the log before "die" and before attach ends
            with contextlib.suppress(Exception):
                await copier
        self.bus.publish("container", "die", container.id, exitCode=str(code), **attributes(container))
        if container.state.get("auto_remove"):
            await self.remove(container, force=True)

    async def _take_over(self, container, notify: int) -> int | None:
        """The exit handed over on `notify`: recorded and torn down here (teardown.finish), then "done" to
        the supervisor. None if it sent no code (killed), or if the teardown failed: then the supervisor,
        which reads EOF instead of "done", tears down itself."""
        try:
            code = await _handed_over(notify)
            if code is not None:
                await asyncio.get_running_loop().run_in_executor(self.teardowns, _finish, container, code)
                with contextlib.suppress(OSError):   # (a supervisor killed meanwhile: recorded all the same)
                    os.write(notify, b"done")
            return code
        except Exception as exc:   # (the supervisor's own teardown is the fallback: see the docstring)
            logging.getLogger("labctl.daemon").warning("the exit of container %s not taken over: %s", container.name, exc)
            return None
        finally:
            os.close(notify)

    @staticmethod
    async def _ended(pid: int, start: int | None, start_time) -> None:
        """Until the process of that PID and start time has ended (pidfd_open: no polling, no PID reuse)."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            if start is None or start_time(pid) != start:
                return   # the PID is another process's now: ours ended long ago
            readable = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_reader(fd, readable.set)
            try:
                await readable.wait()
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)

    async def remove(self, container, force: bool = False, volumes: bool = False) -> None:
        from labctl.containers import lifecycle
        self.pending.pop(container.id, None)
        await blocking(lifecycle.remove, container, force)
        self.removed.setdefault(container.id, asyncio.Event()).set()   # wait?condition=removed holds it
        self.forget(container.id)
        self.bus.publish("container", "destroy", container.id, **attributes(container))

    def forget(self, container_id: str) -> None:
        """A removed container's bookkeeping goes with it: the daemon's memory does not grow with the
        number of containers it has ever run (tests/test_daemon_load.py measures it). Whoever still
        waits holds its own reference to the future or the event."""
        for table in (self.exits, self.removed, self.started, self.output):
            table.pop(container_id, None)
        self.close_stdin(container_id)
        notify = self.notify.pop(container_id, None)
        if notify is not None:
            os.close(notify)
        for exec_id in [e for e, r in self.execs.items() if r["ContainerID"] == container_id]:
            self.execs.pop(exec_id)

    # -- the daemon's own start ---------------------------------------------------------------
    async def restore(self) -> list[str]:
        """Live restore: watch every running container again; remove the AutoRemove ones that ended
        while no daemon ran (their exit code is in their record). Returns the names of those watched."""
        from labctl.containers import reconcile
        watched = []
        for container in await blocking(reconcile.reconcile_all):
            if container.status == "running":
                self.watch(container)
                watched.append(container.name)
            elif container.state.get("auto_remove") and container.state.get("daemon"):
                with contextlib.suppress(Exception):
                    await self.remove(container, force=True)
        return watched

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for fd in list(self.stdin.values()) + list(self.masters.values()) + list(self.notify.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.teardowns.shutdown(wait=True)


def check_restartable(container) -> None:
    if container.state.get("auto_remove"):
        raise ApiError(409, f"container {container.name} was run with --rm (AutoRemove): the lab removes "
                            "it when it stops, so it cannot start again (run it without --rm)")


def attributes(container) -> dict:
    return {"name": container.name, "image": container.spec.image}


async def _handed_over(notify: int) -> int | None:
    """The exit code the supervisor wrote into the socket, or None if it closed it without one (killed)."""
    readable = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(notify, readable.set)
    try:
        await readable.wait()
        data = os.read(notify, 64)
    finally:
        loop.remove_reader(notify)
    return int(data) if data.strip() else None


def _finish(container, code: int) -> None:
    """What the supervisor hands over: record the exit and tear down (teardown.finish, in a thread)."""
    from labctl.containers import store, teardown
    teardown.finish(container.id, code)
    with contextlib.suppress(store.NoSuchContainer):
        container.state = store.load(container.id).state


def _exit_code(container) -> int:
    """After the supervisor ended: the exit code it recorded (reconciling, if it was killed first)."""
    from labctl.containers import reconcile, store
    try:
        reconcile.reconcile(container)
        fresh = store.load(container.id)
    except store.NoSuchContainer:
        return container.state.get("exit_code") or 0
    container.state = fresh.state
    code = fresh.state.get("exit_code")
    return 137 if code is None else code
