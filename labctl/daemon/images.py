"""/images/...: pull and push (with the progress streams `docker pull` and `docker push` draw), list,
inspect, remove, tag, load, save, over the image store of steps 4, 5 and 12.

`docker pull` reads a stream of JSON objects, one per line, and redraws a line per layer from them:

    {"status": "Pulling from lab/busybox", "id": "latest"}
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "4b6e2ab3a0ca"}
    {"status": "Downloading", "progressDetail": {"current": 32768, "total": 1024017}, "id": "4b6e2ab3a0ca"}
    {"status": "Pull complete", "progressDetail": {}, "id": "4b6e2ab3a0ca"}
    {"status": "Digest: sha256:..."}  {"status": "Status: Downloaded newer image for ..."}
    {"errorDetail": {"message": "..."}, "error": "..."}          (a failure, after the 200 has gone out)

`docker push` reads the same kind of stream: "Preparing", "Pushing" {current, total}, then "Pushed",
"Layer already exists" or "Mounted from REPO" per blob, and "TAG: digest: sha256:... size: N" with an
{"aux": {"Tag", "Digest", "Size"}} object at the end.
Here they are made from the pull's (or push's) own event log (images/pulllog.py), read while the pull runs in a
thread. An image's ID, as Docker's, is its config's digest; RepoTags are the store's references to it.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json

from aiohttp import web

from labctl.daemon.api import ApiError, blocking, flag
from labctl.errors import LabError

MAX_ARCHIVE = 4 << 30      # bytes of an image archive POSTed to /images/load


def _store():
    from labctl.images.store import ImageStore
    return ImageStore()


def _groups() -> dict[str, dict]:
    """{config digest: {"manifest": digest, "refs": [...], "size": n, "config": {...}}} for every image."""
    store = _store()
    out: dict[str, dict] = {}
    for info in store.images():
        with contextlib.suppress(LabError, KeyError, ValueError, OSError):
            manifest = store.read_json(info.digest)
            config_digest = manifest["config"]["digest"]
            entry = out.setdefault(config_digest, {"manifest": info.digest, "refs": [], "size": info.size,
                                                   "config": store.read_json(config_digest)})
            entry["refs"].append(info.reference)
    return out


def resolve(name: str) -> tuple[str, dict]:
    """An image by reference (as `docker` and `labctl` accept it) or by ID (prefix, with or without
    sha256:): (config digest, its group). 404 if none."""
    from labctl.containers.images import open_image
    from labctl.images.reference import store_names
    with contextlib.suppress(LabError):
        open_image(name)   # the lab's own images (busybox, ...) are imported on first use, as `labctl run` does
    groups = _groups()
    wanted = set(store_names(name))
    for config_digest, group in groups.items():
        if wanted & set(group["refs"]):
            return config_digest, group
    prefix = name.removeprefix("sha256:")
    if len(prefix) >= 3 and all(c in "0123456789abcdef" for c in prefix):
        found = [(d, g) for d, g in groups.items() if d[7:].startswith(prefix) or g["manifest"][7:].startswith(prefix)]
        if len(found) == 1:
            return found[0]
    raise ApiError(404, f"No such image: {name}")


def _summary(config_digest: str, group: dict) -> dict:
    created = group["config"].get("created") or ""
    return {"Id": config_digest, "ParentId": "", "RepoTags": sorted(group["refs"]),
            "RepoDigests": sorted({f"{r.rsplit(':', 1)[0]}@{group['manifest']}" for r in group["refs"]}),
            "Created": _epoch(created), "Size": group["size"], "VirtualSize": group["size"], "SharedSize": -1,
            "Labels": (group["config"].get("config") or {}).get("Labels") or {}, "Containers": -1}


def _epoch(created: str) -> int:
    import datetime
    with contextlib.suppress(ValueError):
        return int(datetime.datetime.fromisoformat(created.replace("Z", "+00:00")[:26]
                                                   if "." in created else created.replace("Z", "+00:00")).timestamp())
    return 0


async def list_images(request: web.Request) -> web.Response:
    groups = await blocking(_groups)
    return web.json_response([_summary(d, g) for d, g in groups.items()])


async def inspect(request: web.Request) -> web.Response:
    config_digest, group = await blocking(resolve, request.match_info["name"])
    config = group["config"]
    body = _summary(config_digest, group)
    body.update({"Comment": "", "Created": config.get("created") or "", "Container": "", "DockerVersion": "",
                 "Author": config.get("author") or "", "Config": config.get("config") or {},
                 "Architecture": config.get("architecture"), "Os": config.get("os"), "Parent": "",
                 "RootFS": config.get("rootfs") or {}, "GraphDriver": {"Name": "overlay", "Data": {}},
                 "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}})
    return web.json_response(body)


def _remove(name: str, force: bool) -> list[dict]:
    """rmi: a reference is untagged; an ID untags every reference to it (with force if several)."""
    from labctl.images.store import remove_image
    from labctl.containers import store as containers
    config_digest, group = resolve(name)
    refs = [r for r in group["refs"] if r in _candidates_of(name)] or group["refs"]
    if len(refs) > 1 and not force and refs == group["refs"]:
        raise ApiError(409, f"conflict: unable to delete {config_digest[7:19]} (must be forced) - "
                            "image is referenced in multiple repositories")
    names = {c.id: c.name for c in containers.all_containers()}
    removed = []
    for ref in refs:
        collected = remove_image(_store(), ref, force=force, container_names=names)
        removed.append({"Untagged": ref})
        removed += [{"Deleted": d} for d in collected if d.startswith("sha256:")]
    return removed


def _candidates_of(name: str) -> set[str]:
    from labctl.images.reference import store_names
    return set(store_names(name))


async def delete(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    result = await blocking(_remove, name, flag(request, "force"))
    request.app["engine"].bus.publish("image", "delete", name, name=name)
    return web.json_response(result)


async def tag(request: web.Request) -> web.Response:
    from labctl.images import reference
    config_digest, group = await blocking(resolve, request.match_info["name"])
    repo, tag_ = request.query.get("repo", ""), request.query.get("tag", "") or "latest"
    if not repo:
        raise ApiError(400, "repository name (repo) is required")
    target = str(reference.parse(f"{repo}:{tag_}"))    # validated: no "..", no uppercase, a real tag
    await blocking(_store().set_ref, target, group["manifest"])
    request.app["engine"].bus.publish("image", "tag", config_digest, name=target)
    return web.Response(status=201)


# ---------------------------------------------------------------------------------------------
# Pull


def _credentials(request: web.Request) -> tuple[str, str] | None:
    """X-Registry-Auth: base64url of {"username": ..., "password": ...} (what `docker login` stored)."""
    raw = request.headers.get("X-Registry-Auth")
    if not raw:
        return None
    with contextlib.suppress(ValueError):
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if data.get("username") and data.get("password"):
            return data["username"], data["password"]
    return None


def _progress(event, sizes: dict) -> dict | None:
    """One event of the pull's log -> the message `docker pull` draws, or None."""
    data = event.data
    digest = data.get("digest") or ""
    short = digest[7:19]
    if event.kind == "blob-start" and str(data.get("what", "")).startswith("layer"):
        sizes[digest] = data.get("size") or 0
        return {"status": "Pulling fs layer", "progressDetail": {}, "id": short}
    if event.kind == "blob-bytes" and digest in sizes:
        return {"status": "Downloading", "progressDetail": {"current": data.get("bytes", 0), "total": sizes[digest]},
                "id": short}
    if event.kind == "blob-done" and digest in sizes:
        return {"status": "Pull complete", "progressDetail": {}, "id": short}
    return None


