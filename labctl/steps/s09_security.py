"""Step 9: security. The demo, the check, and the reference solution of lab/09-security/exercise.py."""
from __future__ import annotations

import os
import sys

from labctl import ui
from labctl.errors import CheckFailed, require_root
from labctl.steps import checking

EXPLANATION = """
A container's root is the host's root, in namespaces. Namespaces change what it **sees**; they do not
change what it **may do**. Without more, root in a container can make a device node for the host's disk
and read it, mount filesystems, write `/proc/sysrq-trigger`, load kernel modules, set the clock. Each
defence below closes some of that; `labctl run` applies them all unless told otherwise (Docker's
defaults, and runc's spec where it is stricter):

| defence | what the kernel does | stops |
|---|---|---|
| **capabilities** (`--cap-add`, `--cap-drop`) | root's power split in ~40 bits; a container keeps 14 (`CapBnd` in `/proc/PID/status`) | mount, modules, the clock, raw disk I/O |
| **seccomp** (`--security-opt seccomp=`) | a BPF filter on every system call; Docker's allowlist answers EPERM to the rest | user namespaces (`unshare`), `keyctl`, `bpf`, ... |
| **masked / read-only paths** | `/proc/kcore` & co. covered by `/dev/null`, `/proc/sys` bound read-only | `/proc/sysrq-trigger`, `/proc/sys`, kernel memory |
| **device allowlist** | the devices cgroup (v1) or a `BPF_PROG_TYPE_CGROUP_DEVICE` program (v2) | opening the host's disk through a node made with `mknod` |
| **no_new_privs** | `prctl(PR_SET_NO_NEW_PRIVS)`: no `execve` grants privileges | a setuid-root binary planted through a volume |
| **user namespace** (`--userns remap`) | root inside is uid 100000 outside | whatever the others miss: outside, it owns nothing |

`labctl run --privileged` removes them all; `labctl inspect NAME` shows what a container runs with,
and `labctl trace NAME --denied` shows each call the kernel refused it, live.
"""

#: What check 9 runs as the "normal workload": it must keep working under the student's filter.
WORKLOAD = "echo hello > /tmp/lab-wl-$$ && cat /tmp/lab-wl-$$ && ls / > /dev/null && wc -c /etc/hostname " \
           "> /dev/null && rm /tmp/lab-wl-$$ && date > /dev/null && id > /dev/null && sleep 0.01"
BUSYBOX = "/bin/busybox"   # busybox-static: the same binary the lab image is made of
#: The attacks the exercise's three defences must stop, and the TODO behind each.
CHECKED_ATTACKS = {"mount": "TODO 1 (no CAP_SYS_ADMIN) or TODO 3 (mount not allowed)",
                   "module": "TODO 1 (no CAP_SYS_MODULE)",
                   "clock": "TODO 1 (no CAP_SYS_TIME)",
                   "userns": "TODO 3: unshare(2) must not be in ALLOWED (a user namespace gives every "
                             "capability back inside it)"}


