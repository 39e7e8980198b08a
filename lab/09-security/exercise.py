#!/usr/bin/env python3
"""Step 9 exercise: run a command as root, but with only the capabilities it keeps, no_new_privs, and a
seccomp filter that lets through only the system calls it needs.

Usage (as root):  labctl exercise 9 -- COMMAND [ARGS...]
   e.g.           sudo labctl exercise 9 -- busybox sh -c 'grep -E "Cap|NoNewPrivs|Seccomp" /proc/self/status'
                  sudo labctl exercise 9 -- busybox sh -c 'echo hello > /tmp/x; cat /tmp/x; rm /tmp/x'
                  sudo labctl exercise 9 -- busybox mount -t tmpfs none /mnt      (must fail: EPERM)
Judge it with:    sudo labctl check 9

This file only drives your runtime: the work is in lab/mycontainer/security.py (its TODOs 1 to 4).
README.md in this folder explains each defence and the attack it stops.
"""
import os
import sys

from mycontainer import security   # lab/mycontainer/security.py: `labctl exercise` puts lab/ on the path


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    command = sys.argv[1:]
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            security.apply()
            os.execvp(command[0], command)   # nothing may come between the filter and this (README.md)
        except OSError as exc:
            print(f"exercise: {exc}", file=sys.stderr)
        os._exit(125)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
