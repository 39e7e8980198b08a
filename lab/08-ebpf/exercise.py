#!/usr/bin/env python3
"""Step 8 exercise: count the programs one container executes, with an eBPF program on a tracepoint.

Usage (as root):  labctl exercise 8 -- PID    PID: any host PID of a process in the container
   e.g.           sudo labctl exercise 8 -- 12345
                  ... prints "ready" once attached; press Ctrl-C to stop: it prints "execs: N"
Judge it with:    sudo labctl check 8

Complete the TODOs (this step stands on its own: it watches a container, it is not part of one).
README.md in this folder explains the helper and the tracepoint.
"""
import os
import signal
import sys

from bcc import BPF   # Debian's python3-bpfcc; the lab's venv, which `labctl exercise` uses, sees it

# The BPF program, in C. bcc compiles it with clang when BPF(text=...) runs, and the kernel's
# verifier checks it before it may run. PIDNS_DEV and PIDNS_INO are macros given on the command line.
PROGRAM = r"""
BPF_ARRAY(execs, u64, 1);     /* one counter, readable from Python as b["execs"][0] */

/* Runs in the kernel every time any process on the machine completes an execve(). */
int count_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct bpf_pidns_info ns = {};
    /* TODO 1: afterwards nothing below runs for a task outside the container's PID namespace (the one
     *         whose nsfs device and inode are PIDNS_DEV and PIDNS_INO). A BPF helper looks the current
     *         task up in a PID namespace named that way, and its return value says whether it is there:
     *         man 7 bpf-helpers, bpf_get_ns_current_pid_tgid (what it returns, and when). */

    int zero = 0;
    /* TODO 2: afterwards slot 0 of `execs` is one higher. bcc gives its maps methods that update a
     *         slot atomically, in the kernel: bcc's reference_guide.md, "Maps", the increment method. */

    return 0;
}
"""


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    pid = int(sys.argv[1])
    st = os.stat(f"/proc/{pid}/ns/pid")   # the PID namespace is a file: its device and inode name it

    # TODO 3: afterwards the C program's PIDNS_DEV and PIDNS_INO are the device and inode of that
    #         namespace file (st above: os.stat's st_dev, st_ino). bcc passes cflags to clang, where
    #         -DNAME=VALUE defines a macro (clang's manual, "Preprocessor options").
    cflags = ["-DPIDNS_DEV=0", "-DPIDNS_INO=0"]

    b = BPF(text=PROGRAM, cflags=cflags)
    # TODO 4: afterwards count_exec runs each time any process completes an execve(2): attached to the
    #         scheduler's tracepoint for that event (its name is in the C argument's type; the list is in
    #         /sys/kernel/tracing/events/sched/). bcc's reference_guide.md, "attach_tracepoint".

    print("ready", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM stops it like Ctrl-C
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    print(f"execs: {b['execs'][0].value}", flush=True)
    b.cleanup()   # detach: the program stops running in the kernel


if __name__ == "__main__":
    main()
