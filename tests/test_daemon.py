"""Step 11: labctl's daemon, driven by the real clients: Debian's docker CLI (docker.io 20.10, the CLI
only: no dockerd is ever started here) and docker-py, over a Unix socket of the test's own.

What the tests believe: the kernel (a container's PID 1 in /proc, its namespaces, a bridge link), the
state directory (the container records, the image store's references, the volume directories), and
the clients' own exit codes and output, which come from the daemon's answers.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import SESSION_PIDS
from helpers import run_labctl
from labctl import state
from labctl.containers import store

pytestmark = [pytest.mark.root, pytest.mark.skipif(not os.path.exists("/usr/bin/docker"),
                                                   reason="needs Debian's docker CLI (apt-get install docker.io)")]
DOCKER = "/usr/bin/docker"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """`labctl daemon start` on a socket of this module's own; stopped (and checked gone) at the end."""
    path = str(tmp_path_factory.mktemp("daemon") / "labctl.sock")
    started = run_labctl("daemon", "start", "--socket", path)
    assert started.returncode == 0, started.stderr + started.stdout
    yield path
    stopped = run_labctl("daemon", "stop", "--socket", path)
    assert stopped.returncode == 0, stopped.stderr
    assert not os.path.exists(path) and not os.path.exists(path[:-5] + ".pid")


def docker(daemon, *args, timeout=60, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, DOCKER_HOST=f"unix://{daemon}", DOCKER_CONFIG=os.path.dirname(daemon))
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)


