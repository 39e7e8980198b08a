"""The device allowlist: which device files a container may create (mknod), read and write.

A root process in a container can make a node for any device: `mknod /tmp/sda b 254 0` needs only
CAP_MKNOD, and the node opens the host's disk. Files do not stop that; the device cgroup does. On every
mknod(2) and every open(2) of a device node the kernel asks the container's cgroup whether this
(type, major, minor, access) may pass (security/device_cgroup.c, devcgroup_check_permission); if not,
the call fails with EPERM. Docker's default (moby's oci.DefaultLinuxSpec: deny everything, then runc's
specconv.AllowedDevices) is RULES below: mknod of anything (`c *:* m`, `b *:* m`: a node is harmless
until opened), and read/write/mknod of the few devices every program expects (/dev/null, zero, full,
random, urandom, tty, ptmx and the pty slaves, /dev/net/tun). --privileged allows every device.

Two mechanisms, one list:

  cgroup v1  the devices controller's files: "a" into devices.deny empties the list and makes the
             default deny; each rule ("c 1:3 rwm") into devices.allow adds an exception; devices.list
             shows the result. A new cgroup starts with a copy of its parent's list.
  cgroup v2  has no devices controller and no such files. Instead a BPF program of type
             BPF_PROG_TYPE_CGROUP_DEVICE is attached to the cgroup (attach type BPF_CGROUP_DEVICE);
             the kernel runs it with a `struct bpf_cgroup_dev_ctx {u32 access_type; u32 major;
             u32 minor;}` (the type in access_type's low 16 bits: BPF_DEVCG_DEV_BLOCK 1, _CHAR 2; the
             access in the high 16: BPF_DEVCG_ACC_MKNOD 1, _READ 2, _WRITE 4) and it returns 1 to allow,
             0 to deny. With BPF_F_ALLOW_MULTI every program attached on the way up must allow.

The program is generated here from the rules, instruction by instruction, as runc does
(libcontainer/cgroups/devices/devicefilter.go, itself from crun's ebpf.c), and loaded with bpf(2)
directly (labctl/kernel/bpf.py): no bcc, no clang. Measured here: generating, loading and attaching it
takes ~0.3 ms (the v1 writes ~0.15 ms), where bcc needs ~330 ms for the same program written in C
(bcc_source: 40 ms to import bcc, 290 ms for clang), on every `labctl run`. listing(RULES) shows it, as the kernel's
disassembler prints it (`bpftool prog dump xlated id ID` prints the same lines):

       0: (61) r2 = *(u32 *)(r1 +0)         ; r2 = ctx->access_type ...
       1: (54) w2 &= 65535                  ;   ... & 0xffff: the device's type (1 block, 2 char)
       ...
    ; allow c 1:3 rwm  (/dev/null)
      18: (55) if r2 != 0x2 goto pc+4       ; not a character device: next rule
      19: (55) if r4 != 0x1 goto pc+3       ; another major: next rule
      20: (55) if r5 != 0x3 goto pc+2       ; another minor: next rule
      21: (b4) w0 = 1                       ; allow
      22: (95) exit
      ...
    ; no rule matched: deny
      62: (b4) w0 = 0                       ; deny
      63: (95) exit

One rule is one block: compare the type, then (unless the rule allows all of r, w and m) check that
the access asked for is within the rule's (`(access & allowed) == access`), then the major and the
minor unless they are wildcards; all equal: return the rule's verdict; any different: jump to the
next block. After the last, the default verdict.

On a hybrid host (v1 controllers, cgroup2 beside them) the container has a cgroup in both, and the
kernel consults both (the BPF program of the task's cgroup2 cgroup, then the v1 list): the lab applies
the list with each mechanism the container's cgroup has, so both lessons can be seen on one host.
Nothing needs removing afterwards: the v1 list goes with the cgroup's directory, and the program
(whose file descriptor is closed once attached) is detached and freed by the kernel when the cgroup
is removed.
"""
from __future__ import annotations

import functools
import os
import struct
from collections import namedtuple
from pathlib import Path

from labctl.errors import LabError


