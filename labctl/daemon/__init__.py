"""Step 11: the daemon, `labctl daemon`: a Docker-compatible REST API (Engine API v1.41, the subset the
docker 20.10 CLI and docker-py speak) on a Unix socket, over the same library the CLI calls.

    docker / docker-py / labctl ──HTTP over /run/labctl/labctl.sock──▶ labctl daemon (aiohttp)
                                                                          │ the same functions as the CLI:
                                                                          ▼ containers, images, network
    a container's supervisor (the shim, containers/supervisor.py) is no child of the daemon: kill the
    daemon and the containers run on; started again, it finds them in the state directory (live restore)

One concern per module:
  api.py         what every handler shares: Docker's errors ({"message": ...} + status), query parsing
  server.py      the application: routes, the middlewares (errors, peer credentials, limits), the socket
  control.py     `labctl daemon start|stop|status`: the background daemon, its PID file and socket
  system.py      _ping, version, info, events (the event bus: create, start, die, destroy, pull, ...)
  translate.py   Docker's JSON <-> labctl: Config/HostConfig -> build_spec's arguments, records -> inspect
  containers.py  /containers/...: create, start, wait, stop, kill, restart, delete, json, top, stats
  streams.py     hijacked connections (attach, exec start), the 8-byte multiplexing header, log following
  execs.py       /containers/{id}/exec, /exec/{id}/start|json|resize
  images.py      /images/...: create (pull, with the JSON progress stream), json, inspect, delete, tag, load, get
  resources.py   /networks/... and /volumes/...
  build.py       /build: `docker build` (classic builder) over labctl/build, the JSON stream it reads
  overlays.py    step 13: `-d overlay` networks, kept in the cluster's etcd when the daemon is a cluster host
aiohttp is imported only here, never on the CLI's own paths: `labctl --help` and `labctl run` stay fast.
"""
