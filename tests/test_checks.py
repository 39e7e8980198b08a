"""The checks judge wrong work as wrong, and say why: each test runs `labctl check N --file` on a
program with one deliberate mistake (a student's, found in review) and on the same program without
it, and reads the verdict. The programs are small and self-contained (ctypes, the lab's library), so
they do not depend on how the exercise skeletons are worded."""
from __future__ import annotations

import textwrap

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