# Named tuples, not dataclasses: `labctl run` imports this module, and making a frozen dataclass costs
# ~0.8 ms of exec'd code (a named tuple ~0.1 ms).
class Rule(namedtuple("Rule", "type major minor access allow device", defaults=(True, ""))):
    """One line of a device cgroup list: `type major:minor access`, allowed or denied.
    type: "c" character, "b" block, "a" all; major, minor: a number or None for any ("*");
    access: some of "rwm" (read, write, mknod); device: what it is for, for people."""
    __slots__ = ()

    def __str__(self) -> str:
        """The line devices.allow and devices.deny take, e.g. "c 136:* rwm"."""
        return f"{self.type} {_star(self.major)}:{_star(self.minor)} {self.access}"

    def describe(self) -> str:
        return f"{'allow' if self.allow else 'deny'} {self}" + (f"  ({self.device})" if self.device else "")


def _star(number: int | None) -> str:
    return "*" if number is None else str(number)


DENY_ALL = Rule("a", None, None, "rwm", allow=False, device="every device not allowed below")
ALLOW_ALL = Rule("a", None, None, "rwm", allow=True, device="--privileged: every device")

#: Docker's default: deny all, then runc's AllowedDevices (libcontainer/specconv/spec_linux.go).
RULES = [
    DENY_ALL,
    Rule("c", None, None, "m", device="mknod of any character device"),
    Rule("b", None, None, "m", device="mknod of any block device"),
    Rule("c", 1, 3, "rwm", device="/dev/null"),
    Rule("c", 1, 8, "rwm", device="/dev/random"),
    Rule("c", 1, 7, "rwm", device="/dev/full"),
    Rule("c", 5, 0, "rwm", device="/dev/tty"),
    Rule("c", 1, 5, "rwm", device="/dev/zero"),
    Rule("c", 1, 9, "rwm", device="/dev/urandom"),
    Rule("c", 136, None, "rwm", device="/dev/pts/*: the pty slaves"),
    Rule("c", 5, 2, "rwm", device="/dev/ptmx"),
    Rule("c", 10, 200, "rwm", device="/dev/net/tun"),
]
PRIVILEGED = [ALLOW_ALL]


def rules_for(privileged: bool) -> list[Rule]:
    return PRIVILEGED if privileged else RULES


# ---------------------------------------------------------------------------------------------
# cgroup v1: the devices controller's files


def write_v1(directory: Path, rules: list[Rule]) -> None:
    """Write the rules, in order, into the v1 devices cgroup at `directory`: one rule per write(2)."""
    for rule in rules:
        name = "devices.allow" if rule.allow else "devices.deny"
        fd = os.open(directory / name, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(rule).encode())
        except OSError as exc:
            raise LabError(f"the kernel refused {str(rule)!r} in {directory / name}: {exc.strerror}",
                           "a cgroup may not allow a device its parent denies: run labctl from a cgroup "
                           "that may use every device (on the host, not in a restricted container)") from None
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program, generated from the rules

DEV_BLOCK, DEV_CHAR = 1, 2                       # BPF_DEVCG_DEV_*: the type, low 16 bits of access_type
ACCESS = {"m": 1, "r": 2, "w": 4}                # BPF_DEVCG_ACC_*: the access, high 16 bits
TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}

# struct bpf_insn's opcode byte = class | operation | source, from <linux/bpf.h> and <linux/bpf_common.h>
LDX_W = 0x61      # BPF_LDX | BPF_MEM | BPF_W:  dst = *(u32 *)(src + off)
AND_K = 0x54      # BPF_ALU | BPF_AND | BPF_K:  (32-bit) dst &= imm
RSH_K = 0x74      # BPF_ALU | BPF_RSH | BPF_K:  (32-bit) dst >>= imm
MOV_K = 0xb4      # BPF_ALU | BPF_MOV | BPF_K:  (32-bit) dst = imm
MOV_X = 0xbc      # BPF_ALU | BPF_MOV | BPF_X:  (32-bit) dst = src
JNE_K = 0x55      # BPF_JMP | BPF_JNE | BPF_K:  if dst != imm: skip `off` instructions
JNE_X = 0x5d      # BPF_JMP | BPF_JNE | BPF_X:  if dst != src: skip `off` instructions
EXIT = 0x95       # BPF_JMP | BPF_EXIT:         return r0


class Insn(namedtuple("Insn", "code dst src off imm comment", defaults=(0, 0, 0, 0, ""))):
    """One `struct bpf_insn {u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm;}` and a comment."""
    __slots__ = ()

    def encode(self) -> bytes:
        return struct.pack("<BBhi", self.code, self.dst | self.src << 4, self.off, self.imm)

    def text(self) -> str:
        """The instruction as the kernel's disassembler (kernel/bpf/disasm.c) prints it."""
        d, s = self.dst, self.src
        body = {LDX_W: f"r{d} = *(u32 *)(r{s} {self.off:+d})", AND_K: f"w{d} &= {self.imm}",
                RSH_K: f"w{d} >>= {self.imm}", MOV_K: f"w{d} = {self.imm}", MOV_X: f"w{d} = w{s}",
                JNE_K: f"if r{d} != {self.imm:#x} goto pc{self.off:+d}",
                JNE_X: f"if r{d} != r{s} goto pc{self.off:+d}", EXIT: "exit"}[self.code]
        return f"({self.code:02x}) {body}"


