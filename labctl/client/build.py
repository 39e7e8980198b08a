"""The build command (step 12): `labctl build`, as the classic `docker build` (DOCKER_BUILDKIT=0) shows
it, step by step with ` ---> Using cache`. The work is done in labctl/build.
"""
from __future__ import annotations

from labctl.client.parsing import Commands
from labctl.errors import LabError, require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("build", cmd_build, "build an image from a Dockerfile, each RUN in a container, with a layer cache",
                     ["labctl build -t hello:1 .                       # ./Dockerfile, context .",
                      "labctl build -t hello:1 -f lab/Dockerfile lab/  # another Dockerfile",
                      "labctl build -t hello:2 --build-arg GREETING=hi .",
                      "labctl build -t hello:1 --no-cache .            # every step again (same digest)",
                      "labctl build -q -t hello:1 . && labctl run --rm hello:1"])
    p.add_argument("context", metavar="CONTEXT", help="the directory COPY and ADD read from (.dockerignore applies)")
    p.add_argument("-t", "--tag", required=True, metavar="NAME[:TAG]", help="the reference to store the image as")
    p.add_argument("-f", "--file", metavar="DOCKERFILE", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="a value for an ARG (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="run every step, ignoring the cache")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image digest")


def _build_args(pairs: list[str]) -> dict[str, str]:
    import os
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not key:
            raise LabError(f"--build-arg {pair!r} has no name", "write --build-arg NAME=VALUE")
        if not eq:   # as docker: the value from labctl's own environment, else not given
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def cmd_build(args) -> int:
    from pathlib import Path
    from labctl.build import builder
    from labctl.build.runstep import RunFailed
    require_root("`labctl build`")
    context = Path(args.context)
    dockerfile = Path(args.file) if args.file else context / "Dockerfile"

    def progress(line: str) -> None:
        print(line, flush=True)
    try:
        result = builder.build(dockerfile, context, args.tag, _build_args(args.build_arg), args.no_cache,
                               None if args.quiet else progress)
    except RunFailed as exc:   # docker build exits 1; the lab passes the command's own code on
        from labctl.ui import error_line
        error_line(str(exc))
        return exc.exit_code
    if args.quiet:
        print(result.digest)
    else:
        print(f"Successfully tagged {result.image}")
    return 0
