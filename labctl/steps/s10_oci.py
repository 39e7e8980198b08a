"""Step 10: the OCI runtime. The demo, the check, and the reference solution of lab/10-oci."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from labctl import ui
from labctl.errors import require_root
from labctl.steps import checking

EXPLANATION = """
Docker does not make containers itself: dockerd asks containerd, containerd's shim asks **runc**, and
what passes between them is an **OCI runtime bundle**: a directory with the root filesystem and a
`config.json` (the OCI runtime specification). Every field of that file is something an earlier step
did by hand:

| config.json field | what the runtime does with it | step |
|---|---|---|
| `root.path`, `root.readonly` | `pivot_root` into it; mount it read-only | 2, 9 |
| `process.args`, `env`, `cwd` | `execve`; the image's Entrypoint, Cmd, Env, WorkingDir | 7 |
| `process.user` (`uid`, `gid`, `additionalGids`) | `setgroups`, `setgid`, `setuid` | 7 |
| `process.capabilities`, `noNewPrivileges` | bounding set, `capset`, `PR_SET_NO_NEW_PRIVS` | 9 |
| `process.rlimits`, `oomScoreAdj`, `terminal` | `setrlimit`, `/proc/self/oom_score_adj`, a pty sent over `--console-socket` | 7 |
| `hostname` | `sethostname` in the new UTS namespace | 1 |
| `mounts` | proc, a tmpfs `/dev`, devpts, shm, sysfs, binds, tmpfs, in order | 2, 7 |
| `linux.namespaces` (`type`, `path`) | `unshare`, or `setns` into the one at `path` | 1, 6 |
| `linux.uidMappings`, `gidMappings` | a user namespace's `uid_map`/`gid_map` | 9 |
| `linux.resources`, `cgroupsPath` | `memory.max`, `cpu.max`, `pids.max` of its cgroup | 3 |
| `linux.seccomp`, `maskedPaths`, `readonlyPaths` | the BPF filter; `/dev/null` over files, read-only binds | 9 |
| `hooks` | programs run at fixed points, the state JSON on their stdin | 10 |