async def pull(request: web.Request) -> web.StreamResponse:
    from labctl.images import reference
    from labctl.images.pulllog import PullLog
    if request.query.get("fromSrc"):
        raise ApiError(501, "docker import is not supported by the lab's daemon: `labctl import` reads archives")
    image, tag_ = request.query.get("fromImage", ""), request.query.get("tag", "")
    if tag_:
        image += ("@" if tag_.startswith("sha256:") else ":") + tag_
    ref = reference.parse(image)   # a bad reference: 400 before the stream starts
    log = PullLog()
    job = asyncio.ensure_future(blocking(_pull_and_unpack, str(ref), _credentials(request), log))
    sizes: dict = {}
    response, send, result = await _stream_job(request, job, log, lambda event: _progress(event, sizes),
                                               "Downloading", {"status": f"Pulling from {ref.repository}",
                                                               "id": ref.tag or ref.digest})
    if result is None:
        return response
    await send({"status": f"Digest: {result.digest}"})
    await send({"status": f"Status: {'Image is up to date' if not result.blobs_fetched else 'Downloaded newer image'}"
                          f" for {result.reference}"})
    request.app["engine"].bus.publish("image", "pull", result.reference, name=result.reference)
    return response


async def _stream_job(request: web.Request, job: asyncio.Future, log, to_message, counting: str, first: dict):
    """The JSON progress stream `docker pull` and `docker push` draw, while `job` (a pull or a push in a
    thread) writes its events into `log`: each event made a message by to_message; of the messages whose
    status is `counting` (Downloading, Pushing: a byte count) only each blob's latest is sent, every 0.1 s,
    and before its blob's next message. Returns (response, send, the job's result), or None as the result
    when the job failed: its error was sent as the stream's last message, as dockerd sends it."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)

    async def send(obj):
        await response.write(json.dumps(obj).encode() + b"\r\n")
    await send(first)
    seen = 0
    while True:
        done = job.done()
        events, latest = log.events[seen:], {}
        seen += len(events)
        for event in events:
            message = to_message(event)
            if message and message["status"] == counting:
                latest[message["id"]] = message
            elif message:
                last_count = latest.pop(message["id"], None)   # before "Pull complete"/"Pushed": the bar at its end
                if last_count:
                    await send(last_count)
                await send(message)
        for pending in latest.values():
            await send(pending)
        if done:
            break
        await asyncio.wait([job], timeout=0.1)
    try:
        return response, send, job.result()
    except LabError as exc:
        await send({"errorDetail": {"message": str(exc)}, "error": str(exc)})
        return response, send, None


def _pull_and_unpack(image: str, credentials, log):
    from labctl.images import distribution
    result = distribution.pull(image, credentials=credentials, log=log, progress=False)
    _store().ensure_layers(result.digest)   # unpacked once, ready for a container's overlay
    return result


# ---------------------------------------------------------------------------------------------
# Push


def _push_message(event) -> dict | None:
    """One event of the push's log -> the message `docker push` draws, or None."""
    data, short = event.data, (event.data.get("digest") or "")[7:19]
    if event.kind == "push-start" and str(data.get("what", "")).startswith("layer"):
        return {"status": "Preparing", "progressDetail": {}, "id": short}
    if event.kind == "push-bytes" and str(event.text).startswith("layer"):
        return {"status": "Pushing", "progressDetail": {"current": data["bytes"], "total": data["size"]}, "id": short}
    if event.kind == "push-done" and str(event.text).startswith("layer"):
        status = {"exists": "Layer already exists", "uploaded": "Pushed"}.get(data["action"]) \
            or f"Mounted from {data.get('mounted_from')}"
        return {"status": status, "progressDetail": {}, "id": short}
    return None


