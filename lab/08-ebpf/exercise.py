#!/usr/bin/env python3
"""Step 8 exercise: count the programs one container executes, with an eBPF program on a tracepoint.

Usage (as root):  python3 exercise.py PID        PID: any host PID of a process in the container
                  ... prints "ready" once attached; press Ctrl-C to stop: it prints "execs: N"
Judge it with:    labctl check 8

Complete the lines marked TODO. README.md in this folder explains the helper and the tracepoint.
"""
import os
import signal
import sys

from bcc import BPF   # Debian's python3-bpfcc; the lab's venv sees it (--system-site-packages)

# The BPF program, in C. bcc compiles it with clang when BPF(text=...) runs, and the kernel's
# verifier checks it before it may run. PIDNS_DEV and PIDNS_INO are macros given on the command line.
PROGRAM = r"""
BPF_ARRAY(execs, u64, 1);     /* one counter, readable from Python as b["execs"][0] */

/* Runs in the kernel every time any process on the machine completes an execve(). */
int count_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct bpf_pidns_info ns = {};
    /* TODO 1: return 0 unless the current task lives in the container's PID namespace.
     *         bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, &ns, sizeof(ns)) returns 0 when it does. */

    int zero = 0;
    /* TODO 2: add one to the counter:  execs.increment(zero); */

    return 0;
}
"""


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    pid = int(sys.argv[1])
    st = os.stat(f"/proc/{pid}/ns/pid")   # the PID namespace is a file: its device and inode name it

    # TODO 3: hand the namespace's device and inode to the C program (st.st_dev and st.st_ino).
    cflags = ["-DPIDNS_DEV=0", "-DPIDNS_INO=0"]

    b = BPF(text=PROGRAM, cflags=cflags)
    # TODO 4: attach count_exec to the tracepoint sched:sched_process_exec.
    #         b.attach_tracepoint(tp="sched:sched_process_exec", fn_name="count_exec")

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
