"""Jupyter in the classroom VM: the token that guards it, the URL a student opens, the server it runs.

Jupyter runs as root in the VM (the notebooks make namespaces, mounts and cgroups), so whoever reaches its
port with the token runs code as root. Two things keep that to the student:

- The token is random and belongs to one VM. `labctl jupyter serve`, what `labctl-jupyter.service`
  starts (vagrant/provision.sh, section 7), creates /etc/labctl/jupyter-token on its first start, which is
  the VM's first boot: the image is built in a chroot where no service starts, so it carries no token and
  two VMs from one box get two tokens. The file is root's alone (mode 0600), and Jupyter reads it through
  $JUPYTER_TOKEN_FILE (jupyter_server's IdentityProvider), not from its command line, which any user of
  the VM could read in /proc/PID/cmdline. jupyter_server takes the file's bytes as they are, so the file
  holds the token without a newline.
- Jupyter listens on one address, the one the forwarded port arrives at, never on every interface
  (0.0.0.0): 127.0.0.1 where Vagrant forwards through an ssh tunnel that ends in the guest
  (vagrant-libvirt's forwarded_port with guest_ip 127.0.0.1; the VM tier), the NAT address 10.0.2.15
  where VirtualBox's NAT engine delivers the port to the guest's interface.

`labctl jupyter url` prints what to open on the host: the forwarded port 127.0.0.1:8888 with the token.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import sys
from pathlib import Path

from labctl.errors import LabError

TOKEN_FILE = Path("/etc/labctl/jupyter-token")
#: The guest port, and the host port the Vagrantfile forwards to it (on the host's 127.0.0.1).
PORT = 8888
SERVICE = "labctl-jupyter.service"


def ensure_token(path: Path = TOKEN_FILE) -> str:
    """The token in `path`; when there is none yet, a new one (192 random bits, from the kernel's CSPRNG
    through `secrets`) written there with mode 0600. Written to a private temporary name and linked into
    place (link(2) fails if the name exists), so a reader never sees half a token and two first starts
    at once agree on one."""
    path = Path(path)
    if path.exists():
        return read_token(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(24).encode())
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:   # another start won the race: its token is the one
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return read_token(path)


def read_token(path: Path = TOKEN_FILE) -> str:
    """The token Jupyter checks, or a LabError that says why it cannot be read and what to do."""
    path = Path(path)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise LabError(f"no Jupyter token at {path}: Jupyter's service has not started on this machine",
                       f"in the classroom VM, `sudo systemctl start {SERVICE}` creates it; elsewhere Jupyter "
                       f"is not set up as a service (vagrant/provision.sh --jupyter-service)") from None
    except PermissionError:
        raise LabError(f"{path} is readable by root only (it lets its reader run code as root in Jupyter)",
                       "sudo labctl jupyter url") from None
    if not token:
        raise LabError(f"{path} is empty", f"remove it and restart Jupyter: `sudo rm {path} && "
                                           f"sudo systemctl restart {SERVICE}` (a new token is made)")
    return token


def url(token: str, host: str = "127.0.0.1", port: int = PORT) -> str:
    """What to open in a browser: Jupyter's start page, which keeps the token in a cookie afterwards."""
    return f"http://{host}:{port}/?token={token}"


def check_listen_address(ip: str) -> str:
    """`ip` if it names one address; a LabError for every interface (0.0.0.0, ::, empty) or a non-address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise LabError(f"{ip!r} is not an IP address", "give one, e.g. --ip 127.0.0.1") from None
    if address.is_unspecified:
        raise LabError(f"{ip} means every interface of this machine: anyone who reaches one of them could "
                       "try the token of a Jupyter that runs code as root",
                       "listen where the forwarded port arrives: 127.0.0.1 (vagrant-libvirt, an ssh "
                       "tunnel), 10.0.2.15 (VirtualBox NAT)")
    return ip


def server_argv(ip: str, port: int, notebook_dir: Path) -> list[str]:
    """The Jupyter command line: the venv's `jupyter-notebook` (beside this interpreter), on one address
    and one port. --port-retries=0: when the port is taken, fail rather than move to another port that
    nothing forwards to."""
    return [str(Path(sys.executable).with_name("jupyter-notebook")), "--allow-root", "--no-browser",
            f"--ip={check_listen_address(ip)}", f"--port={port}", "--port-retries=0",
            f"--notebook-dir={notebook_dir}"]


def serve(ip: str, port: int, notebook_dir: Path, token_file: Path = TOKEN_FILE) -> None:
    """Become Jupyter (execve: systemd keeps watching the same PID), guarded by the token in
    `token_file`, made first if missing."""
    if not Path(notebook_dir).is_dir():
        raise LabError(f"no notebook directory {notebook_dir}", "give the repository's notebooks/ with "
                                                                 "--notebook-dir")
    argv = server_argv(ip, port, notebook_dir)
    ensure_token(token_file)
    env = dict(os.environ, JUPYTER_TOKEN_FILE=str(token_file))
    env.pop("JUPYTER_TOKEN", None)   # it would win over the file
    os.execve(argv[0], argv, env)
