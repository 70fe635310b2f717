"""The HTTP edge as `sesame serve` runs it: what clients control before any endpoint runs
(the addresses they claim, bodies and their pace, the path) is bounded and never trusted
or logged as sent."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from sesame.app import create_app
from sesame.auth.sms import MemorySmsSender
from sesame.migrations import upgrade
from sesame.runtime import build_runtime
from tests.conftest import test_settings
from tests.support import ServerProcess, free_port, unique_phone

MAX_BODY_BYTES = 4096
OTP_REQUESTS_PER_ADDRESS = 5


class Served:
    def __init__(self, server: ServerProcess, log: Path) -> None:
        self.server = server
        self.base_url = server.base_url
        self.port = server.port
        self.log = log

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def access_log(self, until: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        """The access-log lines, once ``until`` holds for them (a line is written just
        after its response is sent)."""
        deadline = time.monotonic() + 15
        while True:
            lines = [line for line in self.log_lines() if line["event"] == "http_request"]
            if until(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("edge")
    database_url = f"sqlite+aiosqlite:///{directory / 'edge.db'}"
    upgrade(database_url)
    log = directory / "server.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SESAME_")}
    env.update(
        {
            "SESAME_ENV": "development",
            "SESAME_DATABASE_URL": database_url,
            "SESAME_GATEWAY_ENABLED": "false",
            "SESAME_WORKER_ENABLED": "false",
            "SESAME_LEDGER_ENABLED": "false",
            "SESAME_NOTIFY_ENABLED": "false",
            "SESAME_LOG_LEVEL": "info",
            "SESAME_LOG_FORMAT": "json",
            "SESAME_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "SESAME_REQUEST_TIMEOUT_SECONDS": "1",
            "SESAME_OTP_REQUESTS_PER_ADDRESS": str(OTP_REQUESTS_PER_ADDRESS),
            "SESAME_TEST_LOG": str(log),
            "SESAME_TEST_CWD": str(directory),
        }
    )
    server = ServerProcess(env, free_port())
    try:
        server.wait_ready()
        yield Served(server, log)
    finally:
        server.stop()


def test_a_guest_pass_token_in_the_path_never_reaches_the_logs_or_metrics(
    served: Served,
) -> None:
    """A guest's link is the pass itself: the access log shows the route with the token
    redacted, for a mistyped link too, and metrics label it by route template."""
    token = ".".join(secrets.token_urlsafe(n) for n in (24, 120, 64))
    with httpx.Client(base_url=served.base_url, timeout=10) as client:
        assert client.get(f"/v1/passes/{token}", params={"format": "svg"}).status_code == 200
        assert client.get(f"/v1/pass/{token}").status_code == 404
        site = "0b9d8a4e-3c1f-4d2a-9e6b-7f5a4c3b2a10"
        assert client.get(f"/v1/sites/{site}").status_code == 401
        metrics = client.get("/metrics").text
    lines = served.access_log(until=lambda lines: any(site in str(x) for x in lines))
    written = served.log.read_text(errors="replace")
    assert all(part not in written for part in token.split("."))
    paths = [line.get("path") for line in lines]
    assert "/v1/passes/[redacted]" in paths
    assert "/v1/pass/[redacted]" in paths
    assert f"/v1/sites/{site}" in paths  # ids stay, for operators
    assert token not in metrics
    assert 'route="/v1/passes/{token}"' in metrics


def test_forwarded_for_from_an_untrusted_local_peer_changes_no_address(served: Served) -> None:
    """With no trusted proxies (the default), a client on the same host that claims a new
    address in every request is still one address to the per-address limits."""
    statuses = []
    with httpx.Client(base_url=served.base_url, timeout=10) as client:
        for n in range(OTP_REQUESTS_PER_ADDRESS + 3):
            response = client.post(
                "/v1/auth/codes",
                json={"phone": unique_phone()},
                headers={"X-Forwarded-For": f"203.0.113.{n + 1}"},
            )
            statuses.append(response.status_code)
    assert statuses == [202] * OTP_REQUESTS_PER_ADDRESS + [429] * 3

    def codes(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [line for line in lines if line.get("route") == "/v1/auth/codes"]

    logged = codes(served.access_log(until=lambda lines: len(codes(lines)) == len(statuses)))
    assert len(logged) == len(statuses)
    assert {line.get("client") for line in logged} == {"127.0.0.1"}


@pytest.fixture
async def behind_proxies(database_url: str) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """An app whose trusted proxies are 10.9.0.0/16; clients connect from a given peer."""
    runtime = build_runtime(
        test_settings(
            database_url,
            trusted_proxies="10.9.0.0/16",
            otp_requests_per_address=OTP_REQUESTS_PER_ADDRESS,
        ),
        sms_sender=MemorySmsSender(),
    )
    app = create_app(runtime=runtime)

    def client_from(peer: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://sesame.test")

    try:
        yield client_from
    finally:
        await runtime.close()


async def _code_statuses(client: httpx.AsyncClient, forwarded_for: list[str]) -> list[int]:
    statuses = []
    async with client:
        for value in forwarded_for:
            response = await client.post(
                "/v1/auth/codes", json={"phone": unique_phone()}, headers={"X-Forwarded-For": value}
            )
            statuses.append(response.status_code)
    return statuses


async def test_behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client(
    behind_proxies: Callable[[str], httpx.AsyncClient],
) -> None:
    """Through the proxy, a client rotating what it writes in front of the proxy's own
    entry is still one address; another client behind the same proxy has its own
    budget; a peer outside the trusted networks is itself, whatever it claims."""
    client = f"198.51.100.{secrets.randbelow(250) + 1}"
    spoofed = [f"203.0.113.{n}, {client}, 10.9.0.8" for n in range(OTP_REQUESTS_PER_ADDRESS + 2)]
    assert await _code_statuses(behind_proxies("10.9.0.2"), spoofed) == (
        [202] * OTP_REQUESTS_PER_ADDRESS + [429] * 2
    )
    neighbour = f"192.0.2.{secrets.randbelow(250) + 1}"
    assert await _code_statuses(behind_proxies("10.9.0.2"), [neighbour]) == [202]

    outsider = f"10.8.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    rotating = [f"203.0.113.{n}" for n in range(OTP_REQUESTS_PER_ADDRESS + 1)]
    assert await _code_statuses(behind_proxies(outsider), rotating) == (
        [202] * OTP_REQUESTS_PER_ADDRESS + [429]
    )


def _raw_exchange(served: Served, request: bytes, *, body_chunks: Sequence[bytes] = ()) -> bytes:
    """Send ``request`` on a raw connection, then each chunk; read until the server closes
    the connection (it must, or the read times out and the test fails)."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=20) as sock:
        sock.sendall(request)
        for chunk in body_chunks:
            sock.sendall(chunk)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def _json_answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    return int(status_line.split()[1]), headers, json.loads(body)


