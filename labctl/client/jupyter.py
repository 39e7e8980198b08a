"""The Jupyter commands (the classroom VM's notebooks): `labctl jupyter url`, what to open on the host,
and `labctl jupyter serve`, what the VM's labctl-jupyter.service runs. No Docker counterpart. The work is
done in labctl/jupyter.py.
"""
from __future__ import annotations

from pathlib import Path

from labctl.client.parsing import Commands, Formatter, examples

NOTEBOOKS = Path(__file__).resolve().parent.parent.parent / "notebooks"


def add_commands(commands: Commands) -> None:
    p = commands.add("jupyter", None, "the VM's Jupyter: the URL with its token, and the server its service runs",
                     ["sudo labctl jupyter url          # http://127.0.0.1:8888/?token=... (open it on your computer)",
                      "vagrant ssh -c 'sudo labctl jupyter url'   # the same, from the host"])
    subcommands = p.add_subparsers(dest="jupyter_command", metavar="SUBCOMMAND")
    q = subcommands.add_parser(
        "url", help="print the URL of the VM's Jupyter with this VM's token (root only: the token runs code as root)",
        formatter_class=Formatter,
        epilog=examples("sudo labctl jupyter url", "vagrant ssh -c 'sudo labctl jupyter url'   # from the host"))
    q.add_argument("--token-file", type=Path, default=None, help="where the token is (default /etc/labctl/jupyter-token)")
    q.add_argument("--port", type=int, default=8888, help="the host port forwarded to Jupyter (default 8888)")
    q.set_defaults(func=cmd_url)
    q = subcommands.add_parser(
        "serve", help="run Jupyter on one address with this machine's token, made on the first start "
                      "(what labctl-jupyter.service runs)",
        formatter_class=Formatter,
        epilog=examples("sudo labctl jupyter serve                      # 127.0.0.1:8888, the repository's notebooks/",
                        "sudo labctl jupyter serve --ip 10.0.2.15       # VirtualBox: where its NAT delivers the port"))
    q.add_argument("--ip", default="127.0.0.1", help="the one address to listen on (default 127.0.0.1; never 0.0.0.0)")
    q.add_argument("--port", type=int, default=8888, help="the port (default 8888)")
    q.add_argument("--notebook-dir", type=Path, default=NOTEBOOKS, help=f"default {NOTEBOOKS}")
    q.add_argument("--token-file", type=Path, default=None, help="default /etc/labctl/jupyter-token")
    q.set_defaults(func=cmd_serve)


def cmd_url(args) -> int:
    from labctl import jupyter
    token = jupyter.read_token(args.token_file or jupyter.TOKEN_FILE)
    print(jupyter.url(token, port=args.port))
    return 0


def cmd_serve(args) -> int:
    from labctl import jupyter
    from labctl.errors import require_root
    require_root("`labctl jupyter serve` (the notebooks make namespaces and cgroups)")
    jupyter.serve(args.ip, args.port, args.notebook_dir, args.token_file or jupyter.TOKEN_FILE)
    return 0   # not reached: serve() becomes Jupyter
