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
    # TODO 1: a FIFO must exist at `fifo` (ls -l shows its type as `p`), readable and writable by root
    #         only. Where to look: mkfifo(3), and Python's os module.
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()   # not killed with the terminal of the `create` that made it
            # TODO 2: the child must not exec `argv` until `start` has run: while it waits,
            #         /proc/PID/syscall shows it inside openat(2) (number 257 on x86-64) on the FIFO. Then it
            #         tells `start` it is off (one byte, "0") and execs the command, found in PATH.
            #         Where to look: fifo(7) ("opening the FIFO blocks until the other end is opened too"),
            #         open(2)'s O_WRONLY, execvp(3).
            pass
        except OSError as exc:
            os.write(2, f"init: {exc}\n".encode())
        os._exit(127)
    with open(os.path.join(state_dir, "pid"), "w") as f:
        f.write(str(pid))
    return pid


def start(state_dir):
    """Release PID 1: open the FIFO for reading, read its "0", remove the FIFO. True if it went."""
    fifo = os.path.join(state_dir, FIFO)
    # TODO 3: after start, PID 1 has run its command, the FIFO is gone from the state directory (that is
    #         how `state` tells "running" from "created"), and start returns True if PID 1 sent its "0".
    #         Where to look: fifo(7), open(2)'s O_RDONLY, read(2), unlink(2).
    return False


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
