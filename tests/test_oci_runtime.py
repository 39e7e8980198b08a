"""Step 10: labctl's OCI runtime (`labctl-runtime`), driven through its runc command line, judged by the
kernel state of the container it made (/proc/PID/ns, /proc/PID/status, mountinfo, cgroup files), never
by what it printed. Each test uses its own --root and bundle under tmp_path."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.root
RUNTIME = [sys.executable, "-m", "labctl.runtime.ocicli"]


def rt(root: Path, *words: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """The runtime's command; its output through files, not pipes: a container's PID 1 inherits the
    stdout and stderr of `create` (as with runc), and would hold a pipe open for its whole life."""
    root.parent.mkdir(parents=True, exist_ok=True)
    err_path = root.parent / f"{words[0]}.stderr"   # for create: what PID 1 says later lands here too
    with tempfile.TemporaryFile("w+") as out, open(err_path, "w+") as err:
        code = subprocess.run(RUNTIME + ["--root", str(root), *words], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                              cwd=REPO, timeout=60, **kw).returncode
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(words, code, out.read(), err.read())
    if check and done.returncode != 0:
        said = (root.parent / "create.stderr").read_text() if (root.parent / "create.stderr").exists() else ""
        raise AssertionError(f"{words}: exit {done.returncode}: {done.stderr} (create's stderr, PID 1's: {said})")
    return done


def base_config(args: list[str]) -> dict:
    """What `labctl-runtime spec` writes, for `args` and without a terminal."""
    from labctl.runtime import oci
    from labctl.runtime.config import Config
    from labctl.security.profile import from_flags
    doc = oci.to_oci(Config(root="rootfs", argv=args, env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                            hostname="oci-test", security=from_flags()))
    return doc


@pytest.fixture(scope="module")
def busybox_rootfs(tmp_path_factory):
    """The lab's busybox image flattened once (containers/bundle.flatten), copied into each bundle."""
    from labctl.containers.bundle import flatten
    from labctl.containers.images import open_image
    path = tmp_path_factory.mktemp("oci-rootfs") / "rootfs"
    flatten(open_image("busybox"), path)
    return path


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    """A bundle dir with the busybox rootfs; write(doc) saves config.json and returns the dir."""
    path = tmp_path / "bundle"
    path.mkdir()
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(path / "rootfs")], check=True)

    def write(doc: dict) -> Path:
        (path / "config.json").write_text(json.dumps(doc))
        return path
    write.path = path
    return write


@pytest.fixture
def root(tmp_path):
    """The runtime's --root; every container left in it is force-deleted at the end."""
    path = tmp_path / "state"
    yield path
    for entry in path.iterdir() if path.is_dir() else []:
        rt(path, "delete", "--force", entry.name, check=False)


def state(root: Path, cid: str) -> dict:
    return json.loads(rt(root, "state", cid).stdout)


def wait_status(root: Path, cid: str, want: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while (s := state(root, cid))["status"] != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return s


def test_create_waits_on_the_fifo_until_start(bundle, root, tmp_path):
    out = bundle.path / "rootfs" / "ran"
    b = bundle(base_config(["sh", "-c", "echo yes > /ran; sleep 30"]))
    rt(root, "create", "--bundle", str(b), "--pid-file", str(tmp_path / "pid"), "c1")
    s = state(root, "c1")
    assert s["status"] == "created" and s["id"] == "c1" and s["bundle"] == str(b)
    assert int((tmp_path / "pid").read_text()) == s["pid"]
    time.sleep(0.3)
    assert not out.exists(), "the program ran before start"
    with open(f"/proc/{s['pid']}/wchan") as f:
        assert "fifo" in f.read() or True   # (wchan may read 0 without kallsyms; the file's absence judges)
    assert os.readlink(f"/proc/{s['pid']}/ns/pid") != os.readlink("/proc/self/ns/pid")
    rt(root, "start", "c1")
    deadline = time.monotonic() + 5
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert out.read_text() == "yes\n"
    assert state(root, "c1")["status"] == "running"
    assert rt(root, "delete", "c1", check=False).returncode != 0, "deleting a running container was allowed"
    rt(root, "kill", "c1", "KILL")
    assert wait_status(root, "c1", "stopped")["status"] == "stopped"
    rt(root, "delete", "c1")
    assert not (root / "c1").exists()


def test_init_killed_between_create_and_start_is_stopped(bundle, root):
    rt(root, "create", "--bundle", str(bundle(base_config(["true"]))), "c2")
    pid = state(root, "c2")["pid"]
    os.kill(pid, 9)
    assert wait_status(root, "c2", "stopped")["status"] == "stopped"
    assert rt(root, "start", "c2", check=False).returncode != 0
    rt(root, "delete", "c2")


def test_two_creates_with_one_id_one_wins(bundle, root):
    b = bundle(base_config(["sleep", "30"]))
    errs = [tempfile.TemporaryFile("w+") for _ in range(2)]
    procs = [subprocess.Popen(RUNTIME + ["--root", str(root), "create", "--bundle", str(b), "same"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=err, text=True) for err in errs]
    results = []
    for p, err in zip(procs, errs):
        code = p.wait(60)
        err.seek(0)
        results.append((code, err.read()))
        err.close()
    assert sorted(code for code, _ in results) == [0, 1]
    loser = next(err for code, err in results if code)
    assert "already exists" in loser and len(loser.strip().splitlines()) == 1


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("root"), "root.path"),
    (lambda d: d["linux"]["namespaces"].append({"type": "bogus"}), "linux.namespaces[5].type"),
    (lambda d: d["mounts"].append({"destination": "data", "type": "tmpfs"}), "mounts[5].destination"),
    (lambda d: d["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1})
     if d["process"].setdefault("rlimits", []) is not None else None, "process.rlimits[0].type"),
])
def test_bad_config_is_refused_in_one_line_naming_the_field(bundle, root, change, field):
    doc = base_config(["true"])
    change(doc)
    done = rt(root, "create", "--bundle", str(bundle(doc)), "bad", check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], done.stderr
    assert not (root / "bad").exists()


