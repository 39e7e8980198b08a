"""bpf(2) without a compiler: load a program given as raw instructions, attach it to a cgroup, ask a
cgroup which programs it has. Step 9's device filter (labctl/security/devices.py) is its user.

Step 8's tracers are C, compiled by bcc's clang on every start (a second or more). A program small
enough to write by hand needs none of that: BPF_PROG_LOAD takes the instructions as an array of
8-byte `struct bpf_insn`, the kernel's verifier checks them, and the syscall returns a file
descriptor for the program. runc does the same (with the cilium/ebpf library) for its device filter.

    bpf(BPF_PROG_LOAD,   {prog_type, insn_cnt, insns, license, ...})     -> program fd
    bpf(BPF_PROG_ATTACH, {target_fd: a cgroup v2 directory, attach_bpf_fd, attach_type, flags})
    bpf(BPF_PROG_QUERY,  {target_fd, attach_type, prog_ids, prog_cnt})   -> the ids attached there
    bpf(BPF_OBJ_GET_INFO_BY_FD, {bpf_fd, info_len, info})                -> struct bpf_prog_info (its id)

A program lives while something holds it: a file descriptor, or an attachment. Close the fd once it
is attached and the cgroup keeps it; rmdir the cgroup and the kernel detaches and frees it (a moment
later, from a workqueue). `bpftool prog show` and `bpftool cgroup tree` list what is loaded.

Every `union bpf_attr` below is a zeroed 128-byte buffer with the fields packed at their offsets in
<linux/bpf.h>: the kernel requires the bytes it does not read to be zero.
"""
from __future__ import annotations

import ctypes
import os
import struct

from labctl.kernel.syscalls import _libc

SYS_bpf = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)   # (not `platform`: 2 ms to import)

# Commands, program types, attach types and flags, from <linux/bpf.h>.
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2      # more programs may be attached here and below; all of them must allow

_ATTR_SIZE = 128
_LOG_SIZE = 1 << 16


def _bpf(cmd: int, attr: ctypes.Array, what: str) -> int:
    result = _libc.syscall(ctypes.c_long(SYS_bpf), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _address(buffer: ctypes.Array) -> int:
    return ctypes.addressof(buffer)


def prog_load(prog_type: int, code: bytes, name: str = "", license: str = "GPL") -> int:
    """BPF_PROG_LOAD: the program `code` (a whole number of 8-byte instructions) -> a program fd.
    If the verifier refuses it, the OSError's message carries the verifier's log (loaded a second time
    with log_level 1: a log costs time, and a program that loads needs none)."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log: ctypes.Array | None) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("=IIQQ", attr, 0, prog_type, len(code) // 8, _address(insns), _address(lic))
        if log is not None:   # log_level, log_size, log_buf
            struct.pack_into("=IIQ", attr, 24, 1, len(log), _address(log))
        struct.pack_into("16s", attr, 48, name.encode()[:15])   # prog_name: what bpftool shows
        return _bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")

    try:
        return attempt(None)
    except OSError as exc:
        if exc.errno not in (13, 22):   # EACCES, EINVAL: the verifier said no; get its reasons
            raise
        log = ctypes.create_string_buffer(_LOG_SIZE)
        try:
            return attempt(log)
        except OSError as again:
            text = log.value.decode(errors="replace").strip().replace("\n", " | ")
            raise OSError(again.errno, f"{again.strerror}; the verifier said: {text[-600:]}") from None


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = BPF_F_ALLOW_MULTI) -> None:
    """BPF_PROG_ATTACH: run the program for every process in the cgroup open at `target_fd`."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=IIII", attr, 0, target_fd, prog_fd, attach_type, flags)
    _bpf(BPF_PROG_ATTACH, attr, "bpf(BPF_PROG_ATTACH)")


def prog_query(target_fd: int, attach_type: int) -> list[int]:
    """BPF_PROG_QUERY: the ids of the programs attached to this cgroup itself (not its parents')."""
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=IIIIQI", attr, 0, target_fd, attach_type, 0, 0, ctypes.addressof(ids), len(ids))
    _bpf(BPF_PROG_QUERY, attr, "bpf(BPF_PROG_QUERY)")
    count = struct.unpack_from("=I", attr, 24)[0]
    return list(ids[:count])


def prog_id(prog_fd: int) -> int:
    """BPF_OBJ_GET_INFO_BY_FD: the program's id (what bpftool and BPF_PROG_QUERY call it)."""
    info = ctypes.create_string_buffer(16)   # struct bpf_prog_info starts {__u32 type; __u32 id; ...}
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=IIQ", attr, 0, prog_fd, len(info), _address(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "bpf(BPF_OBJ_GET_INFO_BY_FD)")
    return struct.unpack_from("=I", info, 4)[0]


def attached_to_cgroup(directory: str, attach_type: int) -> list[int]:
    """The ids of the programs of `attach_type` attached to the cgroup v2 directory."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return prog_query(fd, attach_type)
    finally:
        os.close(fd)
