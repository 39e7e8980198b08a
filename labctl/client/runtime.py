"""The OCI runtime commands (step 10): `labctl bundle` writes a bundle from an image and `labctl run`'s
flags; `labctl runtime ...` is labctl's OCI runtime with runc's command line (the same program as the
`labctl-runtime` executable that containerd or runtime-tools can be pointed at).
"""
from __future__ import annotations

import argparse

from labctl.client.parsing import Commands
from labctl.errors import require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("bundle", cmd_bundle, "write an OCI runtime bundle (rootfs + config.json) from an image and run flags",
                     ["labctl bundle busybox /tmp/b sh -c 'echo hi'",
                      "labctl bundle -m 64m --cap-drop ALL -u 1000 busybox /tmp/b id",
                      "labctl bundle busybox /tmp/b && runc run --bundle /tmp/b c1"], add_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    from labctl.client.containers import add_container_flags
    add_container_flags(p)
    p.add_argument("image", help="image reference (`labctl images`), e.g. busybox")
    p.add_argument("directory", help="the bundle directory to write (new, or empty)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (default: the image's Cmd)")

    p = commands.add("runtime", cmd_runtime, "labctl's OCI runtime, with runc's command line (also `labctl-runtime`)",
                     ["labctl runtime create --bundle /tmp/b c1", "labctl runtime state c1",
                      "labctl runtime start c1", "labctl runtime delete --force c1",
                      "labctl runtime --help     # every operation"], add_help=False)
    p.add_argument("words", nargs=argparse.REMAINDER, help="what `labctl-runtime` takes")


def cmd_bundle(args) -> int:
    from labctl.client.containers import spec_from_args
    from labctl.containers.bundle import write_bundle
    require_root("`labctl bundle`")
    spec, image = spec_from_args(args)
    print(write_bundle(spec, image, args.directory))
    return 0


def cmd_runtime(args) -> int:
    from labctl.runtime.ocicli import main
    return main(args.words, prog="labctl runtime")
