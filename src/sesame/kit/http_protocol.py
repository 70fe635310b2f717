"""uvicorn's HTTP protocols, answering a request they cannot parse in the one error shape.

uvicorn refuses malformed HTTP (a bad request line, header or chunk) before any ASGI app
sees it, with a plain-text 400. These subclasses change only that answer: the same 400,
connection closed, as ``{"type": "bad_request", ...}`` with a request id that the
warning logged here carries too. ``sesame serve`` passes them as uvicorn's ``http=``.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sesame.kit.errors import ErrorBody
from sesame.kit.ids import new_id
from sesame.kit.logging import get_logger

log = get_logger("sesame.http")


def bad_request_bytes(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 400 response in the one error shape, asking to close."""
    request_id = new_id().hex
    log.warning("malformed_http_request", request_id=request_id)
    body = orjson.dumps(
        ErrorBody(
            type="bad_request",
            status=400,
            message="the request is not valid HTTP/1.1",
            request_id=request_id,
        ).as_dict()
    )
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"x-request-id: " + request_id.encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(bad_request_bytes(_default_headers(self)))
        self.transport.close()


class JsonErrorsH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(bad_request_bytes(_default_headers(self)))
        self.transport.close()


def _default_headers(protocol: Any) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = list(protocol.server_state.default_headers)
    return headers