A runtime offers five operations, each its own process: **create** (make everything, then leave PID 1
*waiting*), **start** (let it exec), **state** (a JSON: id, status, pid, bundle), **kill**, **delete**.
Why the wait: between create and start the caller still works on the container (containerd wires its
network into PID 1's network namespace). runc makes PID 1 block in `open(2)` of a FIFO, `exec.fifo`:
opening a FIFO for writing blocks in the kernel until someone opens it for reading, and `start` does
just that. `labctl bundle IMAGE DIR` writes a bundle; `labctl-runtime` is labctl's runtime with runc's
command line, so containerd, runc's test suite and `labctl run --runtime` can drive it. `labctl run`
itself writes a config.json for every container (`<state>/containers/<id>/bundle/config.json`) and its
runtime carries out what it reads back from that file: one init for all (`labctl/runtime/ociinit.py`).
"""


def demo() -> None:
    from labctl.demos import ocicompare
    require_root("the OCI runtime demo")
    with tempfile.TemporaryDirectory(prefix="labctl-step10-") as tmp:
        bundle = ocicompare.make_bundle(os.path.join(tmp, "bundle"), ["sleep", "30"])
        doc = json.loads((bundle / "config.json").read_text())
        ui.say(f"\n[bold]1. `labctl bundle busybox {bundle} sleep 30` wrote config.json; field by field:[/bold]")
        ui.table(["field", "value"], [[k, v] for k, v in walk(doc)])
        for started, title in ((False, "created, PID 1 waiting on its FIFO"), (True, "started, `sleep 30` running")):
            ui.say(f"\n[bold]2. The same bundle in each runtime, {title}; the kernel's view of PID 1:[/bold]")
            views = ocicompare.compare(bundle, started=started)
            rows = [[key] + [str(views[n][key]) for n in views] for key in next(iter(views.values()))
                    if key != "mount points"]
            ui.table(["kernel state"] + list(views), rows)
        ui.say("Between create and start, runc has already dropped the capabilities and loaded the filter "
               "(PID 1 waits as `runc init`, confined); labctl and crun do it after start, just before execve.")
        ui.say("\n[bold]3. create → start → kill → delete with labctl-runtime, the state JSON after each:[/bold]")
        for stage, state in ocicompare.lifecycle(bundle):
            ui.say(f"  {stage:10} {json.dumps(state) if state else '(gone: `state` says it does not exist)'}")


def walk(doc: dict) -> list[tuple[str, str]]:
    """The config.json's fields, one row each, long lists shortened."""
    rows = [("ociVersion", doc["ociVersion"]), ("root", json.dumps(doc["root"])), ("hostname", doc.get("hostname", ""))]
    p = doc["process"]
    rows += [("process.args", " ".join(p["args"])), ("process.env", " ".join(p["env"])[:70]),
             ("process.cwd", p["cwd"]), ("process.user", json.dumps(p["user"])),
             ("process.capabilities.bounding", f"{len(p['capabilities']['bounding'])} capabilities"),
             ("process.noNewPrivileges", str(p["noNewPrivileges"]))]
    rows += [(f"mounts[{i}]", f"{m['destination']} {m.get('type', '')} {','.join(m.get('options', []))}"[:70])
             for i, m in enumerate(doc["mounts"])]
    linux = doc["linux"]
    rows += [("linux.namespaces", " ".join(n["type"] for n in linux["namespaces"])),
             ("linux.resources", json.dumps(linux.get("resources", {}))),
             ("linux.maskedPaths", f"{len(linux['maskedPaths'])} paths"),
             ("linux.readonlyPaths", " ".join(linux["readonlyPaths"])),
             ("linux.seccomp", f"{linux['seccomp']['defaultAction']}, {len(linux['seccomp']['syscalls'])} rules"
              if linux.get("seccomp") else "none")]
    return rows


def check(command: list[str]) -> list[str]:
    """Judge the exercise: `create` must leave PID 1 blocked in openat(2) on the FIFO, the command not
    yet run; `start` must release it, remove the FIFO, and the command must then run."""
    verified: list[str] = []
    with tempfile.TemporaryDirectory(prefix="labctl-check10-") as state_dir:
        ran = os.path.join(state_dir, "ran")
        status, output = _create(command + ["create", state_dir, "sh", "-c", f"echo yes > {ran}; sleep 30"])
        checking.expect(status == 0, f"`create` exited with {status}: {output[-200:]}",
                        "create must return once PID 1 is made, leaving it to wait (run it by hand)", verified,
                        "`create` returned, exit status 0")
        fifo = os.path.join(state_dir, "exec.fifo")
        checking.expect(os.path.exists(fifo) and os.stat(fifo).st_mode & 0o170000 == 0o010000,
                        "there is no FIFO exec.fifo in the state directory",
                        "make it with mkfifo (TODO 1 in lab/mycontainer/oci.py)", verified, "exec.fifo is a FIFO")
        pid = _pid(state_dir)
        try:
            time.sleep(0.3)
            checking.expect(pid is not None and os.path.exists(f"/proc/{pid}"), "no PID 1 is alive after `create`",
                            "fork PID 1 and let it wait (TODO 2)", verified, f"PID 1 ({pid}) outlived `create`")
            checking.expect(not os.path.exists(ran), "the command ran before `start`",
                            "PID 1 must open the FIFO for writing before it execs (TODO 2)", verified,
                            "the command has not run yet")
            call = _syscall(pid)
            checking.expect(call in ("257", "2"), f"PID 1 is not blocked in open(2) (/proc/{pid}/syscall: {call})",
                            "open the FIFO for writing: that open blocks until `start` opens it (TODO 2)",
                            verified, "PID 1 waits inside openat(2) (/proc/PID/syscall)")
            status, output = checking.run_to_end(command + ["start", state_dir], timeout=20)
            checking.expect(status == 0, f"`start` exited with {status}: {output[-200:]}",
                            "start opens the FIFO for reading and reads the \"0\" (TODO 3)", verified,
                            "`start` returned, exit status 0")
            checking.expect(checking.wait_until(lambda: os.path.exists(ran), 5), "the command did not run after `start`",
                            "after its open returns, PID 1 writes \"0\" and execs the command (TODO 2)", verified,
                            "after `start`, the command ran")
            checking.expect(not os.path.exists(fifo), "exec.fifo is still there after `start`",
                            "remove it once read (TODO 3): its absence is what `state` reads as running", verified,
                            "the FIFO is gone: the status is running")
        finally:
            if pid:
                _kill(pid)
    return verified


def _create(argv: list[str]) -> tuple[int | None, str]:
    """Run `create` to its end. Not checking.run_to_end: that kills what stays in the exercise's session,
    and PID 1 must stay (it leaves the session with setsid, but may not have done so yet when `create`
    returns)."""
    import subprocess
    # A file, not a pipe: PID 1 inherits create's stdout (as runc's does) and would hold a pipe open.
    with tempfile.TemporaryFile("w+") as out:
        try:
            code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=20).returncode
        except subprocess.TimeoutExpired:
            return None, "(it did not return within 20 s: does it wait for PID 1?)"
        out.seek(0)
        return code, out.read()


def _pid(state_dir: str) -> int | None:
    try:
        with open(os.path.join(state_dir, "pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _syscall(pid: int) -> str:
    """The number of the system call the process sleeps in (/proc/PID/syscall's first field)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0]
    except (OSError, IndexError):
        return "?"


def _kill(pid: int) -> None:
    import signal
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reference(argv: list[str]) -> int:
    """Reference solution: `create STATE_DIR COMMAND...` | `start STATE_DIR` | `state STATE_DIR`."""
    from labctl.steps.mycontainer.reference import oci
    if len(argv) >= 3 and argv[0] == "create":
        print(oci.create(argv[1], argv[2:]))
        return 0
    if len(argv) == 2 and argv[0] == "start":
        return 0 if oci.start(argv[1]) else 1
    if len(argv) == 2 and argv[0] == "state":
        print(oci.state(argv[1]))
        return 0
    print("usage: python -m labctl.steps.s10_oci create STATE_DIR COMMAND... | start STATE_DIR | state STATE_DIR",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    from labctl.steps import run_reference
    run_reference(reference)
