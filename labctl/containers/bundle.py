"""`labctl bundle IMAGE DIR [run flags]`: an OCI runtime bundle, what Docker's daemon hands containerd
(and containerd hands runc): DIR/rootfs, the image's layers flattened into one directory, and
DIR/config.json, the image's config and the flags of `labctl run` as the runtime specification writes
them (runtime/oci.py says which field comes from which step).

The same flags give the same container: build_config() is what lifecycle.create makes for `labctl run`
(minus the record, the overlay and the network, which are the daemon's part, not the bundle's), and
ociconfig.document() turns it into config.json. `labctl-runtime`, runc and crun all run the result.
`labctl run` itself goes the same way (ociconfig.write_config).

Flattening: one layer is copied as it is (cp -a); several are mounted as a read-only overlay (step 4:
the whiteouts and opaque directories resolved by the kernel) in a mount namespace of a child process,
and the merged view copied, so nothing stays mounted.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from labctl.containers import images, networking, ociconfig
from labctl.containers.spec import ContainerSpec
from labctl.errors import LabError
from labctl.runtime.config import NAMESPACES, Config, Mount


def build_config(spec: ContainerSpec, root: str, files: dict[str, str] | None = None) -> Config:
    """The runtime Config `labctl run` would make for `spec` (lifecycle.create), on `root`."""
    from labctl.containers.lifecycle import _tini
    return Config(
        root=root, argv=spec.argv, env=spec.env, workdir=spec.workdir, user=spec.user, hostname=spec.hostname,
        files=files or {}, mounts=[Mount(m.kind, os.path.abspath(m.source) if m.kind == "bind" else m.source,
                                         m.target, m.readonly) for m in spec.mounts],
        namespaces=NAMESPACES + (("net",) if networking.needs_namespace(spec.network) else ()),
        loopback_up=spec.network != "host", init_binary=_tini() if spec.init else None, security=spec.security)


def write_bundle(spec: ContainerSpec, image: images.RunnableImage, directory: str | os.PathLike) -> Path:
    """DIR/rootfs and DIR/config.json (the module docstring). DIR must be new or empty; on failure
    nothing is left in it."""
    bundle = Path(directory).resolve()
    if bundle.exists() and any(bundle.iterdir()):
        raise LabError(f"{bundle} is not empty", "give a new directory for the bundle")
    if any(m.kind == "volume" for m in spec.mounts):
        raise LabError("named volumes are labctl's own (its state directory): a bundle takes bind mounts",
                       "use -v /host/path:/target, or `labctl run`")
    made = not bundle.exists()
    bundle.mkdir(parents=True, exist_ok=True)
    try:
        rootfs = bundle / "rootfs"
        flatten(image, rootfs)
        files = {}
        for inside, content in networking.etc_files(spec.network, spec.hostname).items():
            (bundle / Path(inside).name).write_text(content)
            files[inside] = str(bundle / Path(inside).name)
        doc = ociconfig.document(build_config(spec, "rootfs", files), rootfs, "rootfs", spec.limits)
        doc["process"]["terminal"] = spec.tty
        # ("org.opencontainers." keys are the spec's own: a runtime's annotations use their own prefix)
        doc["annotations"] = {"org.labctl.image": spec.image, "org.labctl.user": spec.user}
        with open(bundle / "config.json", "w") as f:
            json.dump(doc, f, indent=2)
    except BaseException:
        subprocess.run(["rm", "-rf", "--one-file-system", str(bundle if made else bundle / "rootfs")], check=False)
        for name in ("config.json", "hosts", "hostname", "resolv.conf"):
            if not made and (bundle / name).exists():
                (bundle / name).unlink()
        raise
    return bundle


def flatten(image: images.RunnableImage, rootfs: Path) -> None:
    """The image's layers as one directory (the module docstring)."""
    from labctl.containers.lifecycle import image_store
    layers = image_store().ensure_layers(image.digest)   # bottom first
    if len(layers) == 1:
        subprocess.run(["cp", "-a", f"{layers[0]}/.", str(rootfs)], check=True)
        return
    rootfs.mkdir()
    lower = ":".join(str(p) for p in reversed(layers))
    script = f'mount -t overlay -o ro,lowerdir="$1" overlay "$2" && cp -a "$2/." "$3"'
    merged = rootfs.parent / ".merged"
    merged.mkdir()
    try:
        subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", lower, str(merged),
                        str(rootfs)], check=True)
    finally:
        merged.rmdir()
