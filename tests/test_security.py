"""Step 9 (core): the security profile of `labctl run`, judged by the kernel: /proc/PID/status (the
capability sets, NoNewPrivs, Seccomp), /proc/PID/mountinfo, and the errno of real attempts inside."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from helpers import run_labctl
from labctl import state
from labctl.security import capabilities

pytestmark = pytest.mark.root

DEFAULT_MASK = capabilities.to_mask(capabilities.DEFAULT)
EPERM_TEXT = "Operation not permitted"   # strerror(EPERM), as busybox prints the errno it got
EROFS_TEXT = "Read-only file system"     # strerror(EROFS)


@pytest.fixture
def names():
    used = []
    yield lambda suffix: used.append(f"t9-{suffix}-{os.getpid()}") or used[-1]
    for name in used:
        run_labctl("rm", "-f", name)


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def started(names, *flags: str, suffix: str = "c") -> dict[str, str]:
    """A detached container running `sleep`, and its PID 1's /proc/PID/status (sleep itself: PID 1 exec'd)."""
    from labctl.containers import store
    name = names(suffix)
    result = run_labctl("run", "-d", "--name", name, *flags, "busybox", "sleep", "300")
    assert result.returncode == 0, result.stderr
    return status(store.find(name).pid)


def inside(*args: str) -> tuple[int, str]:
    """Run a command in a --rm container: (exit code, stdout + stderr)."""
    result = run_labctl("run", "--rm", *args)
    return result.returncode, result.stdout + result.stderr


def mask(field: str) -> int:
    return int(field, 16)


def test_default_container_keeps_dockers_14_capabilities_and_nothing_more(names):
    s = started(names)
    assert mask(s["CapEff"]) == mask(s["CapPrm"]) == mask(s["CapBnd"]) == DEFAULT_MASK == 0xa80425fb
    assert mask(s["CapInh"]) == 0 and mask(s["CapAmb"]) == 0   # since CVE-2022-24769 (capabilities.py)
    assert s["NoNewPrivs"] == "1" and s["Seccomp"] == "2" and s["Seccomp_filters"] == "1"   # nnp: as runc spec


@pytest.mark.parametrize("flags, expected", [
    (["--cap-add", "NET_ADMIN"], DEFAULT_MASK | 1 << 12),
    (["--cap-drop", "chown"], DEFAULT_MASK & ~1),
    (["--cap-drop", "ALL"], 0),
    (["--cap-drop", "ALL", "--cap-add", "cap_kill"], 1 << 5),
])
def test_cap_add_and_cap_drop_change_the_sets_exactly(names, flags, expected):
    s = started(names, *flags)
    assert mask(s["CapEff"]) == mask(s["CapPrm"]) == mask(s["CapBnd"]) == expected
    assert mask(s["CapInh"]) == 0 and mask(s["CapAmb"]) == 0


def test_no_new_privileges_is_on_by_default_and_off_when_asked(names):
    """On by default, as `runc spec`'s config (Docker leaves it off); off on request, and with --privileged."""
    assert started(names, "--security-opt", "no-new-privileges", suffix="a")["NoNewPrivs"] == "1"
    assert started(names, "--security-opt", "no-new-privileges=false", suffix="b")["NoNewPrivs"] == "0"
    assert started(names, "--privileged", suffix="c")["NoNewPrivs"] == "0"
    assert started(names, "--privileged", "--security-opt", "no-new-privileges:true", suffix="d")["NoNewPrivs"] == "1"


def test_non_root_user_keeps_the_bounding_set_only(names):
    """As with Docker: execve as uid 1000 empties permitted and effective (no ambient, no inheritable)."""
    s = started(names, "-u", "1000")
    assert s["Uid"].split()[0] == "1000"
    assert mask(s["CapEff"]) == mask(s["CapPrm"]) == 0 and mask(s["CapBnd"]) == DEFAULT_MASK


def test_privileged_has_every_capability_and_no_filter(names):
    s = started(names, "--privileged")
    assert mask(s["CapEff"]) == mask(s["CapPrm"]) == mask(s["CapBnd"]) == capabilities.held()
    assert s["Seccomp"] == "0"


def _mounts(pid: int) -> dict[str, tuple[str, str]]:
    """mount point -> (options, filesystem type), from /proc/PID/mountinfo (the last mount wins)."""
    found = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        found[left.split()[4]] = (left.split()[5], right.split()[0])
    return found


def test_masked_and_read_only_paths_as_runc_and_only_without_privileged(names):
    from labctl.containers import store
    name = names("paths")
    assert run_labctl("run", "-d", "--name", name, "busybox", "sleep", "300").returncode == 0
    mounts = _mounts(store.find(name).pid)
    for path in ("/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"):
        assert mounts[path][0].startswith("ro"), (path, mounts.get(path))
    assert mounts["/sys/firmware"] == ("ro,relatime", "tmpfs")
    assert mounts["/sys"][0].startswith("ro")
    for path in ("/proc/timer_list", "/proc/keys", "/proc/interrupts"):
        assert path in mounts
    privileged = names("privpaths")
    assert run_labctl("run", "-d", "--name", privileged, "--privileged", "busybox", "sleep", "300").returncode == 0
    mounts = _mounts(store.find(privileged).pid)
    assert "/proc/sys" not in mounts and "/proc/timer_list" not in mounts and mounts["/sys"][0].startswith("rw")


