"""The security profile (step 9), applied by the process about to exec: PID 1 or `labctl exec`'s child.

What each piece is lives in labctl/security; this module is about *when*, which is the lesson here. Each
piece needs a privilege that a later piece takes away, so the order is forced (runc's init does the same,
libcontainer/standard_init_linux.go and finalizeNamespace):

  after pivot_root   read-only paths, then masked paths, then the root read-only   mount(2) needs
                     (--read-only): all mounts, so while PID 1 has CAP_SYS_ADMIN    CAP_SYS_ADMIN
  then, after GO:
  1. no_new_privs    prctl(PR_SET_NO_NEW_PRIVS, 1), if asked: from now on execve never grants privileges
                     (setuid bits and file capabilities are ignored); it is kept across fork and execve
  2. seccomp, without no_new_privs: loading a filter then needs CAP_SYS_ADMIN, so it comes before the
     capabilities are dropped, and the rest of this list runs under the filter: Docker's profile allows
     prctl, setgroups, setuid, capset, chdir and execve
  3. the bounding set: every capability the container does not keep dropped (needs CAP_SETPCAP)
  4. PR_SET_KEEPCAPS, then the user: setgroups, setgid, setuid (user.py)
  5. chdir into the working directory, as that user
  6. capset: permitted = effective = the set, inheritable empty; ambient cleared (capabilities.py)
  7. seccomp, with no_new_privs: as late as possible, so that the profile need not allow what
     labctl itself calls
  8. execve: the kernel computes the command's capabilities from these sets (and, for a non-root
     user, empties permitted and effective: capabilities.py says why)

The filter is compiled before the fork (filter_program: libseccomp makes a BPF program of the rules,
10-20 ms for Docker's profile on three ABIs) and only loaded here. The same profile and capabilities on
the same machine always give the same program, so it is kept in <state>/seccomp/, named by the hash of
what it was made from: the next container loads it without compiling (runc compiles on every start).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os

from labctl import state
from labctl.kernel.syscalls import MOUNT_ATTR_RDONLY, PR_SET_NO_NEW_PRIVS, mount_setattr, prctl
from labctl.runtime.user import ResolvedUser, switch_user
from labctl.security import capabilities, paths, seccomp
from labctl.security.profile import SecurityProfile


def protect_filesystem(profile: SecurityProfile) -> None:
    """After pivot_root: the read-only and masked paths of /proc and /sys, then with --read-only the
    root itself (its own mount only: /proc, /dev, /sys, tmpfs mounts and volumes keep their flags)."""
    paths.apply(profile.masked_paths, profile.readonly_paths)
    if profile.read_only:
        mount_setattr("/", MOUNT_ATTR_RDONLY, recursive=False)


def filter_program(profile: SecurityProfile) -> bytes | None:
    """The profile's seccomp filter as a BPF program, for the container's final capabilities (None if
    it runs unconfined): from <state>/seccomp/ if it was compiled before, else compiled and kept there."""
    if profile.seccomp is None:
        return None
    made_from = json.dumps([profile.seccomp, sorted(profile.capabilities), os.uname().machine,
                            os.uname().release], sort_keys=True)   # (rules depend on the arch and kernel)
    path = state.subdir("seccomp") / (hashlib.sha256(made_from.encode()).hexdigest()[:32] + ".bpf")
    try:
        program = path.read_bytes()
        if program and len(program) % 8 == 0:   # whole BPF instructions (else compile it again)
            return program
    except FileNotFoundError:
        pass
    program = seccomp.compile_filter(profile.seccomp, profile.capabilities)
    state.atomic_write(path, program)
    return program


def remove_filter_cache() -> list[str]:
    """`labctl cleanup`: the compiled filters in <state>/seccomp/, and the temporary files of a write a
    crash cut short. Only a cache: a container reads its program before it forks, and the next one
    compiles it again (a missing file is a cache miss)."""
    directory = state.state_dir() / "seccomp"
    removed = []
    for path in directory.iterdir() if directory.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(str(path))
    return removed   # (the directory stays: a container compiling its filter right now writes into it)


def become(who: ResolvedUser, workdir: str, profile: SecurityProfile, program: bytes | None) -> None:
    """Steps 1 to 7 of the module docstring: what is left before execve."""
    if profile.no_new_privileges:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    elif program is not None:
        seccomp.load(program)
    capabilities.drop_bounding(profile.capabilities)
    capabilities.keep_across_setuid()
    switch_user(who)
    os.chdir(workdir)
    capabilities.apply(profile.capabilities)
    if profile.no_new_privileges and program is not None:
        seccomp.load(program)
