"""POST /build: `docker build` (the classic builder, DOCKER_BUILDKIT=0) against the lab's daemon.

The docker CLI sends the build context as a tar in the request body, the options in the query:

    POST /v1.41/build?t=hello:1&dockerfile=Dockerfile&buildargs={"K":"V"}&nocache=1&q=1
                                    (q: no step output, the image ID as the one `stream` line)
    body: the context as a tar (plain or gzip), .dockerignore already applied by the client

and reads a stream of JSON objects, one per line, printing each `stream` as it comes:

    {"stream": "Step 1/3 : FROM busybox\\n"}   {"stream": " ---> Using cache\\n"}   ...
    {"aux": {"ID": "sha256:<config digest>"}}     the image ID (`-q` prints it, `--iidfile` writes it)
    {"stream": "Successfully built 3f2a1b...\\n"}  {"stream": "Successfully tagged hello:1\\n"}
    {"errorDetail": {"message": "...", "code": 7}, "error": "..."}   a failure: the CLI exits with `code`

The body is streamed to a file, unpacked with step 4's safe unpacker (labctl/images/layers.py: no
`..`, no link out) into a temporary directory, and handed to the same builder as `labctl build`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from labctl.daemon.api import ApiError, blocking, flag
from labctl.errors import LabError

MAX_CONTEXT = 1 << 30      # bytes of a build context


async def _receive_context(request: web.Request, tmp) -> None:
    size = 0
    with open(tmp / "context.tar", "wb") as f:
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > MAX_CONTEXT:
                raise ApiError(413, f"build context larger than {MAX_CONTEXT} bytes")
            f.write(chunk)


def _unpack_context(tmp) -> None:
    from labctl.images import layers
    (tmp / "context").mkdir()
    try:
        with open(tmp / "context.tar", "rb") as f:
            layers.unpack_layer(f, tmp / "context")
    except LabError as exc:
        raise ApiError(400, f"the build context is not a safe tar archive: {exc.cause}") from None
    (tmp / "context.tar").unlink()


def _options(request: web.Request) -> dict:
    tags = request.query.getall("t", [])
    if not tags:
        raise ApiError(400, "the lab's daemon stores every build under a name: give -t NAME[:TAG]")
    try:
        build_args = json.loads(request.query.get("buildargs") or "{}")
    except ValueError:
        raise ApiError(400, "buildargs is not a JSON object") from None
    dockerfile = request.query.get("dockerfile") or "Dockerfile"
    if dockerfile.startswith("/") or ".." in dockerfile.split("/"):
        raise ApiError(400, f"the Dockerfile {dockerfile!r} is outside the build context")
    return {"tags": tags, "dockerfile": dockerfile, "no_cache": flag(request, "nocache"),
            "quiet": flag(request, "q"), "build_args": {k: v for k, v in (build_args or {}).items() if v is not None}}


def _build(tmp, options: dict, progress):
    from labctl.build import builder
    from labctl.images.store import ImageStore
    context = tmp / "context"
    result = builder.build(context / options["dockerfile"], context, options["tags"][0], options["build_args"],
                           options["no_cache"], progress)
    store = ImageStore()
    tagged = [result.image]
    for tag in options["tags"][1:]:
        reference = builder.normalise_tag(tag)
        store.set_ref(reference, result.digest)
        tagged.append(reference)
    return store.read_json(result.digest)["config"]["digest"], tagged


async def build(request: web.Request) -> web.StreamResponse:
    from labctl import state
    from labctl.build.runstep import RunFailed
    options = _options(request)
    tmp = state.new_tmpdir("build-context-")
    try:
        await _receive_context(request, tmp)
        await blocking(_unpack_context, tmp)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def progress(line: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, {"stream": line + "\n"})
        job = asyncio.ensure_future(blocking(_build, tmp, options, None if options["quiet"] else progress))
        job.add_done_callback(lambda _: queue.put_nowait(None))
        while (message := await queue.get()) is not None:
            await response.write(json.dumps(message).encode() + b"\r\n")
        while not queue.empty():   # lines queued after the job ended
            message = queue.get_nowait()
            if message is not None:
                await response.write(json.dumps(message).encode() + b"\r\n")
        try:
            image_id, tagged = job.result()
        except Exception as exc:   # the 200 has gone out: the error travels in the stream
            code = exc.exit_code if isinstance(exc, RunFailed) else 1
            if not isinstance(exc, LabError):
                request.app.logger.exception("build failed")
            await response.write(json.dumps({"errorDetail": {"message": str(exc), "code": code},
                                             "error": str(exc)}).encode() + b"\r\n")
            return response
        await response.write(json.dumps({"aux": {"ID": image_id}}).encode() + b"\r\n")
        if options["quiet"]:   # as dockerd: the ID alone, as the one line of output the CLI prints
            await response.write(json.dumps({"stream": image_id + "\n"}).encode() + b"\r\n")
        for reference in tagged:
            if not options["quiet"]:
                await response.write(json.dumps({"stream": f"Successfully tagged {reference}\n"}).encode() + b"\r\n")
            request.app["engine"].bus.publish("image", "tag", image_id, name=reference)
        return response
    finally:
        with contextlib.suppress(Exception):
            await blocking(state.remove_path, str(tmp))


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_post(prefix + "/build", build)
