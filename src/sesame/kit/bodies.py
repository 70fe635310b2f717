"""Bounds on request bodies: how large (``SESAME_MAX_BODY_BYTES``) and how long they may
take to arrive (``SESAME_REQUEST_TIMEOUT_SECONDS``, counted from the end of the headers;
the HTTP protocol bounds the headers themselves, ``api/http_protocol.py``).

Enforced on the stream, as the application reads it: a declared ``Content-Length`` over
the limit is refused before a byte is read, and a chunked body without one is refused
as soon as what arrived passes the limit, so no request costs more memory than the
limit. A body still incomplete at the deadline is answered 408. Both answers close the
connection (what is left of the body is never read) and use the one JSON error shape.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CLOSE = {"Connection": "close"}


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestBodyLimits:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413, f"the request body is larger than {self.max_bytes} bytes", headers=_CLOSE
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_seconds
        declared = _declared_length(scope)
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in; what follows is a disconnect, unbounded
                return await receive()
            if declared is not None and declared > self.max_bytes:
                raise self._too_large()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, "the request body did not arrive in time", headers=_CLOSE
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, limited_receive, send)
