"""Errors a student can hit. Each carries the cause and the fix, printed as one line by the CLI."""


class LabError(Exception):
    """An error with a one-line cause and a one-line fix; the CLI prints `error: CAUSE (fix: FIX)`."""

    def __init__(self, cause: str, fix: str = ""):
        super().__init__(cause)
        self.cause = cause
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.cause} (fix: {self.fix})" if self.fix else self.cause


class NotRootError(LabError):
    def __init__(self, what: str = "this command"):
        super().__init__(f"{what} needs root: namespaces, mounts and cgroups are privileged",
                         "run it as root, e.g. `sudo labctl ...`")


class UnknownStepError(LabError):
    pass


class MissingRequirementError(LabError):
    pass


class CheckFailed(LabError):
    """A `labctl check` judgement that failed: the cause says what the kernel showed, the fix what to do."""


def require_root(what: str = "this command") -> None:
    """Raise NotRootError unless this process runs as root (namespaces, mounts and cgroups need it)."""
    import os
    if os.geteuid() != 0:
        raise NotRootError(what)
