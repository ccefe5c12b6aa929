"""uvicorn's httptools protocol with a bound on the request head (`junction serve` uses it).

uvicorn bounds a request head only with its h11 parser (`h11_max_incomplete_event_size`, and it
answers 400); with httptools, its default, a head is read however long it grows: one 100 MB
header cost ~11 s of CPU. This subclass counts the bytes of a head as they arrive and answers 431
and closes the connection once they pass the limit, before the parser has seen more of them. The
limit is uvicorn's own option for h11, `h11_max_incomplete_event_size`, so one setting
(REQUEST_MAX_HEADER_BYTES) bounds the head whichever parser runs.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEAD_BYTES = 32 * 1024
_REFUSAL = (
    b'{"error":"request_header_fields_too_large",'
    b'"detail":"the request line and headers are too large"}'
)


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._max_head_bytes: int = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._head_bytes: int | None = 0  # None from the end of a head to the end of its body

    def data_received(self, data: bytes) -> None:
        # The parser is fed at most what is left of the head's allowance at a time, so a head
        # that does not end within it is refused before the rest is parsed.
        while data:
            if self._head_bytes is None:
                super().data_received(data)
                return
            room = self._max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0

    def _refuse(self) -> None:
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(_REFUSAL)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _REFUSAL
        )
        self.transport.close()