def raw_request(path: str, method: str, url: str, body: bytes = b"", headers: str = "") -> tuple[int, dict]:
    """One HTTP/1.0 request over the socket, by hand: (status, JSON body)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        try:
            s.sendall(f"{method} {url} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                      f"{headers}\r\n".encode() + body)
        except BrokenPipeError:   # the daemon answered before reading it all (a body too large)
            pass
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload) if payload.strip() else {}


def alive(pid: int) -> bool:
    return state.process_state(pid) not in (None, "Z", "X")


def test_version_info_and_ping(daemon):
    version = docker(daemon, "version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}")
    assert version.returncode == 0 and version.stdout.split() == ["1.41", "linux"], version.stderr
    info = docker(daemon, "info", "--format", "{{json .}}")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["DockerRootDir"] == os.environ["LABCTL_STATE_DIR"]
    mode = os.stat(daemon).st_mode & 0o777
    assert mode == 0o660                                        # root and the group labctl only


def test_run_in_the_foreground_gives_the_output_and_the_exit_code(daemon):
    before = {c.id for c in store.all_containers()}
    result = docker(daemon, "run", "--rm", "busybox", "sh", "-c", "echo hi; exit 3")
    assert (result.returncode, result.stdout) == (3, "hi\n"), result.stderr
    assert {c.id for c in store.all_containers()} == before     # --rm: the record is gone too
    plain = docker(daemon, "run", "--rm", "busybox", "echo", "hi")
    assert (plain.returncode, plain.stdout) == (0, "hi\n")
    missing = docker(daemon, "run", "--rm", "busybox", "no-such-command-xyz")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr


def test_a_detached_container_is_listed_followed_entered_and_stopped(daemon):
    started = docker(daemon, "run", "-d", "--name", "dweb", "-e", "WHO=lab", "-m", "64m", "--pids-limit", "20",
                     "busybox", "sh", "-c", "echo one; sleep 1; echo two; sleep 600")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        container = store.find("dweb")
        assert container.id == container_id and alive(container.pid)
        assert os.readlink(f"/proc/{container.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert "dweb" in docker(daemon, "ps", "--format", "{{.Names}}").stdout.split()
        followed = subprocess.Popen([DOCKER, "logs", "-f", "dweb"], stdout=subprocess.PIPE, text=True,
                                    env=dict(os.environ, DOCKER_HOST=f"unix://{daemon}"))
        try:
            assert followed.stdout.readline() == "one\n" and followed.stdout.readline() == "two\n"
        finally:
            followed.kill()
            followed.wait()
        assert docker(daemon, "logs", "--tail", "1", "dweb").stdout == "two\n"
        entered = docker(daemon, "exec", "dweb", "sh", "-c", "echo $WHO; echo oops >&2; exit 4")
        assert (entered.returncode, entered.stdout, entered.stderr) == (4, "lab\n", "oops\n")   # stream 2
        fed = docker(daemon, "exec", "-i", "dweb", "cat", input="typed\n")
        assert fed.stdout == "typed\n"
        [inspected] = json.loads(docker(daemon, "inspect", "dweb").stdout)
        assert inspected["State"]["Pid"] == container.pid and inspected["HostConfig"]["Memory"] == 64 << 20
        top = docker(daemon, "top", "dweb")
        assert str(container.pid) in top.stdout
        assert docker(daemon, "stop", "-t", "1", "dweb").returncode == 0
        assert not alive(container.pid)                           # the kernel says it is gone
        assert "Exited (137)" in docker(daemon, "ps", "-a", "--filter", "name=dweb",
                                        "--format", "{{.Status}}").stdout
    finally:
        removed = docker(daemon, "rm", "-f", "dweb")
    assert removed.returncode == 0 and not os.path.exists(store.containers_dir() / container_id)


def test_labctl_and_docker_share_one_truth(daemon):
    """A container `docker run -d` started is in `labctl ps`, and `labctl stop` stops it (the kernel says)."""
    started = docker(daemon, "run", "-d", "--name", "shared", "busybox", "sleep", "600")
    assert started.returncode == 0, started.stderr
    try:
        pid = store.find("shared").pid
        assert "shared" in run_labctl("ps").stdout
        assert run_labctl("stop", "-t", "1", "shared").returncode == 0
        assert not alive(pid)
        assert docker(daemon, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                      "shared").stdout.split() == ["exited", "137"]
    finally:
        docker(daemon, "rm", "-f", "shared")


def test_images_pull_tag_and_rmi(daemon, tmp_path):
    from labctl.images import labregistry
    from labctl.images.store import ImageStore
    layout = labregistry.write_lab_layout(tmp_path / "layout")
    with labregistry.RegistryServer(tmp_path / "reg") as registry:
        SESSION_PIDS.add(registry.process.pid)
        labregistry.seed(registry.host, layout, ["layered"])
        ref = f"{registry.host}/lab/layered"
        pulled = docker(daemon, "pull", ref)
        assert pulled.returncode == 0, pulled.stderr
        assert f"{ref}:latest" in ImageStore().refs()                   # in the store, by its reference
        failed = docker(daemon, "pull", f"{registry.host}/lab/absent")
        assert failed.returncode == 1 and "not found" in failed.stderr + failed.stdout
    listed = docker(daemon, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert f"{ref}:latest" in listed
    assert docker(daemon, "tag", ref, "retagged:v1").returncode == 0
    assert "docker.io/library/retagged:v1" in ImageStore().refs()
    assert docker(daemon, "rmi", "retagged:v1").returncode == 0
    assert docker(daemon, "rmi", ref).returncode == 0
    assert f"{ref}:latest" not in ImageStore().refs()
    missing = docker(daemon, "image", "inspect", "no-such-image")
    assert missing.returncode == 1 and "No such image" in missing.stderr


def test_save_and_load_a_docker_archive(daemon, tmp_path):
    from labctl.images.store import ImageStore
    archive = tmp_path / "saved.tar"
    assert docker(daemon, "tag", "busybox", "saved:v1").returncode == 0
    assert docker(daemon, "save", "-o", str(archive), "saved:v1").returncode == 0
    assert docker(daemon, "rmi", "saved:v1").returncode == 0
    assert "docker.io/library/saved:v1" not in ImageStore().refs()
    loaded = docker(daemon, "load", "-i", str(archive))
    assert loaded.returncode == 0 and "saved:v1" in loaded.stdout, loaded.stderr
    assert "docker.io/library/saved:v1" in ImageStore().refs()
    assert docker(daemon, "rmi", "saved:v1").returncode == 0


def test_stdin_and_a_terminal(daemon):
    fed = docker(daemon, "run", "--rm", "-i", "busybox", "cat", input="piped in\n")
    assert (fed.returncode, fed.stdout) == (0, "piped in\n"), fed.stderr
    # `script` gives the docker CLI a terminal of its own, so that it asks for one (-t)
    terminal = subprocess.run(["script", "-qec", f"{DOCKER} run -it --rm busybox sh -c 'tty; exit 5'", "/dev/null"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                              env=dict(os.environ, DOCKER_HOST=f"unix://{daemon}"))
    assert terminal.returncode == 5 and "/dev/pts/0" in terminal.stdout, terminal.stdout


def test_networks_and_volumes(daemon):
    made = docker(daemon, "network", "create", "labnet")
    assert made.returncode == 0, made.stderr
    [info] = json.loads(docker(daemon, "network", "inspect", "labnet").stdout)
    bridge = info["Options"]["com.docker.network.bridge.name"]
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode == 0   # the kernel's
    assert "labnet" in docker(daemon, "network", "ls", "--format", "{{.Name}}").stdout.split()
    assert docker(daemon, "network", "create", "labnet").returncode == 1          # the name is taken
    assert docker(daemon, "network", "rm", "labnet").returncode == 0
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    assert docker(daemon, "volume", "create", "labvol").returncode == 0
    assert (state.state_dir() / "volumes" / "labvol" / "_data").is_dir()
    assert "labvol" in docker(daemon, "volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert docker(daemon, "volume", "rm", "labvol").returncode == 0
    assert not (state.state_dir() / "volumes" / "labvol").exists()


def test_events_stream_live(daemon):
    env = dict(os.environ, DOCKER_HOST=f"unix://{daemon}")
    watcher = subprocess.Popen([DOCKER, "events", "--format", "{{.Type}} {{.Action}}"], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        time.sleep(0.5)
        assert docker(daemon, "run", "--rm", "busybox", "true").returncode == 0
        seen = [watcher.stdout.readline().strip() for _ in range(4)]
    finally:
        watcher.kill()
        watcher.wait()
    assert seen == ["container create", "container start", "container die", "container destroy"]


def test_errors_are_dockers_and_the_daemon_stays_up(daemon):
    gone = docker(daemon, "rm", "no-such-container")
    assert gone.returncode == 1 and gone.stderr == "Error: No such container: no-such-container\n"
    assert raw_request(daemon, "POST", "/v1.41/containers/create", b"{not json") [0] == 400
    status, body = raw_request(daemon, "POST", "/v1.41/containers/create", b'{"Image": "busybox", "Bogus": 1}')
    assert status == 400 and "Bogus" in body["message"]
    status, body = raw_request(daemon, "POST", "/v1.41/containers/create", b'{"Image": "' + b"a" * (2 << 20) + b'"}')
    assert status == 413
    status, body = raw_request(daemon, "POST", "/v1.41/images/create?fromImage=../../etc&tag=x")
    assert status == 400 and "message" in body
    first = docker(daemon, "create", "--name", "taken", "busybox", "true")
    try:
        again = docker(daemon, "create", "--name", "taken", "busybox", "true")
        assert again.returncode == 1 and "already in use" in again.stderr
    finally:
        docker(daemon, "rm", "-f", "taken")
    assert first.returncode == 0
    assert docker(daemon, "version").returncode == 0                 # still up


def test_docker_py_drives_the_same_subset(daemon):
    docker_py = pytest.importorskip("docker")
    client = docker_py.DockerClient(base_url=f"unix://{daemon}", version="1.41")
    try:
        assert client.ping() is True
        assert client.containers.run("busybox", ["echo", "from-py"], remove=True) == b"from-py\n"
        box = client.containers.run("busybox", ["sleep", "600"], detach=True, name="pybox")
        try:
            pid = store.find("pybox").pid
            assert alive(pid) and box.status in ("created", "running")
            assert box.exec_run(["sh", "-c", "echo inside; exit 2"]) == (2, b"inside\n")
            assert "pybox" in [c.name for c in client.containers.list()]
            box.stop(timeout=1)
            assert not alive(pid)
        finally:
            box.remove(force=True)
        with pytest.raises(docker_py.errors.NotFound):
            client.containers.get("pybox")
        assert any("localhost/busybox:latest" in i.tags for i in client.images.list())
        vol = client.volumes.create("pyvol")
        assert (state.state_dir() / "volumes" / "pyvol" / "_data").is_dir()
        vol.remove()
    finally:
        client.close()


def test_live_restore_after_sigkill(tmp_path):
    """SIGKILL the daemon: containers run on; started again, it serves them, and an exit code recorded
    while no daemon ran is kept."""
    daemon = str(tmp_path / "restore.sock")
    assert run_labctl("daemon", "start", "--socket", daemon).returncode == 0
    long = docker(daemon, "run", "-d", "--name", "survivor", "busybox", "sh", "-c", "echo up; sleep 600")
    short = docker(daemon, "run", "-d", "--name", "ender", "busybox", "sh", "-c", "sleep 1; exit 7")
    assert long.returncode == short.returncode == 0
    try:
        pid = store.find("survivor").pid
        kill_daemon(daemon)
        time.sleep(1.5)                                   # "ender" exits while no daemon runs
        assert alive(pid)
        restarted = run_labctl("daemon", "start", "--socket", daemon)
        assert restarted.returncode == 0, restarted.stderr
        assert "survivor" in docker(daemon, "ps", "--format", "{{.Names}}").stdout.split()
        assert docker(daemon, "logs", "survivor").stdout == "up\n"
        assert docker(daemon, "inspect", "--format", "{{.State.ExitCode}}", "ender").stdout.strip() == "7"
        assert docker(daemon, "stop", "-t", "1", "survivor").returncode == 0
        assert not alive(pid)
    finally:
        docker(daemon, "rm", "-f", "survivor", "ender")
        run_labctl("daemon", "stop", "--socket", daemon)


@pytest.mark.parametrize("supervisor_too", [False, True], ids=["daemon-killed", "daemon-and-supervisor-killed"])
def test_an_exit_handed_over_to_a_daemon_killed_before_it_recorded_it_is_kept(tmp_path, supervisor_too):
    """A daemon container's supervisor hands the exit over to the daemon (supervisor.hand_over), which
    records it, tears down and answers "done". Here the daemon is stopped (SIGSTOP) when the container
    exits: the supervisor has handed over (exit_code beside the record) and waits, the container is not
    torn down yet. Then the daemon is SIGKILLed: the supervisor reads EOF and tears down itself; or, with
    the supervisor SIGKILLed too, the restarted daemon records the exit code left beside the record and
    tears down. Either way: exited 7, the cgroup and the overlay mount gone (the kernel's)."""
    daemon = str(tmp_path / "handover.sock")
    assert run_labctl("daemon", "start", "--socket", daemon).returncode == 0
    with open(daemon[:-5] + ".pid") as f:
        daemon_pid = json.load(f)["pid"]
    try:
        ran = docker(daemon, "run", "-d", "--name", "handed", "busybox", "sh", "-c", "sleep 1; exit 7")
        assert ran.returncode == 0, ran.stderr
        os.kill(daemon_pid, signal.SIGSTOP)
        container = store.find("handed")
        supervisor = (container.state["supervisor_pid"], container.state["supervisor_start"])
        deadline = time.monotonic() + 10
        while not (container.dir / "exit_code").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (container.dir / "exit_code").read_text().strip() == "7", "the supervisor did not hand over"
        time.sleep(0.3)
        left = store.load(container.id)
        assert left.state["status"] == "running", left.state   # handed over, not recorded: the daemon does it
        assert state.process_start_time(supervisor[0]) == supervisor[1], "the supervisor did not wait"
        cgroups = list(left.state["cgroup"]["dirs"].values())   # {hierarchy: the container's cgroup there}
        assert cgroups and all(os.path.isdir(d) for d in cgroups)
        assert state.is_mountpoint(left.state["root"])
        if supervisor_too:
            os.kill(supervisor[0], signal.SIGKILL)
        os.kill(daemon_pid, signal.SIGKILL)
        os.kill(daemon_pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while (alive(daemon_pid) or state.process_start_time(supervisor[0]) == supervisor[1]) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        if not supervisor_too:   # the supervisor's own teardown, with no daemon at all
            ended = store.load(container.id)
            assert (ended.state["status"], ended.state["exit_code"]) == ("exited", 7), ended.state
            assert not [d for d in cgroups if os.path.exists(d)] and not state.is_mountpoint(left.state["root"])
        restarted = run_labctl("daemon", "start", "--socket", daemon)
        assert restarted.returncode == 0, restarted.stderr
        shown = docker(daemon, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "handed")
        assert shown.stdout.split() == ["exited", "7"], shown.stdout + shown.stderr
        assert not [d for d in cgroups if os.path.exists(d)] and not state.is_mountpoint(left.state["root"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon_pid, signal.SIGCONT)
        docker(daemon, "rm", "-f", "handed")
        run_labctl("daemon", "stop", "--socket", daemon)


def kill_daemon(socket_path: str) -> None:
    with open(socket_path[:-5] + ".pid") as f:
        pid = json.load(f)["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_labctl_cleanup_removes_a_killed_daemons_socket(tmp_path):
    path = str(tmp_path / "crash.sock")
    assert run_labctl("daemon", "start", "--socket", path).returncode == 0
    kill_daemon(path)
    assert os.path.exists(path)                           # what a crash leaves
    assert run_labctl("cleanup").returncode == 0
    assert not os.path.exists(path) and not os.path.exists(path[:-5] + ".pid")