def status_fields(pid: int) -> dict[str, str]:
    """The security lines of /proc/PID/status: Cap*, NoNewPrivs, Seccomp."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {k: v.strip() for k, v in fields.items()
            if k.startswith("Cap") or k in ("NoNewPrivs", "Seccomp", "Seccomp_filters")}


def demo() -> None:
    from labctl.demos import attacks
    from labctl.security import capabilities
    require_root("the security demo")
    ui.say("\n[bold]1. The attacker, in a --privileged container, then with the defences added one at a time.[/bold] "
           "Each cell is what the kernel answered (the call and its errno), measured now; after `+ seccomp` "
           "the container has `labctl run`'s default profile:")
    columns = attacks.matrix()
    names = [a for a in attacks.ATTACKS if any(a in c for c in columns.values())]
    ui.table(["attack"] + list(columns), [[a] + [columns[c][a].text if a in columns[c] else "-" for c in columns]
                                          for a in names], title="attack x defence")
    ui.say("\n[bold]2. What the kernel holds for a default container[/bold] (/proc/PID/status of its PID 1):")
    from labctl.containers import lifecycle
    spec, image = lifecycle.build_spec("localhost/busybox:latest", ["sleep", "30"], detach=True)
    container, _ = lifecycle.run(spec, image)
    try:
        fields = status_fields(container.pid)
        for key in ("CapBnd", "CapEff", "CapInh", "CapAmb"):
            ui.kernel(f"{key}: {fields[key]} = {', '.join(capabilities.from_mask(fields[key])) or 'none'}")
        ui.kernel(f"NoNewPrivs: {fields['NoNewPrivs']}   Seccomp: {fields['Seccomp']} (2 = filter)")
    finally:
        lifecycle.remove(container, force=True)
    from labctl.security import devices
    ui.say("\n[bold]3. The device allowlist on cgroup v2[/bold]: there is no devices.allow file; labctl generates "
           "this eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) from the rules, loads it with bpf(2) and attaches "
           "it to the container's cgroup. The kernel runs it on every open and mknod of a device node:")
    for line in devices.listing(devices.RULES).splitlines()[:24]:
        ui.shown("program", line)
    ui.say(f"  ... ({len(devices.instructions(devices.RULES))} instructions; "
           "`sudo bpftool prog dump xlated id ID` shows the kernel's copy, `labctl inspect` its id)")
    ui.say("\n[bold]4. What the kernel refuses, live.[/bold] Step 8's tracer on raw_syscalls:sys_exit, scoped to one "
           "default container, keeps the calls that returned EPERM or EACCES while the attacker runs in it "
           "(`labctl trace NAME --denied` does the same for any container):")
    from labctl.tracing.denied import DeniedTracer
    events = attacks.denied_calls()
    for ev in events:
        ui.kernel(DeniedTracer.format(ev, events[0]["ts"]))
    if not events:
        ui.warn("the tracer saw no refused call (is bcc working? `labctl doctor`)")
    ui.say("\n[bold]5. The same attacks in runc[/bold], with `runc spec`'s default config on the same root:")
    runc = attacks.run_in_runc()
    default = columns["+ seccomp"]
    ui.table(("attack", "runc spec", "labctl default"), [(a, runc[a].text, default[a].text) for a in names if a in runc])


def check(command: list[str]) -> list[str]:
    """Judge the exercise: the kernel's view of a process it started (capabilities, no_new_privs, seccomp),
    attacks that must fail, and a workload that must still work."""
    from labctl.security import capabilities
    verified: list[str] = []
    marker = [BUSYBOX, "sleep", "1009"]
    with checking.running(command + marker) as run:
        pid = checking.process_with_argv(run, marker)
        fields = status_fields(pid)
    _judge_status(fields, capabilities, verified)
    _judge_attacks(command, verified)
    status, output = checking.run_to_end(command + [BUSYBOX, "sh", "-c", WORKLOAD], timeout=20)
    checking.expect(status == 0 and "hello" in output,
                    f"the workload failed under your filter (exit {status}): {output.strip()[-200:]}",
                    "a call it needs is not in ALLOWED (TODO 4): count its calls with step 8's tracer "
                    "(README.md, \"Choosing the allowlist\"), or run it under `strace -f` and look for EPERM",
                    verified, "the workload (sh, echo, cat, ls, wc, rm, date, id, sleep) still works")
    return verified


def _judge_status(fields: dict[str, str], capabilities, verified: list[str]) -> None:
    default = capabilities.to_mask(list(capabilities.DEFAULT))
    bounding, effective = int(fields["CapBnd"], 16), int(fields["CapEff"], 16)
    extra = capabilities.from_mask(bounding & ~default)
    checking.expect(not extra, f"the command's bounding set still holds {', '.join(extra)} (CapBnd {fields['CapBnd']})",
                    "drop every capability outside KEEP from the bounding set: prctl(PR_CAPBSET_DROP) (TODO 1)",
                    verified, f"CapBnd {fields['CapBnd']}: only Docker's capabilities, at most")
    checking.expect(effective & ~bounding == 0 and fields["CapEff"] == fields["CapPrm"],
                    f"CapEff {fields['CapEff']} and CapPrm {fields['CapPrm']} are not within CapBnd",
                    "capset(2) the permitted and effective sets to KEEP (TODO 1)", verified,
                    f"CapEff = CapPrm = {fields['CapEff']}, within the bounding set")
    checking.expect(int(fields["CapInh"], 16) == 0 and int(fields["CapAmb"], 16) == 0,
                    f"CapInh {fields['CapInh']} / CapAmb {fields['CapAmb']}: capabilities could survive an execve",
                    "capset with inheritable 0, and PR_CAP_AMBIENT_CLEAR_ALL (TODO 1)", verified,
                    "CapInh and CapAmb are empty")
    checking.expect(fields["NoNewPrivs"] == "1", f"NoNewPrivs is {fields['NoNewPrivs']}",
                    "prctl(PR_SET_NO_NEW_PRIVS, 1) (TODO 2)", verified, "NoNewPrivs: 1")
    checking.expect(fields["Seccomp"] == "2", f"Seccomp is {fields['Seccomp']} (2 means a filter is loaded)",
                    "load a seccomp filter before execve (TODO 3)", verified,
                    f"Seccomp: 2, {fields.get('Seccomp_filters', '1')} filter(s) loaded")


def _judge_attacks(command: list[str], verified: list[str]) -> None:
    from labctl.demos import attacks
    attacker = str(attacks.build_attacker())
    # A private mount namespace around the exercise: if the mount attack works, its tmpfs stays in there.
    private = ["unshare", "--mount", "--propagation", "private", "--"]
    status, output = checking.run_to_end(private + command + [attacker, "only", *CHECKED_ATTACKS], timeout=20)
    outcomes = attacks.parse(output)
    if not outcomes:
        raise CheckFailed(f"the attacker did not run under your exercise (exit {status}): {output.strip()[-200:]}",
                          "execve must be in ALLOWED, and nothing may fail between the filter and execve")
    for name, todo in CHECKED_ATTACKS.items():
        outcome = outcomes.get(name)
        if outcome is None or outcome.ok is None:
            verified.append(f"{name}: not available on this kernel, not judged")
            continue
        checking.expect(outcome.ok is False, f"the {name} attack worked under your exercise ({outcome.call})",
                        f"it should fail with EPERM: {todo}", verified,
                        f"{name} attack stopped: {outcome.call} gave {outcome.errno}")


def reference(argv: list[str]) -> int:
    """Reference solution: `COMMAND [ARGS...]`, same contract as the exercise."""
    if not argv:
        print("usage: python -m labctl.steps.s09_security COMMAND [ARGS...]", file=sys.stderr)
        return 2
    security = reference_part()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            security.apply()
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"reference: {exc}", file=sys.stderr)
        os._exit(125)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def reference_part():
    """The reference part itself (labctl/steps/mycontainer/reference/security.py, what `labctl lab take 9`
    gives), loaded as a module of the student's package, so that its `from .libc import ...` finds the
    given lab/mycontainer/libc.py."""
    import importlib
    import importlib.util
    from labctl.steps import lab_root, mycontainer
    sys.path.insert(0, str(lab_root()))
    importlib.import_module("mycontainer")
    spec = importlib.util.spec_from_file_location("mycontainer.reference_security", mycontainer.packaged(9, "reference"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
