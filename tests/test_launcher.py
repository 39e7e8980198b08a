"""The `labctl` launcher (labctl/launcher.py): python -S with the venv's sys.path baked in.

vagrant/provision.sh installs it as /usr/local/bin/labctl; here it is generated into a temporary directory
and real commands are run through it, as a user runs them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from labctl import launcher

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def labctl_launcher(tmp_path):
    path = tmp_path / "labctl"
    assert launcher.install(path, python=sys.executable, repo=REPO)
    return str(path)


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.root(False)
def test_launcher_is_rewritten_only_when_it_would_change(labctl_launcher, tmp_path):
    before = os.stat(labctl_launcher)
    assert not launcher.install(labctl_launcher, python=sys.executable, repo=REPO)   # the second provision run
    after = os.stat(labctl_launcher)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    # a symlink there (what provision.sh used to install) is replaced by the launcher itself
    link = tmp_path / "old-labctl"
    os.symlink(os.path.join(os.path.dirname(sys.executable), "labctl"), link)
    assert launcher.install(link, python=sys.executable, repo=REPO)
    assert not link.is_symlink() and link.read_text() == open(labctl_launcher).read()


@pytest.mark.root(False)
def test_launcher_starts_python_without_site_and_finds_every_dependency(labctl_launcher):
    text = open(labctl_launcher).read()
    assert text.splitlines()[0] == f"#!{sys.executable} -S"
    # The launcher's own lines, up to the point it would start labctl, then imports in that interpreter:
    # every third-party module some command needs must be found on the baked sys.path.
    prelude = text.split("from labctl.client.main import main")[0]
    probe = prelude + ("import json, site, sys\n"
                       "import labctl, rich, psutil, pyroute2, cryptography, bcc, matplotlib\n"
                       "print(json.dumps([sys.flags.no_site, labctl.__file__, sys.prefix]))\n")
    result = _run([sys.executable, "-S", "-c", probe])
    assert result.returncode == 0, result.stderr
    no_site, package, prefix = json.loads(result.stdout)
    assert no_site == 1
    assert package == os.path.join(REPO, "labctl", "__init__.py")
    assert prefix == sys.prefix


def test_commands_work_through_the_launcher(labctl_launcher):
    steps = _run([labctl_launcher, "steps"])
    assert steps.returncode == 0 and "namespaces" in steps.stdout, steps.stderr
    # doctor probes bcc, kernel headers, tracefs, veth...: through the launcher it must find what a
    # normal start of the venv's Python finds
    through_launcher = _run([labctl_launcher, "doctor", "--json"])
    normal = _run([sys.executable, "-m", "labctl", "doctor", "--json"])
    statuses = [{row["requirement"]: row["status"] for row in json.loads(r.stdout)} for r in (through_launcher, normal)]
    assert statuses[0] == statuses[1], through_launcher.stderr
    networks = _run([labctl_launcher, "network"])      # pyroute2 and nftables
    assert networks.returncode == 0, networks.stderr


def test_run_through_the_launcher_returns_the_containers_exit_code(labctl_launcher):
    result = _run([labctl_launcher, "run", "--rm", "busybox", "sh", "-c", "exit 3"])
    assert result.returncode == 3, result.stderr
    result = _run([labctl_launcher, "run", "--rm", "busybox", "cat", "/proc/self/cgroup"])
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