def _prologue() -> list[Insn]:
    """r1 is the context; load its three fields into r2 (type), r3 (access), r4 (major), r5 (minor)."""
    return [Insn(LDX_W, 2, 1, 0, comment="r2 = ctx->access_type ..."),
            Insn(AND_K, 2, imm=0xFFFF, comment="  ... & 0xffff: the device's type (1 block, 2 char)"),
            Insn(LDX_W, 3, 1, 0, comment="r3 = ctx->access_type ..."),
            Insn(RSH_K, 3, imm=16, comment="  ... >> 16: the access asked (1 mknod, 2 read, 4 write)"),
            Insn(LDX_W, 4, 1, 4, comment="r4 = ctx->major"),
            Insn(LDX_W, 5, 1, 8, comment="r5 = ctx->minor")]


def _block(rule: Rule) -> list[Insn]:
    """The tests of one rule, each jumping past the block when it fails, then the rule's verdict."""
    body: list[Insn] = []
    if rule.type != "a":
        kind = "block" if rule.type == "b" else "character"
        body.append(Insn(JNE_K, 2, imm=TYPES[rule.type], comment=f"not a {kind} device"))
    allowed = sum(ACCESS[a] for a in set(rule.access))
    if allowed != 7:   # rwm allows any access: no test
        body += [Insn(MOV_X, 1, 3, comment="w1 = the access asked ..."),
                 Insn(AND_K, 1, imm=allowed, comment=f"  ... & what the rule allows ({rule.access})"),
                 Insn(JNE_X, 1, 3, comment=f"asks for more than {rule.access}")]
    if rule.major is not None:
        body.append(Insn(JNE_K, 4, imm=rule.major, comment="another major"))
    if rule.minor is not None:
        body.append(Insn(JNE_K, 5, imm=rule.minor, comment="another minor"))
    verdict = [Insn(MOV_K, 0, imm=int(rule.allow), comment="allow" if rule.allow else "deny"), Insn(EXIT)]
    # every test jumps to the first instruction after this block: count what is left after it
    resolved = []
    for i, insn in enumerate(body):
        if insn.code in (JNE_K, JNE_X):
            insn = Insn(insn.code, insn.dst, insn.src, len(body) - i - 1 + len(verdict), insn.imm,
                        insn.comment + ": next rule")
        resolved.append(insn)
    return resolved + verdict


def program(rules: list[Rule]) -> list[tuple[str, list[Insn]]]:
    """The device filter for `rules`, as (heading, instructions) blocks. The first rule must be "a *:*
    rwm", allowed or denied: the default; every later one an exception to it (as runc's emulator
    reduces any list to)."""
    default = rules[0]
    if (default.type, default.major, default.minor, set(default.access)) != ("a", None, None, set("rwm")):
        raise ValueError(f"the first device rule must be 'a *:* rwm' (the default), not {default}")
    blocks = [("the context: struct bpf_cgroup_dev_ctx *r1", _prologue())]
    for rule in rules[1:]:
        if rule.allow == default.allow:
            raise ValueError(f"{rule.describe()} repeats the default: a rule must be an exception to it")
        blocks.append((rule.describe(), _block(rule)))
    verdict = "allow" if default.allow else "deny"
    blocks.append((f"no rule matched: {verdict}",
                   [Insn(MOV_K, 0, imm=int(default.allow), comment=verdict), Insn(EXIT)]))
    return blocks


def instructions(rules: list[Rule]) -> list[Insn]:
    return [insn for _, block in program(rules) for insn in block]


def listing(rules: list[Rule]) -> str:
    """The program as text: `bpftool prog dump xlated`'s lines, with a heading per rule and comments."""
    lines, n = [], 0
    for heading, block in program(rules):
        lines.append(f"; {heading}")
        for insn in block:
            line = f"{n:4d}: {insn.text()}"
            lines.append(f"{line:<40}; {insn.comment}" if insn.comment else line)
            n += 1
    return "\n".join(lines)


