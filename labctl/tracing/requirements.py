"""What eBPF tracing needs on this machine, probed: tracefs, kernel headers, bcc.

Every tracer checks them before it loads a program (require_tracing), so a student who lacks one reads
which, and its fix, rather than three screens of clang; `labctl doctor` shows the same rows.

    tracefs          /sys/kernel/tracing/events: the tracepoints, and the format of their arguments,
                     which bcc reads so a program fits the running kernel
    kernel headers   /lib/modules/$(uname -r)/build: bcc compiles each program with clang against them
                     (or against the kernel's own /sys/kernel/kheaders.tar.xz)
    bcc              the Python module (Debian's python3-bpfcc); doctor also compiles and loads a program
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import NamedTuple

from labctl.errors import MissingRequirementError

TRACEFS = "/sys/kernel/tracing"
PROVISION = "run vagrant/provision.sh as root"


class Finding(NamedTuple):
    """One requirement as probed: status is pass, warn (tracing works, with less) or fail."""
    requirement: str
    status: str
    detail: str
    fix: str = ""


def probe_tracefs() -> Finding:
    if os.path.isdir(f"{TRACEFS}/events"):
        return Finding("tracefs", "pass", f"mounted at {TRACEFS}")
    return Finding("tracefs", "fail", f"{TRACEFS} is not mounted (bcc needs it for tracepoints)",
                   f"mount -t tracefs tracefs {TRACEFS}")


def probe_kernel_headers() -> Finding:
    """/lib/modules/$(uname -r)/build: headers of this very kernel, of another one linked in (enough for
    tracepoints: their argument layout comes from tracefs), the kernel's own archive, or none."""
    release = platform.release()
    build = f"/lib/modules/{release}/build"
    uts = os.path.join(build, "include/generated/utsrelease.h")
    if not os.path.exists(uts):
        if os.path.exists("/sys/kernel/kheaders.tar.xz"):   # CONFIG_IKHEADERS: bcc unpacks these itself
            return Finding("kernel headers", "pass", "the kernel provides its own (/sys/kernel/kheaders.tar.xz)")
        return Finding("kernel headers", "fail", f"{build} has no headers",
                       PROVISION + " (it installs or links headers)")
    with open(uts) as f:
        text = f.read()
    version = text.split('"')[1] if '"' in text else "?"
    if version == release:
        return Finding("kernel headers", "pass", f"headers for {release}")
    return Finding("kernel headers", "warn",
                   f"headers of {version} linked in for kernel {release} (fine for tracepoints)",
                   f"install linux-headers-{release} where the distribution has it")


# Run in a child Python: a bcc that crashes or hangs while compiling takes only the child with it.
BCC_PROBE = r"""
from bcc import BPF
b = BPF(text='TRACEPOINT_PROBE(sched, sched_process_exec) { return 0; }')
b.cleanup()
print("compiled")
"""
BCC_MISSING = ("python module bcc not importable",
               "apt-get install python3-bpfcc; the venv needs --system-site-packages")


def probe_bcc(compile_program: bool = False) -> Finding:
    """Can bcc be imported; with compile_program, can it also compile and load a tracepoint program?"""
    if not compile_program:
        try:
            import bcc
        except ImportError:
            return Finding("bcc", "fail", *BCC_MISSING)
        version = getattr(bcc, "__version__", "") or "installed"
        return Finding("bcc", "pass", f"python3-bpfcc {version} ({os.path.dirname(bcc.__file__)})")
    try:
        out = subprocess.run([sys.executable, "-c", BCC_PROBE], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return Finding("bcc", "fail", "compiling a test program took over 60 s", PROVISION)
    if out.returncode == 0 and "compiled" in out.stdout:
        return Finding("bcc", "pass", "imported, compiled and loaded a tracepoint program")
    if "No module named 'bcc'" in out.stderr:
        return Finding("bcc", "fail", *BCC_MISSING)
    last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
    return Finding("bcc", "fail", f"could not compile a program: {last[:120]}", PROVISION)


def diagnose(compile_program: bool = False) -> list[Finding]:
    """What tracing needs, one Finding (requirement, status, detail, fix) each."""
    return [probe_tracefs(), probe_kernel_headers(), probe_bcc(compile_program)]


def require_tracing() -> None:
    """Fail with one clear line naming what is missing (root, tracefs, headers, bcc)."""
    from labctl.errors import require_root
    require_root("loading eBPF programs")
    for name, status, detail, fix in diagnose():
        if status == "fail":
            raise MissingRequirementError(f"eBPF tracing needs {name}: {detail}", fix)
