"""The supervisor: the small process that outlives labctl, waits for the container's PID 1 and cleans up.

It is the parent of PID 1 (it made the namespaces and forked it), so it alone can waitpid() for it and
learn the exit status. For a detached container it replaces itself (execve keeps children) with a fresh,
minimal Python running this file: `python -I -S supervisor.py PKGROOT ID PID`, which imports nothing
but `os` while it waits. That keeps an idle container's overhead to one small process (see bench/run.py).
When PID 1 has exited it records the status (128+N for signal N, as Docker reports it) and only then
imports the lab's modules to tear down the cgroup and the network, and the record itself for --rm.

    labctl run -d ──fork──▶ A ──setsid, fork──▶ S ──unshare──fork──▶ PID 1 (the command)
                  (exits)      (exits at once)      └──execve(python -I -S supervisor.py)──waitpid(PID 1)
"""
import os
import sys


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


def main(argv: list[str]) -> int:
    package_root, container_id, pid = argv[0], argv[1], int(argv[2])
    code = wait_for(pid)
    sys.path.insert(0, package_root)
    import site   # now that the container has ended, load site-packages like a normal interpreter
    site.main()
    from labctl.containers import runtime
    runtime.finish(container_id, code)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