def bcc_source(rules: list[Rule], function: str = "labctl_devices") -> str:
    """The same filter in C, for bcc (`BPF(text=...).load_func(function, BPF.CGROUP_DEVICE)`, then
    `BPF.attach_func(fn, cgroup_fd, BPFAttachType.CGROUP_DEVICE)`): what clang would compile the
    instructions above from, and what every container start would then wait for."""
    program(rules)   # the same checks: a default first, exceptions after
    lines = ["#include <uapi/linux/bpf.h>", "",
             f"int {function}(struct bpf_cgroup_dev_ctx *ctx)", "{",
             "    u32 type = ctx->access_type & 0xFFFF;     // BPF_DEVCG_DEV_BLOCK 1, _CHAR 2",
             "    u32 access = ctx->access_type >> 16;      // BPF_DEVCG_ACC_MKNOD 1, _READ 2, _WRITE 4"]
    for rule in rules[1:]:
        tests = [f"type == {TYPES[rule.type]}"] if rule.type != "a" else []
        allowed = sum(ACCESS[a] for a in set(rule.access))
        if allowed != 7:
            tests.append(f"(access & {allowed}) == access")
        tests += [f"ctx->major == {rule.major}"] if rule.major is not None else []
        tests += [f"ctx->minor == {rule.minor}"] if rule.minor is not None else []
        lines += [f"    // {rule.describe()}", f"    if ({' && '.join(tests) or '1'})", f"        return {int(rule.allow)};"]
    lines += [f"    return {int(rules[0].allow)};   // no rule matched", "}"]
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=4)
def _code(rules: tuple[Rule, ...]) -> bytes:
    """The program's bytes, made once per process (generating it is ~80 us of Python)."""
    return b"".join(insn.encode() for insn in instructions(list(rules)))


def attach_program(cgroup_dir: str | Path, rules: list[Rule]) -> int:
    """Load the filter (bpf BPF_PROG_LOAD), attach it to the cgroup v2 directory (BPF_PROG_ATTACH,
    BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) and close our descriptor: the attachment keeps it. Returns the
    program's id (`bpftool prog show id ID`)."""
    from labctl.kernel import bpf
    code = _code(tuple(rules))
    prog = bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, code, name="labctl_devices")
    try:
        directory = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            bpf.prog_attach(directory, prog, bpf.BPF_CGROUP_DEVICE, bpf.BPF_F_ALLOW_MULTI)
        finally:
            os.close(directory)
        return bpf.prog_id(prog)
    finally:
        os.close(prog)


def attached_programs(cgroup_dir: str | Path) -> list[int]:
    """The ids of the device programs attached to a cgroup v2 directory (BPF_PROG_QUERY)."""
    from labctl.kernel import bpf
    return bpf.attached_to_cgroup(str(cgroup_dir), bpf.BPF_CGROUP_DEVICE)


# ---------------------------------------------------------------------------------------------
# A container's cgroup


def apply(v1_dir: Path | None, v2_dir: Path | None, privileged: bool) -> dict:
    """Enforce the allowlist on a container's new cgroup, before any process is in it, with each
    mechanism it has: the v1 devices controller, a device program on its cgroup2 directory. Returns
    what the container's record keeps (what `labctl inspect` shows)."""
    rules = rules_for(privileged)
    done: dict = {"rules": [rule.describe() for rule in rules]}
    if v1_dir is None and v2_dir is None and not privileged:
        raise LabError("this host has neither a cgroup v1 devices controller nor cgroup2: nothing could keep "
                       "the container from opening the host's disks",
                       "mount the devices controller (mkdir /sys/fs/cgroup/devices; mount -t cgroup -o devices "
                       "devices /sys/fs/cgroup/devices), or use a kernel with cgroup2")
    if v1_dir is not None:
        write_v1(v1_dir, rules)
        done["v1"] = str(v1_dir / "devices.list")
    if v2_dir is not None and rules != PRIVILEGED:   # a program that allows everything adds nothing
        try:
            done["bpf_program"] = attach_program(v2_dir, rules)
        except OSError as exc:
            if v1_dir is None:
                raise LabError(f"cannot attach the device filter to {v2_dir}: {exc.strerror}",
                               "cgroup v2 needs a kernel with CONFIG_CGROUP_BPF and bpf(2) allowed (not "
                               "blocked by a seccomp filter): run labctl on the host, as root") from None
            done["bpf_error"] = exc.strerror   # hybrid: the v1 list above already enforces it
    return done