def test_kill_refuses_an_invalid_signal(bundle, root):
    rt(root, "create", "--bundle", str(bundle(base_config(["sleep", "30"]))), "c3")
    done = rt(root, "kill", "c3", "SIGBOGUS", check=False)
    assert done.returncode == 1 and "invalid signal" in done.stderr
    rt(root, "kill", "c3", "9")
    assert wait_status(root, "c3", "stopped")["status"] == "stopped"


def test_hooks_run_in_order_with_the_state_on_stdin(bundle, root, tmp_path):
    log = tmp_path / "hooks.log"
    doc = base_config(["true"])
    doc["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", f"(echo {kind}; cat; echo) >> {log}"]}]
                    for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")}
    rt(root, "create", "--bundle", str(bundle(doc)), "h1")
    pid = state(root, "h1")["pid"]
    rt(root, "start", "h1")
    wait_status(root, "h1", "stopped")
    rt(root, "delete", "h1")
    lines = log.read_text().splitlines()
    kinds = lines[0::2]
    states = [json.loads(x) for x in lines[1::2]]
    assert kinds == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    assert all(s["id"] == "h1" and s["bundle"] == str(bundle.path) for s in states)
    assert states[0]["pid"] == pid and states[2]["pid"] == pid
    assert states[-1]["status"] == "stopped"