def test_a_body_over_the_limit_is_a_413_with_or_without_content_length(served: Served) -> None:
    """Declared too large: refused before it is read. Chunked with no length: refused once
    what arrived passes the limit. Both in the one error shape, both close the connection."""
    with httpx.Client(base_url=served.base_url, timeout=10) as client:
        declared = client.post(
            "/v1/auth/login",
            content=b'{"email": "a@b.test", "password": "' + b"x" * MAX_BODY_BYTES + b'"}',
            headers={"Content-Type": "application/json"},
        )
        within = client.post("/v1/auth/login", json={"email": "a@b.test", "password": "x" * 100})
    assert declared.status_code == 413
    assert declared.json()["type"] == "payload_too_large"
    assert within.status_code == 401

    chunk = b"x" * 1024
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY_BYTES // len(chunk) + 2)
    raw = _raw_exchange(
        served,
        b"POST /v1/auth/login HTTP/1.1\r\nHost: sesame.test\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        body_chunks=chunks,
    )
    status, headers, body = _json_answer(raw)
    assert status == 413
    assert body["type"] == "payload_too_large"
    assert headers["connection"] == "close"


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_closes(
    served: Served,
) -> None:
    """Half a body, then silence: answered 408 at the body deadline and closed, instead of
    holding the connection as long as the client likes."""
    raw = _raw_exchange(
        served,
        b"POST /v1/auth/login HTTP/1.1\r\nHost: sesame.test\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        b'{"email": "a@b.test", ',
    )
    status, headers, body = _json_answer(raw)
    assert status == 408
    assert body["type"] == "request_timeout"
    assert body["request_id"]
    assert headers["connection"] == "close"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: sesame.test\r\nno colon here\r\n\r\n",
        b"POST /v1/auth/login HTTP/1.1\r\nHost: sesame.test\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["request line", "header", "chunk size"],
)
def test_malformed_http_is_answered_in_the_one_json_error_shape(
    served: Served, request_bytes: bytes
) -> None:
    status, headers, body = _json_answer(_raw_exchange(served, request_bytes))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["type"] == "bad_request"
    assert body["status"] == 400
    assert body["request_id"] == headers["x-request-id"]


def test_headers_that_do_not_arrive_in_time_are_a_408_and_the_connection_closes(
    served: Served,
) -> None:
    """A request line and half a header, then silence (a slow client, or one holding
    connections open): answered 408 at the deadline and closed."""
    raw = _raw_exchange(served, b"GET /healthz HTTP/1.1\r\nHost: sesame.te")
    status, headers, body = _json_answer(raw)
    assert status == 408
    assert body["type"] == "request_timeout"
    assert headers["connection"] == "close"


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    assert _raw_exchange(served, b"") == b""
