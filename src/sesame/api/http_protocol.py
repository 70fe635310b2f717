"""uvicorn's HTTP protocol, with what it lacks at the edge: JSON errors and a deadline for
the request's headers. ``sesame serve`` passes it as uvicorn's ``http=``.

- uvicorn refuses malformed HTTP (a bad request line, header or chunk) before any ASGI
  app sees it, with a plain-text 400. Here the same 400, connection closed, comes as
  ``{"type": "bad_request", ...}`` with a request id that the warning logged carries.
- uvicorn bounds an idle keep-alive connection but not one whose request is still
  arriving: a client sending a header byte now and then held its connection for good.
  Here a request's headers must be complete within ``SESAME_REQUEST_TIMEOUT_SECONDS``
  from the connection's opening (or the request's first byte on a kept-alive one); after
  that it is answered 408 and closed. The body has its own deadline (``kit/bodies.py``).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sesame.kit.errors import ErrorBody
from sesame.kit.ids import new_id
from sesame.kit.logging import get_logger
from sesame.settings import load_settings

log = get_logger("sesame.http")

_REASONS = {400: b"Bad Request", 408: b"Request Timeout"}


def error_bytes(
    status: int, type_: str, message: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A whole HTTP/1.1 error response in the one error shape, asking to close."""
    request_id = new_id().hex
    log.warning(f"http_{type_}", request_id=request_id)
    body = orjson.dumps(
        ErrorBody(type=type_, status=status, message=message, request_id=request_id).as_dict()
    )
    head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"x-request-id: " + request_id.encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


@functools.cache
def _header_timeout() -> float:
    return load_settings().request_timeout_seconds


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    _header_deadline: asyncio.TimerHandle | None = None
    _request_started = False

    def _default_headers(self) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = list(self.server_state.default_headers)
        return headers

    def send_400_response(self, msg: str) -> None:
        self._cancel_header_deadline()
        self.transport.write(
            error_bytes(
                400, "bad_request", "the request is not valid HTTP/1.1", self._default_headers()
            )
        )
        self.transport.close()

    # -- the headers' deadline -------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_started = True
        if self._header_deadline is None:  # a kept-alive connection's next request
            self._start_header_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        self._request_started = False
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _start_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(_header_timeout(), self._headers_too_late)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_late(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if self._request_started:
            self.transport.write(
                error_bytes(
                    408,
                    "request_timeout",
                    "the request's headers did not arrive in time",
                    self._default_headers(),
                )
            )
        self.transport.close()
