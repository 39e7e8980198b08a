"""Errors a student can hit. Each carries the cause and the fix; the CLI prints them as one line,
`labctl: error: CAUSE (fix: FIX)`, with no traceback unless `--debug` is given (then the traceback,
and exit 1).

The tree, and what `labctl` (client/main.py's main()) exits with for each:

    LabError                      something the user can fix: the cause and the fix          exit 2
    ├── NotRootError              the command needs root (namespaces, mounts, cgroups)       exit 2
    ├── UnknownStepError          `labctl step|check N` for a step that is not in the lab    exit 2
    ├── MissingRequirementError   a program or kernel feature is missing (bcc, tracefs,      exit 2
    │                             skopeo, busybox-static, the registry binary, ...)
    ├── CheckFailed               `labctl check N` judged the kernel state and it is wrong   exit 1
    │                             (printed as FAIL and a hint; elsewhere exit 2)
    ├── CommandFailed             the container's command could not be executed: exit 126    126/127
    │                             (found, not executable) or 127 (not found), as Docker's;
    │                             `labctl exec` gives 126 for either
    ├── NoSuchContainer           no container has that name or ID prefix                    exit 2
    ├── LockTimeout               another labctl held a lock too long; names it (state.py)   exit 2
    │   (these live in labctl/images/, beside the code that raises them)
    ├── InvalidReference          an image reference that does not parse (reference.py)      exit 2
    ├── NoMatchingPlatform        an index offers no manifest for the platform (mediatypes)  exit 2
    ├── ImageNotFound             no such image in the store (store.py)                      exit 2
    ├── ImageInUse                rmi of an image containers use; names them (store.py)      exit 2
    ├── DigestMismatch            a blob is not what its digest says (store.py)              exit 2
    ├── LayerRejected             a layer entry breaks a safety rule (layers.py)             exit 2
    └── RegistryError             the registry refused or failed (auth.py)                   exit 2
        ├── AuthError             no credentials, or wrong ones (auth.py)                    exit 2
        └── TransferStalled       a blob stopped arriving for the stall timeout (transfer.py) exit 2

Not LabErrors: Ctrl-C (KeyboardInterrupt) exits 130 once what the command made is removed; SIGTERM
is turned into the same; a closed stdout (BrokenPipeError) exits 0. A command that ran exits with its
own status (`labctl run` with the container's: 128+N when it died of signal N).

An error raised in a forked child (in the new namespaces, before exec) crosses the fork pipe as data
(labctl.kernel.handshake) and is raised again in the parent as a LabError with the child's cause and
fix; an unexpected exception's traceback comes along as a ChildError chained to it.
"""


class LabError(Exception):
    """An error with a one-line cause and a one-line fix; the CLI prints `error: CAUSE (fix: FIX)`."""

    def __init__(self, cause: str, fix: str = ""):
        super().__init__(cause)
        self.cause = cause
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.cause} (fix: {self.fix})" if self.fix else self.cause


class NotRootError(LabError):
    """The command needs root: namespaces, mounts and cgroups are privileged."""

    def __init__(self, what: str = "this command"):
        super().__init__(f"{what} needs root: namespaces, mounts and cgroups are privileged",
                         "run it as root, e.g. `sudo labctl ...`")


class UnknownStepError(LabError):
    """A step number (or name) that is not in the curriculum, or not in the lab yet."""


class MissingRequirementError(LabError):
    """A program, package or kernel feature the command needs is not there; the fix says how to get it."""


class CommandFailed(LabError):
    """The command could not be started inside the container: `exit_code` is Docker's 126 (it is there
    but cannot be executed) or 127 (it is not there)."""

    def __init__(self, message: str, exit_code: int, fix: str = ""):
        super().__init__(message, fix or "check the command and that the image contains it")
        self.exit_code = exit_code


class NoSuchContainer(LabError):
    """No container record has that name or ID (prefix)."""


class ChildError(Exception):
    """Never raised alone: the traceback of an unexpected exception in a forked child (sent over the
    handshake pipe as text), chained as the __cause__ of the LabError the parent raises, so that
    `--debug`, a test or a notebook shows where the child failed."""


class CheckFailed(LabError):
    """A `labctl check` judgement that failed: the cause says what the kernel showed, the fix what to do;
    `details` (filled by labctl.steps.checking.judge) what the exercise and the kernel log showed."""

    def __init__(self, cause: str, fix: str = ""):
        super().__init__(cause, fix)
        self.details: list[str] = []


def require_root(what: str = "this command") -> None:
    """Raise NotRootError unless this process runs as root (namespaces, mounts and cgroups need it)."""
    import os
    if os.geteuid() != 0:
        raise NotRootError(what)
