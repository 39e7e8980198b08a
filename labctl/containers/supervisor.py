"""The supervisor: the small process that outlives labctl, waits for the container's PID 1 and cleans up
(containerd-shim's part in Docker).

It is the parent of PID 1 (the runtime forked it there, labctl/runtime/create.py), so it alone can
waitpid() for it and learn the exit status. For a detached container it replaces itself (execve keeps
children) with a fresh, minimal Python running this file: `python -I -S supervisor.py ID PID`, which
imports nothing but `os` and `sys` while it waits. That keeps an idle container's overhead to one small
process (see bench/run.py). When PID 1 has exited it records the status (128+N for signal N, as Docker
reports it) and only then imports the lab's modules to tear down the cgroup and the network, and the
record itself for --rm (containers/teardown.py). It finds them on the sys.path of the labctl that
started it (passed in $LABCTL_SUPERVISOR_PATH), not by running `site`: site's .pth files (an editable
install's import hook, a CA bundle's) took 22-29 ms here, on the path of every `run --rm` that waits
for the removal.

A container the daemon started also gets a socket to the daemon for its exit (`notify`, one end of a
socketpair): once PID 1 has ended, S writes the exit code into the container's directory (`exit_code`)
and into that socket, and the daemon, whose modules are loaded already, records the exit and tears down
(daemon/engine.py), as containerd does when its shim reports a task's exit, then answers "done". S waits
for that answer before it exits, so S alive still means "not torn down yet" to whoever waits for it
(lifecycle.stop, kill, rm). If the daemon is not there (killed or restarted meanwhile: the write fails,
or the socket closes without the answer), S tears down itself, as above. Handing over cut the time from
the start of a `docker run --rm busybox true` to its exit reported by the daemon from ~55 ms to ~13 ms:
S imports nothing more.

A container the daemon started writes its stdout and stderr into a pipe, not into its log file: S holds
the read end and copies it into the log in a thread (threading is the one more module it imports),
noting each chunk's arrival time for `logs -t` (copy_output; containers/logs.py reads it). S is the one
process that lives exactly as long as the container, daemon or no daemon: the times are kept while the
daemon is down too.

    labctl run -d ──fork──▶ A ──setsid, fork──▶ S ──unshare──fork──▶ PID 1 (the command)
                  (exits)      (exits at once)      └──execve(python -I -S supervisor.py)──waitpid(PID 1)
"""
import os
import sys

#: The directory that holds the labctl package: what the minimal Python puts on its sys.path.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
#: Seconds the copier may take after PID 1's exit (a process forked meanwhile may hold the pipe a moment).
COPY_GRACE = 2.0


def wait_for(pid: int) -> int:
    """waitpid(pid) -> the exit code as Docker reports it: the status, or 128+N for signal N."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def supervise(container, pid1: int, output: int | None = None, notify: int | None = None) -> None:
    """What S does once PID 1 runs (the runtime calls it in S): wait for PID 1, then end the container.
    Never returns. Detached, S first becomes the minimal Python of the module docstring. `output`: the
    read end of the pipe that is PID 1's stdout and stderr (a container the daemon started), which S
    copies into the log, with the times (copy_output). `notify`: the supervisor's end of the daemon's
    exit socket (hand_over)."""
    if container.spec.detach:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        here = os.path.join(PACKAGE_ROOT, "labctl", "containers", "supervisor.py")
        copying = []
        if output is not None:
            os.set_inheritable(output, True)   # through the execve
            copying = [str(output), str(container.dir / "log")]
        env = dict(os.environ, LABCTL_SUPERVISOR_PATH=os.pathsep.join(p for p in sys.path if p))
        if notify is not None:
            os.set_inheritable(notify, True)
            env.update(LABCTL_SUPERVISOR_NOTIFY=str(notify), LABCTL_CONTAINER_DIR=str(container.dir))
        os.execve(sys.executable, [sys.executable, "-I", "-S", here, container.id, str(pid1), *copying], env)
    code = wait_for(pid1)
    try:
        _finish(container.id, code)
    except BaseException as exc:   # the exit code still goes out; `labctl rm` or `cleanup` finish the job
        print(f"labctl: tearing down container {container.name} failed: {exc}", file=sys.stderr)
    os._exit(code)


def _finish(container_id: str, code: int) -> None:
    from labctl.containers import teardown
    teardown.finish(container_id, code)


def copy_output(fd: int, log_path: str) -> None:
    """PID 1's output from the pipe into its log, each chunk's offset and arrival time first into
    log.times (the format containers/logs.py reads for `logs -t`), until every writer has closed it."""
    import time
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    log, times = os.open(log_path, flags, 0o640), os.open(log_path + ".times", flags, 0o640)
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except InterruptedError:
                continue
            if not data:
                break
            os.write(times, b"%d %d\n" % (os.fstat(log).st_size, time.time_ns()))
            os.write(log, data)
    finally:
        for f in (fd, log, times):
            os.close(f)


def hand_over(notify: int, directory: str, code: int) -> bool:
    """The exit code into <directory>/exit_code (what reconcile reads if S and the daemon both die before
    it is recorded), then to the daemon over `notify`. True once the daemon answered that it recorded
    the exit and tore down; False if it is gone (EPIPE, or EOF instead of the answer)."""
    tmp = os.path.join(directory, ".exit_code.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, b"%d\n" % code)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(directory, "exit_code"))
    except OSError:   # the directory is gone: `rm -f` removed the container meanwhile
        pass
    try:
        os.write(notify, b"%d\n" % code)
        return os.read(notify, 16) == b"done"   # (b"": the daemon went before it had torn down)
    except OSError:   # EPIPE, ECONNRESET: the daemon that made the socket is gone (Python ignores SIGPIPE)
        return False
    finally:
        os.close(notify)


def main(argv: list[str]) -> int:
    container_id, pid = argv[0], int(argv[1])
    copier = None
    if len(argv) > 3:   # copy in a thread: PID 1's exit is waited for (and recorded) whatever its output does
        import threading
        copier = threading.Thread(target=copy_output, args=(int(argv[2]), argv[3]), daemon=True)
        copier.start()
    code = wait_for(pid)
    if copier is not None:   # the pipe's EOF: every process of the PID namespace is gone once PID 1 is
        copier.join(COPY_GRACE)
    notify = os.environ.get("LABCTL_SUPERVISOR_NOTIFY")
    if notify and hand_over(int(notify), os.environ["LABCTL_CONTAINER_DIR"], code):
        return code   # the daemon recorded the exit and tore down
    # now that the container has ended, import like the labctl that started it (-I ignored $PYTHONPATH)
    inherited = os.environ.get("LABCTL_SUPERVISOR_PATH")
    sys.path[:0] = [PACKAGE_ROOT, *(inherited.split(os.pathsep) if inherited else [])]
    if not inherited:   # started by a labctl older than this file: let `site` find the packages
        import site
        site.main()
    _finish(container_id, code)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
