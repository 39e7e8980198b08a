"""The RTNL socket: how this package talks netlink to the kernel (pyroute2's IPRoute), in the host's
network namespace or in any other, and the one undo every link shares (RTM_DELLINK).

pyroute2 costs ~0.3 s to import: only the functions here import it, when first called.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from labctl.network.netns import netns_path

#: iproute(netns): pyroute2 forks a child that opens the socket in the namespace; a child forked while
#: another thread forks can inherit a held lock and hang (the daemon's 20 concurrent runs did): one at a time.
_FORKING = threading.Lock()


@contextlib.contextmanager
def iproute(netns: int | str | None = None) -> Iterator[Any]:
    """A netlink (RTNL) socket, pyroute2's IPRoute, in the host's network namespace or in `netns`.

    For another namespace pyroute2 forks a child that joins it, opens the socket there and passes it
    back. It ends that child with SIGTERM: the child must not run labctl's SIGTERM handler (which
    raises KeyboardInterrupt, and would unwind a copy of our stack, running our `finally` blocks in
    the child), hence disable_mp_signal, which restores the default action in the child.
    pyroute2's synchronous API runs an asyncio loop of its own, which it cannot do in a thread that
    already runs one (Jupyter's): there, every call goes to a worker thread."""
    import asyncio
    from pyroute2 import IPRoute, config
    config.disable_mp_signal = True

    def make():
        if netns is None:
            return IPRoute()
        with _FORKING:
            return IPRoute(netns=netns_path(netns), flags=0)

    try:
        asyncio.get_running_loop()
        ipr = _InWorkerThread(make)
    except RuntimeError:  # no loop running here: the usual case
        ipr = make()
    try:
        yield ipr
    finally:
        ipr.close()


class _InWorkerThread:
    """An object created, used and closed in one worker thread; its method results are made lists."""

    def __init__(self, factory: Callable[[], Any]):
        from concurrent.futures import ThreadPoolExecutor
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pyroute2")
        self._obj = self._pool.submit(factory).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            def run():
                result = attr(*args, **kwargs)
                return list(result) if hasattr(result, "__next__") else result
            return self._pool.submit(run).result()
        return call

    def close(self) -> None:
        try:
            self._pool.submit(self._obj.close).result()
        finally:
            self._pool.shutdown()


def delete_link(ifname: str, netns: str | None = None, what: str = "") -> None:
    """RTM_DELLINK by name, tolerating a link (or a namespace) already gone. Deleting one end of a veth
    pair deletes both; `what` only describes the link in the journal."""
    from pyroute2.netlink.exceptions import NetlinkError
    if netns and not os.path.exists(netns_path(netns)):
        return
    with iproute(netns) as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)
