"""A loopback TCP proxy whose network can be made to hang: it forwards bytes both ways
until :meth:`TcpProxy.hang`, then keeps every connection open and forwards nothing (no
reset, no FIN), as a peer behind a dead switch or a frozen VM looks to the caller.

    with TcpProxy("127.0.0.1:50051") as proxy:   # proxy.address forwards there
        ...
        proxy.hang()
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType

__all__ = ["TcpProxy"]

_CHUNK = 1 << 16


class TcpProxy:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._hung = threading.Event()
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def hang(self) -> None:
        """From now on, forward nothing and accept nothing new; keep connections open."""
        self._hung.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in [self._listener, *self._sockets]:
            sock.close()
        self._selector.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._hung.is_set():
                # Data stays in the kernel's buffers, connections stay open: nothing moves.
                for key in list(self._selector.get_map().values()):
                    self._selector.unregister(key.fileobj)
                self._stop.wait(0.1)
                continue
            for key, _ in self._selector.select(timeout=0.1):
                if key.fileobj is self._listener:
                    self._accept()
                    continue
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                target: socket.socket = key.data
                try:
                    data = source.recv(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    self._drop(source, target)
                    continue
                try:
                    target.sendall(data)
                except OSError:
                    self._drop(source, target)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(True)
            self._sockets.append(sock)
        self._selector.register(client, selectors.EVENT_READ, server)
        self._selector.register(server, selectors.EVENT_READ, client)

    def _drop(self, *pair: socket.socket) -> None:
        for sock in pair:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