async def push(request: web.Request) -> web.StreamResponse:
    """POST /images/{name}/push?tag=TAG: push the store's NAME:TAG to the registry its name names."""
    from labctl.images import push as pushing, reference
    from labctl.images.pulllog import PullLog
    ref = reference.parse(f"{request.match_info['name']}:{request.query.get('tag') or 'latest'}")
    if str(ref) not in _store().refs():
        raise ApiError(404, f"An image does not exist locally with the tag: {ref.name}")
    log = PullLog()
    job = asyncio.ensure_future(blocking(pushing.push, str(ref), None, False,
                                         credentials=_credentials(request), log=log))
    response, send, result = await _stream_job(request, job, log, _push_message, "Pushing",
                                               {"status": f"The push refers to repository [{ref.name}]"})
    if result is None:
        return response
    size = len(_store().read_blob(result.digest))
    await send({"status": f"{ref.tag}: digest: {result.digest} size: {size}"})
    await send({"progressDetail": {}, "aux": {"Tag": ref.tag, "Digest": result.digest, "Size": size}})
    request.app["engine"].bus.publish("image", "push", str(ref), name=str(ref))
    return response


# ---------------------------------------------------------------------------------------------
# Load and save (docker-archive)


async def load(request: web.Request) -> web.Response:
    """POST /images/load: the body is a docker-archive (or oci-archive) tar; streamed to a file first."""
    from labctl import state
    tmp = state.new_tmpdir("load-")
    path = tmp / "archive.tar"
    try:
        size = 0
        with open(path, "wb") as f:
            async for chunk in request.content.iter_chunked(1 << 20):
                size += len(chunk)
                if size > MAX_ARCHIVE:
                    raise ApiError(413, f"image archive larger than {MAX_ARCHIVE} bytes")
                f.write(chunk)
        imported = await blocking(_import, str(path))
    finally:
        await blocking(state.remove_path, str(tmp))
    lines = [{"stream": f"Loaded image: {i.reference}\n"} for i in imported]
    for i in imported:
        request.app["engine"].bus.publish("image", "load", i.reference, name=i.reference)
    return web.Response(body=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
                        content_type="application/json")


def _import(path: str):
    from labctl.images import archive
    return archive.import_path(_store(), path)


async def save(request: web.Request) -> web.StreamResponse:
    """GET /images/{name}/get or /images/get?names=...: a docker-archive of the images, streamed."""
    from labctl.images import export
    names = [request.match_info["name"]] if "name" in request.match_info else request.query.getall("names", [])
    if not names:
        raise ApiError(400, "no image named (names=...)")
    chosen = [await blocking(resolve, n) for n in names]
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    await response.prepare(request)
    queue: asyncio.Queue = asyncio.Queue(maxsize=8)
    loop = asyncio.get_running_loop()

    def put(data: bytes) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
    writer = asyncio.ensure_future(blocking(_export, export, chosen, names, put))
    writer.add_done_callback(lambda _: asyncio.ensure_future(queue.put(b"")))
    while data := await queue.get():
        await response.write(data)
    writer.result()
    return response


def _export(export, chosen, names, put) -> None:
    entries = [(group["manifest"], [r for r in group["refs"] if r in _candidates_of(n)] or group["refs"])
               for n, (_, group) in zip(names, chosen)]
    export.docker_archive(_store(), entries, put)


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_post(prefix + "/images/create", pull)
    router.add_get(prefix + "/images/json", list_images, allow_head=False)
    router.add_post(prefix + "/images/load", load)
    router.add_get(prefix + "/images/get", save, allow_head=False)
    router.add_get(prefix + "/images/{name:.+}/json", inspect, allow_head=False)
    router.add_get(prefix + "/images/{name:.+}/get", save, allow_head=False)
    router.add_post(prefix + "/images/{name:.+}/tag", tag)
    router.add_post(prefix + "/images/{name:.+}/push", push)
    router.add_delete(prefix + "/images/{name:.+}", delete)
