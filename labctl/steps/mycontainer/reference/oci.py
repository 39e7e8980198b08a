"""Part 10 of mycontainer (step 10): an OCI runtime's two phases, `create` and `start`.

The OCI runtime specification splits running a container in two commands, each its own process:
  create  makes the container (namespaces, mounts, cgroup: your earlier parts) and leaves its PID 1
          *waiting*: the program must not run yet, because the caller still has work to do in between
          (containerd attaches the network to PID 1's namespace, a CNI plugin adds interfaces)
  start   lets PID 1 go on and exec the program; `create` has long exited by then

The waiting is done with a FIFO (a named pipe), as runc does with its exec.fifo: open(2) of a FIFO for
writing blocks *in the kernel* until some process opens it for reading. So PID 1 needs no helper
process and no polling, and `start` needs nothing but the FIFO's path.

  create: mkfifo(STATE/exec.fifo); fork; the child opens the FIFO for writing (blocks), writes "0",
          then execs the command; the parent writes the child's PID to STATE/pid and returns it
  start:  open the FIFO for reading (the child's open returns), read the "0", remove the FIFO
  state:  "stopped" if PID 1 is gone, "created" while the FIFO exists, else "running"
"""
import os

FIFO = "exec.fifo"


def create(state_dir, argv):
    """Make the FIFO, fork PID 1 that waits on it before it execs `argv`; returns PID 1's PID."""
    fifo = os.path.join(state_dir, FIFO)
    os.mkfifo(fifo, 0o600)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()   # not killed with the terminal of the `create` that made it
            fd = os.open(fifo, os.O_WRONLY)   # blocks until `start` opens the FIFO for reading
            os.write(fd, b"0")
            os.close(fd)
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"init: {exc}\n".encode())
        os._exit(127)
    with open(os.path.join(state_dir, "pid"), "w") as f:
        f.write(str(pid))
    return pid


def start(state_dir):
    """Release PID 1: open the FIFO for reading, read its "0", remove the FIFO. True if it went."""
    fifo = os.path.join(state_dir, FIFO)
    fd = os.open(fifo, os.O_RDONLY)   # PID 1's open for writing returns now
    try:
        went = os.read(fd, 1) == b"0"
    finally:
        os.close(fd)
    os.unlink(fifo)
    return went


# ------------------------------------------------------------------------------------ Given: state
def state(state_dir):
    """created | running | stopped, read from the kernel and the FIFO, as runc's `state` does."""
    try:
        with open(os.path.join(state_dir, "pid")) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return "stopped"
    except (OSError, ValueError):
        return "stopped"
    return "created" if os.path.exists(os.path.join(state_dir, FIFO)) else "running"
