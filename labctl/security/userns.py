"""PLACEHOLDER on the sec-core branch, replaced by the userns branch's module (issue #15): only what
profile.from_flags needs, so that `labctl run` works here. Take the other branch's file when merging."""
from __future__ import annotations

from labctl.errors import LabError


def resolve(userns: str) -> tuple[list, list]:
    """--userns host -> no maps; remap is the userns branch's work."""
    if userns == "host":
        return [], []
    raise LabError(f"--userns {userns} is not available in this build", "use --userns host")
