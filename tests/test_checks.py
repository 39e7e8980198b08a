"""The checks judge wrong work as wrong, and say why: each test runs `labctl check N --file` on a
program with one deliberate mistake (a student's, found in review) and on the same program without
it, and reads the verdict. The programs are small and self-contained (ctypes, the lab's library), so
they do not depend on how the exercise skeletons are worded."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

from helpers import run_labctl


def _check(step: int, tmp_path, source: str, name: str = "exercise.py", timeout: float = 300):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return run_labctl("check", str(step), "--file", str(path), timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Step 1

STEP1 = """
    import ctypes, os, sys
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    NEW = 0x04000000 | 0x20000000 | 0x08000000 | 0x00020000   # UTS, PID, IPC, mount

    def ok(result, what):
        if result == -1:
            raise OSError(ctypes.get_errno(), what)

    hostname, command = sys.argv[1], sys.argv[2:]
    ok(libc.unshare(NEW), "unshare")
    FORK
    if pid == 0:
        ok(libc.sethostname(NAME), "sethostname")
        os.execvp(command[0], command)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(128 - code if code < 0 else code)
"""
GOOD_FORK, NO_FORK = "pid = os.fork()", "pid = 0"
BYTES, STR = "hostname.encode(), len(hostname.encode())", "hostname, len(hostname)"


def _step1(fork: str, name: str) -> str:
    return STEP1.replace("FORK", fork).replace("NAME", name)


def test_check_1_passes_the_ctypes_solution(tmp_path):
    result = _check(1, tmp_path, _step1(GOOD_FORK, BYTES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_1_says_the_exercise_became_the_command_without_a_fork(tmp_path):
    result = _check(1, tmp_path, _step1(NO_FORK, BYTES))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "exec'd the command itself" in result.stdout and "fork first" in result.stdout
    assert "the exercise was still running when the check stopped it" in result.stdout   # details


def test_check_1_says_sethostname_takes_bytes(tmp_path):
    result = _check(1, tmp_path, _step1(GOOD_FORK, STR))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hostname 'l'" in result.stdout
    assert "sethostname takes bytes and a length" in result.stdout


# ---------------------------------------------------------------------------------------------
# Step 2

STEP2 = """
    import os, sys
    from labctl.kernel.syscalls import (CLONE_NEWNS, CLONE_NEWPID, MNT_DETACH, MS_BIND, MS_PRIVATE, MS_REC,
                                        mount, pivot_root, umount2, unshare)
    rootfs, command = sys.argv[1], sys.argv[2:]
    unshare(CLONE_NEWNS | CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        MAKE_PRIVATE
        mount(rootfs, rootfs, None, MS_BIND | MS_REC)
        mount("proc", rootfs + "/proc", "proc")
        os.chdir(rootfs)
        pivot_root(".", ".")
        umount2(".", MNT_DETACH)
        os.chdir("/")
        os.execvp(command[0], command)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_check_2_passes_a_pivot_root_solution(tmp_path):
    result = _check(2, tmp_path, STEP2.replace("MAKE_PRIVATE", 'mount(None, "/", None, MS_REC | MS_PRIVATE)'))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_2_catches_a_missing_ms_private_on_a_host_whose_root_is_private(tmp_path):
    """This host's / is private already, so the mistake only shows where mounts are shared: the check
    runs the exercise there."""
    with open("/proc/self/mountinfo") as f:
        root_line = next(line for line in f if line.split()[4] == "/")
    assert "shared:" not in root_line    # what made the mistake invisible before
    result = _check(2, tmp_path, STEP2.replace("MAKE_PRIVATE", "pass"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "appeared in the namespace it was started from" in result.stdout
    assert "MS_REC | MS_PRIVATE" in result.stdout


# ---------------------------------------------------------------------------------------------
# Step 3

STEP3 = """
    import os, signal, sys, time
    from labctl.kernel.cgroups.hierarchy import lab_parents, release_lab_parents
    FILES = {(1, "memory"): "memory.limit_in_bytes", (2, "memory"): "memory.max",
             (1, "pids"): "pids.max", (2, "pids"): "pids.max"}
    name, command = sys.argv[1], sys.argv[4:]
    limits = {"memory": int(sys.argv[2]), "pids": int(sys.argv[3])}
    parents = lab_parents(["memory", "pids"])
    dirs = {c: parent / name for c, (version, parent) in parents.items()}
    for c, (version, parent) in parents.items():
        dirs[c].mkdir(exist_ok=True)
        (dirs[c] / FILES[(version, c)]).write_text(str(limits[c]))
    pid = os.fork()
    if pid == 0:
        for d in set(dirs.values()):
            (d / "cgroup.procs").write_text(str(os.getpid()))
        os.execvp(command[0], command)
    _, status = os.waitpid(pid, 0)
    for d in set(dirs.values()):
        EMPTY
        d.rmdir()
    release_lab_parents(["memory", "pids"])
    code = os.waitstatus_to_exitcode(status)
    sys.exit(128 - code if code < 0 else code)
"""
EMPTY_CGROUP = """while (d / "cgroup.procs").read_text().split():
            for p in (d / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(p), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)"""


def test_check_3_passes_an_exercise_that_empties_its_cgroup(tmp_path):
    result = _check(3, tmp_path, STEP3.replace("EMPTY", EMPTY_CGROUP))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a command that leaves children in the background" in result.stdout


def test_check_3_runs_a_command_that_leaves_children_and_removes_the_cgroup_left(tmp_path):
    """The exercise's rmdir fails with EBUSY (the children are still in the cgroup): the check says
    so, names the cgroup it left, and removes it (the residue fixture would see it otherwise)."""
    result = _check(3, tmp_path, STEP3.replace("EMPTY", "pass"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "two children left running in the background" in result.stdout
    assert "left its cgroup behind" in result.stdout and "EBUSY" in result.stdout
    assert "Device or resource busy" in result.stdout    # the exercise's own traceback, in the details


# ---------------------------------------------------------------------------------------------
# Step 4: a broken copy of the reference solution


def _reference_copy(tmp_path, step_module: str, old: str, new: str) -> str:
    """The source of labctl/steps/<step_module>.py with `old` replaced: it runs as a script too."""
    from labctl.steps import checking
    source = (Path(checking.__file__).parent / f"{step_module}.py").read_text()
    assert old in source
    return source.replace(old, new)


def test_check_4_says_what_the_kernel_logged_about_a_refused_mount(tmp_path):
    result = _check(4, tmp_path, _reference_copy(tmp_path, "s04_overlayfs", ",workdir={work}", ""))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the kernel said why: \"overlayfs: missing 'workdir'\"" in result.stdout
    assert "add workdir=WORK" in result.stdout
    assert "Invalid argument" in result.stdout     # the exercise's own error, in the details


def test_check_4_passes_the_unbroken_copy(tmp_path):
    result = _check(4, tmp_path, _reference_copy(tmp_path, "s04_overlayfs", ",workdir={work}", ",workdir={work}"))
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Step 5: the check starts the lab registry itself

STEP5 = """
    import hashlib, os, sys, urllib.request
    ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    registry, repository, tag, outdir = sys.argv[1:]
    base = f"http://{registry}/v2/{repository}"
    request = urllib.request.Request(f"{base}/manifests/{tag}", headers=HEADERS)
    body = urllib.request.urlopen(request, timeout=30).read()
    os.makedirs(outdir, exist_ok=True)
    open(os.path.join(outdir, "manifest.json"), "wb").write(body)
    import json
    layer = json.loads(body)["layers"][0]
    data = urllib.request.urlopen(f"{base}/blobs/{layer['digest']}", timeout=30).read()
    if "sha256:" + hashlib.sha256(data).hexdigest() != layer["digest"]:
        sys.exit("digest mismatch")
    os.makedirs(os.path.join(outdir, "blobs", "sha256"), exist_ok=True)
    open(os.path.join(outdir, "blobs", "sha256", layer["digest"][7:]), "wb").write(data)
"""


def test_check_5_passes_a_urllib_solution(tmp_path):
    result = _check(5, tmp_path, STEP5.replace("HEADERS", '{"Accept": ACCEPT}'))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_5_recognises_a_manifest_request_without_accept(tmp_path):
    result = _check(5, tmp_path, STEP5.replace("HEADERS", "{}"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "asked without an Accept header" in result.stdout and "MANIFEST_UNKNOWN" in result.stdout
    assert "send the Accept header" in result.stdout


# ---------------------------------------------------------------------------------------------
# Step 6

STEP6 = """
    import sys
    from pyroute2 import IPRoute
    netns, bridge, host_ifname, cidr, gateway = sys.argv[1:]
    address, prefixlen = cidr.split("/")[0], int(cidr.split("/")[1])
    netns = f"/run/netns/{netns}"
    peer = "labp" + host_ifname[4:]

    def index_of(ipr, name):
        found = ipr.link_lookup(ifname=name)
        if not found:
            sys.exit(f"exercise: there is no link named {name!r} here yet")
        return found[0]

    host = IPRoute()
    host.link("add", ifname=host_ifname, kind="veth", peer=peer)
    host.link("set", index=index_of(host, host_ifname), master=index_of(host, bridge), state="up")
    host.link("set", index=index_of(host, peer), net_ns_fd=netns)
    host.close()
    ns = IPRoute(netns=netns)
    ns.link("set", index=index_of(ns, peer), ifname="eth0")
    eth0 = index_of(ns, "ETH0")
    ns.addr("add", index=eth0, address=address, prefixlen=prefixlen)
    ns.link("set", index=eth0, state="up")
    ns.link("set", index=index_of(ns, "lo"), state="up")
    ns.route("add", dst="0.0.0.0/0", gateway=gateway)
    ns.close()
"""


def test_check_6_passes_a_pyroute2_solution(tmp_path):
    result = _check(6, tmp_path, STEP6.replace("ETH0", "eth0"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_6_leads_with_the_exercises_own_error(tmp_path):
    result = _check(6, tmp_path, STEP6.replace("ETH0", "eht0"))
    assert result.returncode == 1, result.stdout + result.stderr
    cause = next(line for line in result.stdout.splitlines() if "✘" in line)
    assert "stopped with status 1" in cause and "no link named 'eht0'" in cause, cause
    assert "eth0 has no IPv4 address" in cause      # what it left, after why


# ---------------------------------------------------------------------------------------------
# Step 8: broken copies of the reference (bcc compiles them)


def test_check_8_passes_the_unbroken_copy(tmp_path):
    result = _check(8, tmp_path, _reference_copy(tmp_path, "s08_ebpf", "execs.increment", "execs.increment"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "attached to sched_process_exec" in result.stdout


def test_check_8_catches_a_program_attached_to_fork(tmp_path):
    source = _reference_copy(tmp_path, "s08_ebpf", "sched:sched_process_exec", "sched:sched_process_fork")
    source = source.replace("tracepoint__sched__sched_process_exec", "tracepoint__sched__sched_process_fork")
    result = _check(8, tmp_path, source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "attached to sched_process_fork (bpftool perf show), not sched_process_exec" in result.stdout
    assert "sched:sched_process_exec (TODO 4)" in result.stdout


def test_check_8_shows_the_compilers_first_error(tmp_path):
    result = _check(8, tmp_path, _reference_copy(tmp_path, "s08_ebpf", "execs.increment(zero);", "execs.increment(zero)"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the compiler's first error: /virtual/main.c:" in result.stdout and "expected ';'" in result.stdout


# ---------------------------------------------------------------------------------------------
# Step 12: lab/12-build-push/exercise.py with its TODOs completed as the hints' code rung says, or not

EXERCISE12 = Path(__file__).resolve().parent.parent / "lab" / "12-build-push" / "exercise.py"
STEP12_TODOS = {
    "whiteout": ("    return False\n\n\ndef is_overlay_opaque",
                 "    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0"
                 "\n\n\ndef is_overlay_opaque"),
    "opaque": ("    return False\n\n\ndef add_as_is",
               "    return ('trusted.overlay.opaque' in os.listxattr(path, follow_symlinks=False)\n"
               "            and os.getxattr(path, 'trusted.overlay.opaque', follow_symlinks=False) == b'y')"
               "\n\n\ndef add_as_is"),
    "marker": ("            for name in sorted(dirs + files):\n",
               "            if here != '.' and is_overlay_opaque(dirpath):\n"
               "                tar.addfile(tarfile.TarInfo(os.path.join(here, OPAQUE_MARKER)))\n"
               "            for name in sorted(dirs + files):\n"),
    "deletion": ("                add_as_is(tar, path, entry)\n",
                 "                if is_overlay_whiteout(st):\n"
                 "                    tar.addfile(tarfile.TarInfo(os.path.join(os.path.dirname(entry), "
                 "WHITEOUT_PREFIX + name)))\n"
                 "                    continue\n"
                 "                add_as_is(tar, path, entry)\n"),
}


def _step12(*done: str) -> str:
    source = EXERCISE12.read_text()
    for todo in done:
        old, new = STEP12_TODOS[todo]
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


def test_check_12_passes_the_completed_exercise_and_leaves_nothing(tmp_path):
    from labctl import state
    before = set(os.listdir(state.subdir("tmp")))
    result = _check(12, tmp_path, _step12(*STEP12_TODOS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "whiteouts (character devices 0/0) at /etc/motd, /srv/old" in result.stdout
    assert "opaque directory (trusted.overlay.opaque=y) /var/cache/apt" in result.stdout
    assert set(os.listdir(state.subdir("tmp"))) == before
    with open("/proc/self/mountinfo") as f:
        assert "check12-" not in f.read()


def test_check_12_fails_the_untouched_exercise_naming_the_whiteout_it_copied(tmp_path):
    from labctl import state
    before = set(os.listdir(state.subdir("tmp")))
    result = _check(12, tmp_path, EXERCISE12.read_text())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "/etc/motd is a character device 0/0 after your layer is applied" in result.stdout
    assert "etc/.wh.motd" in result.stdout
    assert set(os.listdir(state.subdir("tmp"))) == before           # a failed check removes its overlay too
    with open("/proc/self/mountinfo") as f:
        assert "check12-" not in f.read()


def test_check_12_names_the_replaced_directory_a_layer_without_opaque_markers_leaves_stale(tmp_path):
    result = _check(12, tmp_path, _step12("whiteout", "marker", "deletion"))     # TODO 2 not done
    assert result.returncode == 1, result.stdout + result.stderr
    cause = next(line for line in result.stdout.splitlines() if "✘" in line)
    assert "/var/cache/apt/" in cause and "still exists" in cause and "replaced /var/cache/apt" in cause, cause
    assert "var/cache/apt/.wh..wh..opq" in cause


def test_exercise_12_needs_only_the_standard_library(tmp_path):
    """Debian's python3, outside the lab's venv and without `labctl exercise`: it reaches its usage."""
    import subprocess
    result = subprocess.run(["/usr/bin/python3", "-I", str(EXERCISE12)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=30)
    assert result.returncode == 1 and result.stderr.startswith("Step 12 exercise:"), result.stderr


def test_check_12_says_the_names_must_be_relative_to_the_upper_directory(tmp_path):
    source = _step12(*STEP12_TODOS).replace("entry = os.path.normpath(os.path.join(here, name))", "entry = path")
    result = _check(12, tmp_path, source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "names no path of the upper directory" in result.stdout and "relative to UPPER" in result.stdout


def test_check_12_passes_the_reference_labctl_builds_own_translation():
    """--reference judges labctl/build/diff.py's write_layer, the one every RUN of `labctl build` uses."""
    result = run_labctl("check", "12", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the result equals the merged view the kernel showed" in result.stdout


# ---------------------------------------------------------------------------------------------
# Step 13: lab/13-multi-host/exercise.py with its TODOs completed as the hints' code rung says, or not

EXERCISE13 = Path(__file__).resolve().parent.parent / "lab" / "13-multi-host" / "exercise.py"
STEP13_TODOS = {
    "vxlan": ("RFC 7348, section 5, draws the packet this device makes.\n    pass\n",
              "RFC 7348, section 5, draws the packet this device makes.\n"
              "    run('ip', '-n', netns, 'link', 'add', VXLAN_IF, 'type', 'vxlan', 'id', str(vni), 'local', local,\n"
              "        'dstport', str(VXLAN_PORT), 'nolearning')\n"),
    "fdb": ("`bridge fdb show dev VXLAN_IF` reads it back.\n    pass\n",
            "`bridge fdb show dev VXLAN_IF` reads it back.\n"
            "    run('bridge', '-n', netns, 'fdb', 'append', '00:00:00:00:00:00', 'dev', VXLAN_IF, 'dst', peer_underlay)\n"),
}


def _step13(*done: str) -> str:
    source = EXERCISE13.read_text()
    for todo in done:
        old, new = STEP13_TODOS[todo]
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


def _no_c13_namespaces() -> bool:
    return not [n for n in os.listdir("/run/netns") if n.startswith("lab-c13-")] if os.path.isdir("/run/netns") else True


def test_check_13_passes_the_completed_exercise_by_a_ping_and_the_wire(tmp_path):
    result = _check(13, tmp_path, _step13(*STEP13_TODOS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FDB 00:00:00:00:00:00 → dst 10.211.0.2 (read over netlink)" in result.stdout
    assert "3 of 3 replies" in result.stdout
    assert "ICMP 10.212.0.1 → 10.212.0.2" in result.stdout          # decoded from inside the UDP packets
    assert _no_c13_namespaces()


def test_check_13_fails_the_untouched_exercise_naming_the_missing_device(tmp_path):
    result = _check(13, tmp_path, EXERCISE13.read_text())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no VXLAN device in lab-c13-a (the exercise exited 1)" in result.stdout
    assert "TODO 1" in result.stdout
    assert _no_c13_namespaces()                                       # a failed check removes its namespaces


def test_check_13_says_learning_alone_sends_nothing(tmp_path):
    source = _step13("vxlan").replace("'nolearning'", "'learning'")
    result = _check(13, tmp_path, source)
    assert result.returncode == 1, result.stdout + result.stderr
    cause = next(line for line in result.stdout.splitlines() if "✘" in line)
    assert "has no entry with dst 10.211.0.2" in cause and "Learning is on" in cause, cause


def test_check_13_names_the_wrong_vni(tmp_path):
    source = _step13(*STEP13_TODOS).replace("'id', str(vni)", "'id', str(vni + 1)")
    result = _check(13, tmp_path, source)
    assert result.returncode == 1, result.stdout + result.stderr
    cause = next(line for line in result.stdout.splitlines() if "✘" in line)
    assert "has VNI" in cause and "not the" in cause and "given" in cause, cause


def test_check_13_names_linuxs_old_port_when_dstport_is_left_out(tmp_path):
    source = _step13(*STEP13_TODOS).replace("\n        'dstport', str(VXLAN_PORT), 'nolearning')", " 'nolearning')")
    result = _check(13, tmp_path, source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "sends to UDP port 8472, not 4789" in result.stdout


def test_check_13_passes_the_reference_netlink_solution():
    result = run_labctl("check", "13", "--reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UDP 4789 packets with VNI" in result.stdout
