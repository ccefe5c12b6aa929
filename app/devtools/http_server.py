"""A stdlib HTTP server on a loopback port, served from a thread and stopped at once.

`ThreadingHTTPServer.shutdown()` waits for `serve_forever` to notice the request, which it only
does between polls (0.5 s by default): a test server per test made that wait a third of the
suite's wall time. Here the serving loop also watches a wake-up socket, so `stop()` returns as
soon as the thread sees it, and an idle server costs nothing between requests (no polling thread
competing for the interpreter lock with what a benchmark measures).
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class BackgroundHTTPServer:
    """`with BackgroundHTTPServer(Handler) as server:` or `start()` / `stop()`."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self.httpd = ThreadingHTTPServer((host, port), handler)
        # Handler threads may sit on a client's keep-alive connection: never wait for them.
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._wake_writer.send(b"\0")
        self._thread.join()
        self.httpd.server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.httpd, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_reader in ready:
                    return
                # The listening socket is readable: this accepts without blocking and hands
                # the connection to a handler thread.
                self.httpd.handle_request()
