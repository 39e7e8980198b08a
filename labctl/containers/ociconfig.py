"""A container's config.json: what `labctl run`'s flags and the image's config become, written as the
OCI runtime specification says (runtime/oci.py maps each field), as Docker's daemon writes one for runc.

    labctl bundle IMAGE DIR        DIR/config.json beside DIR/rootfs (bundle.py)
    labctl run, the daemon         <container>/bundle/config.json, root.path the container's own mounted
                                   overlay; labctl's runtime is handed what it reads back from the file
                                   (lifecycle.through_config_json), runc and crun are handed the file (shim.py)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from labctl.containers.resources import oci_resources
from labctl.runtime import oci
from labctl.runtime.config import Config


def document(config: Config, rootfs: str | os.PathLike, root_path: str, limits, cgroups_path: str = "",
             time_namespace: bool = False) -> dict:
    """config.json for `config`: the user as numbers, looked up in the image's own /etc/passwd and
    /etc/group under `rootfs` (as containerd does when it writes a bundle; a link there is followed
    inside the root, never out of it), HOME as that user's unless -e set it, linux.resources from the
    limits (step 3)."""
    from labctl.runtime.ocimounts import secure_join
    from labctl.runtime.user import resolve_user
    root = Path(rootfs)
    who = resolve_user(config.user, passwd=str(secure_join(root, "/etc/passwd")),
                       group=str(secure_join(root, "/etc/group")))
    # additionalGids: the groups that list the user, and its own (resolve_user's; `id` shows groups=0(root))
    doc = oci.to_oci(config, root_path, who.uid, who.gid, who.groups, oci_resources(limits), cgroups_path,
                     time_namespace)
    if not any(e.startswith("HOME=") for e in doc["process"]["env"]):
        doc["process"]["env"].append(f"HOME={who.home}")
    return doc


def write_config(container, config: Config, cgroups_path: str, labctl: bool = False) -> Path:
    """<container>/bundle/config.json for `config`, root.path the container's own mounted root; returns
    the bundle's directory. labctl: for labctl's own runtime, which keeps the time namespace and, as
    ever, a private mount tree (rprivate: no mount event crosses between host and container)."""
    from labctl import state
    doc = document(config, config.root, config.root, container.spec.limits, cgroups_path, time_namespace=labctl)
    if labctl:
        doc["linux"]["rootfsPropagation"] = "rprivate"
    bundle = container.dir / "bundle"
    state.atomic_write(bundle / "config.json", json.dumps(doc), durable=False)   # a crash: the container goes too
    return bundle