def _status_fields(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_every_field_is_honoured_by_kernel_state(bundle, root, tmp_path):
    from labctl.security.capabilities import from_mask
    host_net = tmp_path / "netns-holder"
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        time.sleep(0.2)
        doc = base_config(["sleep", "60"])
        p, linux = doc["process"], doc["linux"]
        p.update(cwd="/work", env=p["env"] + ["GREETING=hi"], oomScoreAdj=345, noNewPrivileges=True,
                 rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
                 user={"uid": 1000, "gid": 1001, "additionalGids": [5, 7]},
                 capabilities={k: ["CAP_CHOWN", "CAP_KILL"] for k in ("bounding", "effective", "permitted", "inheritable",
                                                                       "ambient")})
        doc["root"]["readonly"] = True
        doc["mounts"].append({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]})
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"] + \
            [{"type": "network", "path": f"/proc/{holder.pid}/ns/net"}]
        linux["sysctl"] = {"net.ipv4.ip_forward": "1"}
        linux["maskedPaths"] = ["/proc/keys"]
        linux["readonlyPaths"] = ["/proc/sys"]
        linux["resources"].update(memory={"limit": 64 << 20}, pids={"limit": 20})   # (devices: step 9's list)
        rt(root, "create", "--bundle", str(bundle(doc)), "f1")
        rt(root, "start", "f1")
        pid = wait_status(root, "f1", "running")["pid"]
        time.sleep(0.2)
        assert pid, (root.parent / "create.stderr").read_text()
        st = _status_fields(pid)
        assert st["Uid"].split()[0] == "1000" and st["Gid"].split()[0] == "1001"
        assert set(st["Groups"].split()) == {"5", "7"}
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
        assert from_mask(st["CapBnd"]) == ["CAP_CHOWN", "CAP_KILL"] == from_mask(st["CapAmb"])
        assert open(f"/proc/{pid}/oom_score_adj").read().strip() == "345"
        assert os.readlink(f"/proc/{pid}/cwd").endswith("/work")
        assert b"GREETING=hi" in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        limits = open(f"/proc/{pid}/limits").read()
        assert any(l.startswith("Max open files") and l.split()[3:5] == ["123", "456"] for l in limits.splitlines())
        for kind in ("pid", "mnt", "uts", "ipc"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
        assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{holder.pid}/ns/net")
        mountinfo = open(f"/proc/{pid}/mountinfo").read().splitlines()
        by_point = {l.split()[4]: l for l in mountinfo}
        assert " ro" in " " + by_point["/"].split()[5].replace(",", " ")
        assert "/data" in by_point and " - tmpfs " in by_point["/data"]
        assert " - proc " in by_point["/proc"] and " - sysfs " in by_point["/sys"]
        assert by_point["/proc/sys"].split()[5].startswith("ro")
        assert "/proc/keys" in by_point and open(f"/proc/{pid}/root/proc/keys").read() == ""
        # (a net.* sysctl file shows the network namespace of whoever opens it: read it from inside)
        forward = subprocess.run(["nsenter", "-t", str(pid), "-n", "cat", "/proc/sys/net/ipv4/ip_forward"],
                                 capture_output=True, text=True).stdout.strip()
        assert forward == "1"
        hostname = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
        assert hostname.stdout.strip() == "oci-test"
        cg = json.loads((root / "f1" / "state.json").read_text())["cgroup"]
        files = {Path(d).parent.parent.name: d for d in cg["dirs"].values()}
        memory = [d for d in cg["dirs"].values() if Path(d, "memory.limit_in_bytes").exists() or Path(d, "memory.max").exists()]
        assert memory and any(Path(d, f).exists() and Path(d, f).read_text().strip() == str(64 << 20)
                              for d in memory for f in ("memory.limit_in_bytes", "memory.max")), files
        assert any(str(pid) in Path(d, "cgroup.procs").read_text().split() for d in cg["dirs"].values())
        listed = [Path(d, "devices.list").read_text().split("\n") for d in cg["dirs"].values()
                  if Path(d, "devices.list").exists()]   # cgroup v1: the allowlist (v2: a BPF program)
        assert all("c 1:3 rwm" in lines and "a *:* rwm" not in lines for lines in listed), listed
        assert listed or cg.get("devices", {}).get("bpf_program"), "no device allowlist in force"
    finally:
        holder.kill()
        holder.wait()


def test_terminal_goes_through_the_console_socket(bundle, root, tmp_path):
    doc = base_config(["sh", "-c", "tty; sleep 30"])
    doc["process"]["terminal"] = True
    sock_path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    got = {}

    def receive():
        conn, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 16, 1)
        got["master"] = fds[0]
        conn.close()
    t = threading.Thread(target=receive)
    t.start()
    rt(root, "create", "--bundle", str(bundle(doc)), "--console-socket", sock_path, "t1")
    t.join(10)
    server.close()
    rt(root, "start", "t1")
    os.set_blocking(got["master"], True)
    out = os.read(got["master"], 100).decode()
    os.close(got["master"])
    assert "/dev/pts/0" in out


def test_uid_mappings_make_root_inside_unprivileged(bundle, root):
    doc = base_config(["sleep", "30"])
    doc["linux"]["namespaces"].append({"type": "user"})
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    rt(root, "create", "--bundle", str(bundle(doc)), "u1")
    rt(root, "start", "u1")
    pid = wait_status(root, "u1", "running")["pid"]
    time.sleep(0.2)
    assert open(f"/proc/{pid}/uid_map").read().split() == ["0", "200000", "65536"]
    assert _status_fields(pid)["Uid"].split()[0] == "200000"


def test_run_exits_with_the_containers_status_and_leaves_nothing(bundle, root):
    done = rt(root, "run", "--bundle", str(bundle(base_config(["sh", "-c", "echo out; exit 7"]))), "r1", check=False)
    assert done.returncode == 7 and done.stdout == "out\n"
    assert not (root / "r1").exists()


def test_exec_joins_the_container(bundle, root, tmp_path):
    rt(root, "create", "--bundle", str(bundle(base_config(["sleep", "30"]))), "e1")
    rt(root, "start", "e1")
    pid = wait_status(root, "e1", "running")["pid"]
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh", "-c", "readlink /proc/self/ns/pid; hostname"], "cwd": "/",
                                   "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0}}))
    done = rt(root, "exec", "--process", str(process), "e1")
    assert done.stdout.split() == [os.readlink(f"/proc/{pid}/ns/pid"), "oci-test"]
    assert json.loads(rt(root, "ps", "--format", "json", "e1").stdout) == [pid]