def test_masked_files_read_empty_and_proc_sys_refuses_writers():
    assert Path("/proc/timer_list").read_text()   # the host's is not empty: the mask is what empties it
    code, out = inside("busybox", "sh", "-c", "wc -c < /proc/timer_list; stat -c %t:%T /proc/timer_list; "
                                              "ls -A /sys/firmware | wc -l")
    assert code == 0 and out.split() == ["0", "1:3", "0"], out   # /dev/null (1:3) bound over it
    # open(2) for writing fails with EROFS; `:` writes nothing, and the hostname is the container's own
    code, out = inside("busybox", "sh", "-c", ": > /proc/sys/kernel/hostname")
    assert code != 0 and EROFS_TEXT in out, out
    if os.path.exists("/proc/sysrq-trigger"):   # (this kernel may have no magic SysRq)
        code, out = inside("busybox", "sh", "-c", ": > /proc/sysrq-trigger")
        assert code != 0 and EROFS_TEXT in out, out


def test_default_seccomp_denies_with_eperm_while_a_workload_runs():
    code, out = inside("busybox", "sh", "-c", "ls / > /dev/null && cat /etc/passwd > /dev/null && "
                                              "echo x | grep -q x && sleep 0 && echo fine")
    assert code == 0 and out.strip() == "fine", out
    # a user namespace needs no capability at all: only the filter (clone/unshare flags) stops it
    code, out = inside("busybox", "unshare", "-U", "true")
    assert code != 0 and EPERM_TEXT in out, out
    assert inside("--security-opt", "seccomp=unconfined", "busybox", "unshare", "-U", "true")[0] == 0


def test_a_docker_format_profile_denies_what_it_lists(tmp_path):
    profile = tmp_path / "deny-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat", "chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}))
    code, out = inside("--security-opt", f"seccomp={profile}", "busybox", "mkdir", "/made")
    assert code != 0 and EPERM_TEXT in out, out
    code, out = inside("--security-opt", f"seccomp={profile}", "busybox", "chmod", "600", "/etc/passwd")
    assert code != 0 and EPERM_TEXT in out, out
    assert inside("busybox", "mkdir", "/made")[0] == 0   # the default profile allows it


def test_read_only_root_but_dev_shm_stays_writable():
    code, out = inside("--read-only", "busybox", "sh", "-c", "touch /x")
    assert code != 0 and EROFS_TEXT in out, out
    assert inside("--read-only", "busybox", "sh", "-c", "touch /dev/shm/x")[0] == 0
    assert inside("busybox", "touch", "/x")[0] == 0


def test_exec_gets_the_containers_profile(names):
    name = names("exec")
    assert run_labctl("run", "-d", "--name", name, "--cap-drop", "ALL", "busybox", "sleep", "300").returncode == 0
    result = run_labctl("exec", name, "grep", "-E", "^(CapEff|CapBnd|Seccomp):", "/proc/self/status")
    fields = dict(line.split(":\t") for line in result.stdout.splitlines())
    assert mask(fields["CapEff"]) == mask(fields["CapBnd"]) == 0 and fields["Seccomp"] == "2", result.stdout


def test_inspect_shows_the_profile_and_what_the_kernel_enforces(names):
    from labctl.containers import store
    name = names("inspect")
    assert run_labctl("run", "-d", "--name", name, "--cap-add", "NET_ADMIN", "busybox", "sleep", "300").returncode == 0
    data = json.loads(run_labctl("inspect", name).stdout)[0]
    s = status(store.find(name).pid)
    assert data["security"]["CapEff"] == capabilities.from_mask(s["CapEff"])
    assert "CAP_NET_ADMIN" in data["security"]["CapEff"] and data["security"]["Seccomp"] == "filter"
    assert data["spec"]["security"]["seccomp_source"] == "default"


@pytest.mark.parametrize("flags, words", [
    (["--cap-add", "FOO"], "unknown capability 'CAP_FOO'"),
    (["--cap-drop", "net_admn"], "unknown capability 'CAP_NET_ADMN'"),
    (["--security-opt", "seccomp=MALFORMED"], "is not valid JSON"),
    (["--security-opt", "seccomp=UNKNOWN_SYSCALL"], "unknown syscall 'mkdri'"),
    (["--security-opt", "seccomp=UNKNOWN_ACTION"], "unknown action"),
    (["--security-opt", "apparmor=unconfined"], "bad --security-opt"),
])
def test_bad_input_is_one_line_and_nothing_is_made(tmp_path, flags, words):
    files = {"MALFORMED": '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [',
             "UNKNOWN_SYSCALL": '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["mkdri"], "action": "SCMP_ACT_ALLOW"}]}',
             "UNKNOWN_ACTION": '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_MAYBE"}]}'}
    for key, text in files.items():
        (tmp_path / f"{key}.json").write_text(text)
    flags = [re.sub(r"seccomp=(\w+)$", lambda m: f"seccomp={tmp_path / m.group(1)}.json", f) for f in flags]
    before = sorted(os.listdir(state.subdir("containers")))
    result = run_labctl("run", "--rm", *flags, "busybox", "true")
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "fix:" in result.stderr
    assert sorted(os.listdir(state.subdir("containers"))) == before


@pytest.mark.root(False)
def test_run_help_lists_the_default_and_every_capability():
    from labctl.client.containers import SECURITY_DEFAULTS
    words = SECURITY_DEFAULTS.replace(",", " ").replace("(", " ").replace(")", " ").split()
    kept = SECURITY_DEFAULTS.split("(--cap-add also:")[0].split("capabilities", 1)[1].split()
    assert ["CAP_" + w for w in kept] == list(capabilities.DEFAULT)
    assert all(name.removeprefix("CAP_") in words for name in capabilities.NAMES)
