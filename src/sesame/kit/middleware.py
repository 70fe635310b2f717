"""The outermost layer of every request: request id, access log, metrics and the catch-all.

A plain ASGI middleware (no per-request task or body buffering) so that it costs
microseconds. Whatever escapes the application becomes a JSON 500 carrying the request
id; the process never sees the exception. Logging here goes through the guarded logger,
so even a broken log pipeline cannot turn a good response into a failure.

What a client put in the path is logged only where it is an id (``loggable_path``): a
guest pass is its own token, so a credential in a path never reaches the logs; metrics
are labelled by route template. The client is the peer, or what a trusted proxy says.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sesame.kit import addresses
from sesame.kit.errors import ErrorBody
from sesame.kit.ids import new_id
from sesame.kit.logging import bind_context, get_logger, reset_context
from sesame.kit.metrics import HTTP_LATENCY, HTTP_REQUESTS, UNHANDLED_ERRORS

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")

log = get_logger("sesame.http")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return str(value.decode())
    return None


_PATH_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
REDACTED_SEGMENT = "[redacted]"


def _shown_value(value: Any) -> str:
    """Ids are shown; any other value of a path parameter may be a credential (a guest
    pass is its own token), so only ids pass."""
    if isinstance(value, UUID):
        return str(value)
    try:
        return str(UUID(str(value)))
    except ValueError:
        return REDACTED_SEGMENT


def loggable_path(scope: Scope) -> str:
    """The request path as logs may show it: the route template with ids filled in and
    every other parameter redacted; for a path no route matched, only plain words and
    ids are kept (a mistyped link may still carry a token)."""
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        params = scope.get("path_params") or {}
        return _PATH_PARAMETER.sub(lambda m: _shown_value(params.get(m.group(1))), template)
    path = str(scope.get("path", ""))
    return "/".join(
        segment if not segment or _PLAIN_SEGMENT.match(segment) else _shown_value(segment)
        for segment in path.split("/")
    )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    # The template without convertors: "/v1/sites/{object_id}", as OpenAPI shows it.
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class ObservabilityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        skip_access_log: frozenset[str] = frozenset(),
        trusted_proxies: Sequence[addresses.Network] = (),
    ) -> None:
        self.app = app
        self.skip_access_log = skip_access_log
        self.trusted_proxies = trusted_proxies
        # The labelled series by (method, route template, status), looked up once each:
        # as bounded as the labels themselves.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope) or new_id().hex
        scope.setdefault("state", {})["request_id"] = request_id
        tokens = bind_context(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False
        header_value = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, header_value))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            UNHANDLED_ERRORS.inc()
            log.error("unhandled_error", path=loggable_path(scope), exc_info=exc)
            if not response_started:
                status = 500
                await self._send_internal_error(send, request_id)
        finally:
            elapsed = time.perf_counter() - started
            self._record(scope, status, elapsed)
            reset_context(tokens)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = _route_template(scope)
        method = scope.get("method", "")
        try:
            series = self._series.get((method, route, status))
            if series is None:
                labels = (method, route, str(status))
                series = HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels)
                self._series[(method, route, status)] = series
            series[0].inc()
            series[1].observe(elapsed)
        except Exception as exc:  # metrics must not fail a request either
            log.warning("metrics_failed", error_type=type(exc).__name__)
        if route in self.skip_access_log:
            return
        log.info(
            "http_request",
            method=method,
            path=loggable_path(scope),
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 3),
            client=self._client(scope),
        )

    def _client(self, scope: Scope) -> str:
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name == addresses.FORWARDED_FOR
        ]
        peer = scope.get("client")
        return addresses.client_address(peer[0] if peer else None, forwarded, self.trusted_proxies)

    @staticmethod
    async def _send_internal_error(send: Send, request_id: str) -> None:
        body = ErrorBody(
            type="internal_error",
            status=500,
            message="internal error; the request id identifies it in the server logs",
            request_id=request_id,
        ).as_dict()
        payload = orjson.dumps(body)
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (REQUEST_ID_HEADER, request_id.encode()),
        ]
        try:
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        except Exception as exc:  # the client went away; nothing to answer
            log.info("client_gone", error_type=type(exc).__name__)