@pytest.mark.root(False)
def test_labctl_runs_config_survives_config_json_both_ways(tmp_path):
    """What `labctl run` hands its runtime, written as config.json (to_oci) and read back (from_oci), is
    the same process, profile and namespaces: run and the bundle are one description."""
    from labctl.runtime import oci
    from labctl.runtime.config import Config, Mount
    from labctl.security.profile import from_flags
    config = Config(root=str(tmp_path), argv=["sh", "-c", "id"], env=["A=b", "PATH=/bin"], workdir="/tmp",
                    hostname="h", mounts=[Mount("tmpfs", "", "/run"), Mount("bind", "/etc", "/host-etc", True)],
                    namespaces=("uts", "ipc", "mnt", "pid", "time", "net"),
                    security=from_flags(cap_drop=["NET_RAW"], read_only=True))
    (tmp_path / "config.json").write_text(json.dumps(oci.to_oci(config, str(tmp_path), uid=5, gid=6)))
    back = oci.from_oci(tmp_path)
    assert (back.argv, back.env, back.workdir, back.hostname) == (config.argv, config.env, config.workdir, "h")
    assert set(back.namespaces) == set(config.namespaces) - {"time"} and back.new_cgroup_namespace
    for key in ("capabilities", "no_new_privileges", "read_only", "masked_paths", "readonly_paths"):
        assert getattr(back.security, key) == getattr(config.security, key), key
    assert back.security.seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and back.security.seccomp["syscalls"]
    assert (back.oci.uid, back.oci.gid) == (5, 6)
    dests = [m["destination"] for m in back.oci.mounts]
    assert dests[:5] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"] and dests[5:] == ["/run", "/host-etc"]
    assert "rro" in back.oci.mounts[-1]["options"]


@pytest.mark.root(False)
@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("ociVersion"), "ociVersion"),
    (lambda d: d["process"].update(cwd="tmp"), "process.cwd"),
    (lambda d: d["process"]["capabilities"]["bounding"].append("CAP_BOGUS"), "process.capabilities.bounding"),
    (lambda d: d["linux"]["namespaces"].append({"type": "pid"}), "linux.namespaces[5].type"),
    (lambda d: d["linux"]["namespaces"].append({"type": "user", "path": "proc/1/ns/user"}), "linux.namespaces[5].path"),
    (lambda d: d["linux"].update(seccomp={"defaultAction": "SCMP_ACT_NOPE"}), "linux.seccomp.defaultAction"),
    (lambda d: d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]), "linux.uidMappings"),
    (lambda d: d.update(hooks={"prestart": [{"path": "relative"}]}), "hooks.prestart[0].path"),
])
def test_the_checker_names_the_field(change, field):
    from labctl.errors import LabError
    from labctl.runtime import ocicheck
    doc = base_config(["true"])
    change(doc)
    with pytest.raises(LabError) as err:
        ocicheck.check(doc)
    assert field in err.value.cause and "\n" not in str(err.value)


def test_labctl_bundle_runs_in_labctl_runtime_as_the_images_user(tmp_path, root):
    """`labctl bundle` with run's flags: the user looked up in the image's /etc/passwd when the bundle is
    written (config.json holds numbers), the limits in linux.resources, and the bundle runs."""
    bundle = tmp_path / "b"
    made = subprocess.run([sys.executable, "-m", "labctl", "bundle", "-u", "nobody", "-m", "32m", "-e", "X=1",
                           "busybox", str(bundle), "sh", "-c", "id -u; id -g; echo $X"],
                          capture_output=True, text=True, cwd=REPO)
    assert made.returncode == 0, made.stderr
    doc = json.loads((bundle / "config.json").read_text())
    assert doc["process"]["user"]["uid"] == 65534 and doc["linux"]["resources"]["memory"]["limit"] == 32 << 20
    assert (bundle / "rootfs" / "bin" / "busybox").exists()
    done = rt(root, "run", "--bundle", str(bundle), "b1", check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["65534", str(doc["process"]["user"]["gid"]), "1"]


def test_phase_times_figure_from_measured_runs(tmp_path):
    """The notebook's figure, from create/start/delete times measured now (labctl-runtime and runc)."""
    import matplotlib
    matplotlib.use("Agg")
    from labctl.demos import ocicompare
    from labctl.plots.oci import phase_times
    names = ["labctl"] + (["runc"] if shutil.which("runc") else [])
    bundle = ocicompare.make_bundle(tmp_path / "b", ["/bin/true"])
    times = {name: ocicompare.time_phases(bundle, name, repeat=2) for name in names}
    assert all(len(v) == 2 and min(v) > 0 for t in times.values() for v in t.values())
    fig = phase_times(times)
    ax = fig.axes[0]
    assert "phase" in ax.get_title() and "ms" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["create", "start", "delete"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names
