"""OCI hooks: programs the runtime runs at fixed points of a container's life, each given the
container's state JSON on its stdin (runtime-spec config.md#posix-platform-hooks, runtime.md).

    hook              run by                when
    prestart          the runtime           after the environment is made, before pivot_root (deprecated:
                                            createRuntime's twin, kept for old callers)
    createRuntime     the runtime           right after prestart, in the runtime's namespaces
    createContainer   PID 1 (ociinit.py)    after createRuntime, in the container's namespaces, before
                                            pivot_root (so the path is the host's)
    startContainer    PID 1                 after `start`, before the process execs, inside the container
    poststart         `start`               after the process was released; a failure is only logged
    poststop          `delete`              after the container is gone; a failure is only logged

Within one kind the hooks run in the order listed; a hook that fails (non-zero exit, or its timeout
passed) fails a prestart/createRuntime/createContainer/startContainer stage: the container is not made.
This is how containerd's CNI plugins or nvidia-container-runtime-hook plug in between create and start.
"""
from __future__ import annotations

import json
import subprocess
import sys

from labctl.errors import LabError


def run(kind: str, hooks: list[dict], state: dict) -> None:
    """Run each hook of `kind` in order, the state JSON on stdin; LabError for the first that fails."""
    data = json.dumps(state).encode()
    for i, hook in enumerate(hooks or []):
        args = hook.get("args") or [hook["path"]]
        env = dict(e.partition("=")[::2] for e in hook.get("env") or [])
        try:
            done = subprocess.run(args, executable=hook["path"], input=data, env=env, capture_output=True,
                                  timeout=hook.get("timeout"))
        except subprocess.TimeoutExpired:
            raise LabError(f"{kind} hook {i} ({hook['path']}) did not finish within {hook['timeout']} s",
                           "fix the hook, or give it a longer timeout in config.json") from None
        except OSError as exc:
            raise LabError(f"{kind} hook {i} ({hook['path']}) could not run: {exc.strerror}",
                           "give the hook's path as an executable on the host") from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise LabError(f"{kind} hook {i} ({hook['path']}) failed with exit code {done.returncode}"
                           + (f": {said[-1]}" if said else ""), "see the hook's own output; fix it or remove it")


def run_logged(kind: str, hooks: list[dict], state: dict, log=None) -> bool:
    """poststart and poststop: a failure is logged, not raised (the spec: the runtime MUST log a warning).
    Returns whether all succeeded."""
    try:
        run(kind, hooks, state)
        return True
    except LabError as exc:
        print(f"labctl-runtime: warning: {exc.cause}", file=log or sys.stderr)
        return False

