"""The image commands: import, images, rmi (step 4's image store), login, pull, registry (step 5's
registry), save and push (step 12), as `docker import|images|rmi|login|pull|save|push`. The work is done
in labctl/images.
"""
from __future__ import annotations

import sys

from labctl.client.parsing import Commands
from labctl.errors import require_root


def add_commands(commands: Commands) -> None:
    p = commands.add("import", cmd_import, "import an image from an OCI layout directory or an image tarball",
                     ["labctl import /tmp/busybox-oci:latest --name localhost/busybox:1",
                      "skopeo copy oci:/tmp/img:latest oci-archive:/tmp/img.tar && labctl import /tmp/img.tar",
                      "labctl import /tmp/saved.tar          # a docker-archive (docker save / skopeo docker-archive:)"])
    p.add_argument("source", help="DIR[:NAME] (an OCI layout) or FILE[:NAME] (oci-archive or docker-archive)")
    p.add_argument("--name", help="the reference to store it as (default: localhost/NAME:latest)")

    p = commands.add("images", cmd_images, "list the images in the store", ["labctl images", "labctl images -q"])
    p.add_argument("-q", "--quiet", action="store_true", help="references only")

    p = commands.add("image", cmd_image, "show what an image is made of: manifest, config, each layer's digests "
                     "and directory", ["labctl image inspect localhost/layered:latest"])
    p.add_argument("action", choices=("inspect",))
    p.add_argument("reference", metavar="REFERENCE")

    p = commands.add("rmi", cmd_rmi, "remove an image reference, then unreferenced blobs and layers",
                     ["labctl rmi localhost/layered:latest", "labctl rmi --force localhost/busybox:latest"])
    p.add_argument("references", nargs="+", metavar="REFERENCE")
    p.add_argument("-f", "--force", action="store_true", help="untag even if a container uses it (its layers stay)")

    p = commands.add("login", cmd_login,
                     "store credentials for a registry (password from standard input, file mode 0600)",
                     ["echo \"$PASSWORD\" | labctl login 127.0.0.1:5000 --username student --password-stdin"])
    p.add_argument("registry", help="host[:port] of the registry")
    p.add_argument("--username", "-u", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (always done)")

    p = commands.add("pull", cmd_pull, "pull an image from a registry into the image store (OCI distribution protocol)",
                     ["labctl registry start && labctl pull 127.0.0.1:5000/lab/busybox",
                      "labctl pull 127.0.0.1:5000/lab/multiarch --platform linux/arm64/v8",
                      "echo \"$PASSWORD\" | labctl pull 127.0.0.1:5000/lab/busybox --username student",
                      "labctl pull alpine            # docker.io/library/alpine:latest (needs internet)",
                      "labctl pull --stall-timeout 120 127.0.0.1:5000/lab/busybox   # a slow registry"])
    p.add_argument("image", help="an image reference: [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST]")
    p.add_argument("--platform", help="OS/ARCH[/VARIANT] to choose from an index (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the reference pulled")
    p.add_argument("--username", "-u", help="log in as this user; the password is read from stdin")
    p.add_argument("--stall-timeout", type=float, metavar="SECONDS",
                   help="give up on a transfer that makes no progress (or crawls below 1 KiB/s) for this "
                        "long (default: $LABCTL_PULL_STALL_TIMEOUT, else 30)")

    p = commands.add("save", cmd_save, "write an image of the store as a docker-archive file or an OCI layout",
                     ["labctl save -o /tmp/busybox.tar busybox      # docker save's format; labctl import reads it",
                      "labctl save --format oci -o /tmp/hello-oci hello:1",
                      "umoci unpack --image /tmp/hello-oci:1 /tmp/bundle; skopeo inspect oci:/tmp/hello-oci:1"])
    p.add_argument("image", help="NAME[:TAG] of an image in the store (`labctl images`)")
    p.add_argument("-o", "--output", required=True,
                   help="the file (docker-archive) or directory (oci) to write; it must not exist")
    p.add_argument("--format", choices=("docker-archive", "oci"), default="docker-archive",
                   help="docker-archive (default, as `docker save`) or oci (an OCI image layout directory)")

    p = commands.add("push", cmd_push, "push an image from the store to a registry: only the blobs it lacks travel",
                     ["labctl registry start && labctl push localhost/busybox 127.0.0.1:5000/me/busybox:1",
                      "labctl push 127.0.0.1:5000/lab/busybox 127.0.0.1:5000/other/busybox   # blobs mounted",
                      "echo \"$PASSWORD\" | labctl login 127.0.0.1:5001 -u student --password-stdin && "
                      "labctl push localhost/app 127.0.0.1:5001/student/app",
                      "labctl push -q localhost/app 127.0.0.1:5000/me/app   # print only the manifest digest"])
    p.add_argument("image", help="NAME[:TAG] of an image in the store (`labctl images`)")
    p.add_argument("target", nargs="?", help="REGISTRY/REPO[:TAG] (default: the image's own name; the tag: its tag)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; print only the manifest digest")

    p = commands.add("registry", cmd_registry, "start, stop or show the lab's own registry on 127.0.0.1",
                     ["labctl registry start", "labctl registry start --port 5001", "labctl registry status",
                      "labctl registry stop"])
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--port", type=int, default=5000, help="TCP port on 127.0.0.1 (default 5000)")


# -- step 4: the image store ----------------------------------------------------------------------

def cmd_import(args) -> int:
    from labctl.images import archive
    from labctl import ui
    from labctl.images.store import ImageStore
    require_root("`labctl import`")
    for imported in archive.import_path(ImageStore(), args.source, args.name):
        ui.ok(f"{imported.reference} -> {imported.manifest_digest} ({imported.layers} layers"
              f"{', already there' if imported.skipped else ''})")
    return 0


def cmd_images(args) -> int:
    from labctl.kernel import overlay
    from labctl import ui
    from labctl.images.store import ImageStore
    store = ImageStore()
    used = overlay.images_in_use()
    names = _container_names()
    rows = []
    for info in store.images():
        try:
            layers = len(store.image_layers(info.digest))
        except Exception:   # a damaged image still gets its row, so that `labctl rmi` can be given its name
            layers = "?"
        rows.append((info.reference, info.digest[7:19], layers, f"{info.size / 1e6:.1f} MB",
                     ", ".join(names.get(c, c[:12]) for c in used.get(info.digest, []))))
    if args.quiet:
        for row in rows:
            print(row[0])
        return 0
    ui.table(("reference", "manifest", "layers", "size", "containers"), rows, title="Images in the store")
    return 0


def cmd_image(args) -> int:
    from labctl import ui
    from labctl.images import inspect
    from labctl.images.store import ImageStore
    store = ImageStore()
    image = inspect.describe(store, args.reference)
    ui.say(f"[bold]{image.reference}[/bold]")
    ui.say(f"  manifest (RepoDigest)  {image.manifest_digest}   {store.blob_path(image.manifest_digest)}")
    ui.say(f"  config (Id)            {image.config_digest}   {store.blob_path(image.config_digest)}")
    ui.say("  layers, bottom first (OverlayFS's lowerdir lists them top first):")
    for i, layer in enumerate(image.layers):
        where = "bottom" if i == 0 else "top" if i == len(image.layers) - 1 else "middle"
        ui.say(f"  {i + 1} ({where})  blob     {layer.blob}  ({layer.size} bytes, compressed, as pulled)")
        ui.say(f"  {'':{len(str(i + 1)) + len(where) + 3}}  diff_id  {layer.diff_id}  (the uncompressed tar)")
        ui.say(f"  {'':{len(str(i + 1)) + len(where) + 3}}  dir      {layer.directory}"
               + ("" if layer.unpacked else "  (not unpacked yet)"))
    return 0


def cmd_save(args) -> int:
    from labctl import ui
    from labctl.images.export import save
    found, digest = save(args.image, args.output, args.format)
    ui.ok(f"{found} ({digest[:19]}) written to {args.output} as {args.format}")
    return 0


def cmd_rmi(args) -> int:
    from labctl import ui
    from labctl.images.store import ImageStore, remove_image
    require_root("`labctl rmi`")
    store = ImageStore()
    names = _container_names()
    for reference in args.references:
        removed = remove_image(store, reference, force=args.force, container_names=names)
        ui.ok(f"untagged {reference}; removed {len(removed)} unreferenced blob(s) and layer(s)")
    return 0


def _container_names() -> dict[str, str]:
    """{container id: name}: containers are named by their names, as `docker` does, not 64-digit IDs."""
    from labctl.containers import store as containers
    return {c.id: c.name for c in containers.all_containers()}


# -- step 5: registry pull ------------------------------------------------------------------------

def _password_from_stdin(what: str) -> str:
    """The password: asked for at a terminal, else the first line of standard input (as `docker login
    --password-stdin`), so that it never appears on a command line or in the shell's history."""
    if sys.stdin.isatty():
        import getpass
        return getpass.getpass(f"password for {what}: ")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        from labctl.errors import LabError
        raise LabError("no password on standard input", "pipe it in: `echo \"$PASSWORD\" | labctl ...`")
    return password


def cmd_login(args) -> int:
    from labctl.images import distribution
    from labctl.images.auth import save_credentials
    from labctl import ui
    password = _password_from_stdin(f"{args.username}@{args.registry}")
    scheme = distribution.check_login(args.registry, args.username, password)
    save_credentials(args.registry, args.username, password)
    ui.ok(f"logged in to {args.registry} as {args.username} ({scheme} authentication); "
          "credentials stored with mode 0600 in the state directory")
    return 0


def cmd_pull(args) -> int:
    from labctl.images import distribution
    from labctl import ui
    from labctl.images.store import ImageStore
    credentials = (args.username, _password_from_stdin(args.username)) if args.username else None
    result = distribution.pull(args.image, platform=args.platform, credentials=credentials,
                               stall_timeout=args.stall_timeout, progress=False if args.quiet else None)
    layer_dirs = ImageStore().ensure_layers(result.digest)   # unpacked once, ready for an overlay mount
    if args.quiet:
        print(result.reference)
        return 0
    if result.platform:
        ui.say(f"platform {result.platform} chosen from the index")
    if result.blobs_fetched == 0:
        ui.ok(f"{result.reference} is up to date ({result.digest}): no blob transferred")
    else:
        ui.ok(f"pulled {result.reference} ({result.digest}): {result.blobs_fetched} blobs, "
              f"{result.transferred} bytes, every digest verified")
    ui.say(f"{len(layer_dirs)} layers unpacked under {layer_dirs[0].parent if layer_dirs else '-'}")
    return 0


def cmd_push(args) -> int:
    from labctl.images import push
    from labctl import ui
    result = push.push(args.image, args.target, progress=False if args.quiet else None)
    if args.quiet:
        print(result.digest)
        return 0
    ui.ok(result.summary())
    return 0


def cmd_registry(args) -> int:
    from labctl.images import labregistry
    from labctl import ui
    if args.action == "start":
        info = labregistry.start(args.port)
        _show_registry(info)
        ui.say(f"pull one: `labctl pull {info['host']}/lab/busybox`")
    elif args.action == "stop":
        info = labregistry.stop()
        ui.ok(f"lab registry (PID {info['pid']}) stopped, its storage removed" if info
              else "the lab registry was not running")
    else:
        info = labregistry.status()
        if not info:
            ui.say("the lab registry is not running (`labctl registry start`)")
            return 1
        _show_registry(info)
    return 0


def _show_registry(info: dict) -> None:
    from labctl import ui
    ui.ok(f"lab registry on http://{info['host']} (PID {info['pid']}), storage {info['storage']}")
    for image in info["images"]:
        ui.say(f"  {image}")
