"""A local FCM HTTP v1 stand-in that checks the wire format, for tests and benchmarks.

It plays both Google endpoints a sender talks to: ``POST /token`` (the OAuth2 JWT-bearer
grant: the assertion's RS256 signature, issuer, audience, scope and lifetime are checked
against the service accounts it trusts) and ``POST /v1/projects/{p}/messages:send``
(bearer token, project, message shape, 4096-byte payload). Refusals use Google's error
shape, ``FcmError`` details included, so a client's classification is exercised for real.
``GET /_standin/stats`` reports what it saw; ``POST /_standin/reset`` forgets it.

In tests, ``StandinServer`` serves it on a free port inside the running event loop. For a
benchmark, serve it in another process so it does not share the sender's CPU::

    python -m sesame.notifications.testing.fcm --port 0 --quiet

prints one JSON line, ``{"port", "url", "service_account"}``, once it accepts connections;
``run_in_process()`` does that and reads the line for you.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import select
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import orjson
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sesame.notifications.testing.serving import Served

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_PAYLOAD_BYTES = 4096
TOKEN_LIFETIME_SECONDS = 3600
CLOCK_SKEW_SECONDS = 300
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

_MESSAGE_FIELDS = frozenset(
    {"name", "data", "notification", "android", "webpush", "apns", "fcm_options"}
    | {"token", "topic", "condition"}
)
_TARGETS = ("token", "topic", "condition")
_NOTIFICATION_FIELDS = frozenset({"title", "body", "image"})
_RESERVED_DATA_KEYS = frozenset({"from", "message_type", "notification"})
_RESERVED_DATA_PREFIXES = ("google.", "gcm.")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_FCM_CODES = {400: "INVALID_ARGUMENT", 429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE"}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def make_service_account(token_uri: str, project_id: str = "sesame-test") -> dict[str, Any]:
    """A throwaway service account (fresh RSA 2048 key) whose tokens come from ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"sesame-fcm@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": token_uri,
    }


def google_error(
    status: int, message: str, fcm_code: str | None = None, extra: Iterable[Any] = ()
) -> dict[str, Any]:
    details: list[Any] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}] if fcm_code else []
    details.extend(extra)
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def invalid_argument(field: str, description: str) -> dict[str, Any]:
    violation = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": description}],
    }
    return google_error(400, description, "INVALID_ARGUMENT", [violation])


def message_problem(message: Any) -> tuple[str, str] | None:
    """Why FCM would refuse this ``message`` object, as (field, description), or None."""
    if not isinstance(message, dict):
        return "message", "message must be an object"
    unknown = set(message) - _MESSAGE_FIELDS
    if unknown:
        return "message", f"Unknown name {sorted(unknown)[0]!r}"
    targets = [name for name in _TARGETS if name in message]
    if len(targets) != 1:
        return "message", "exactly one of token, topic or condition is required"
    if not isinstance(message[targets[0]], str) or not message[targets[0]]:
        return f"message.{targets[0]}", "must be a non-empty string"
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "message.data", "must be a map of strings"
    for key, value in data.items():
        if not isinstance(value, str):
            return f"message.data[{key}]", "Invalid value: data values must be strings"
        if key in _RESERVED_DATA_KEYS or key.startswith(_RESERVED_DATA_PREFIXES):
            return f"message.data[{key}]", "Invalid data key: reserved word"
    notification = message.get("notification", {})
    if not isinstance(notification, dict):
        return "message.notification", "must be an object"
    for key, value in notification.items():
        if key not in _NOTIFICATION_FIELDS:
            return "message.notification", f"Unknown name {key!r}"
        if not isinstance(value, str):
            return f"message.notification.{key}", "must be a string"
    android = message.get("android", {})
    if not isinstance(android, dict) or not isinstance(android.get("collapse_key", ""), str):
        return "message.android.collapse_key", "must be a string"
    apns = message.get("apns", {})
    headers = apns.get("headers", {}) if isinstance(apns, dict) else None
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return "message.apns.headers", "must be a map of strings"
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return "message.apns.headers", "apns-collapse-id is longer than 64 bytes"
    size = len(orjson.dumps(message))
    if size > MAX_PAYLOAD_BYTES:
        return "message", f"Message is too big: {size} bytes, limit {MAX_PAYLOAD_BYTES}"
    return None


@dataclass(frozen=True)
class _TrustedKey:
    public_key: rsa.RSAPublicKey
    key_id: str
    project_id: str


class _InvalidGrant(Exception):
    pass


@dataclass
class _InjectedFailure:
    remaining: int
    status: int
    retry_after: int | None


class FcmStandin:
    """The stand-in's state and its ASGI app (the instance is the app).

    ``counts`` names what happened (``token_requests``, ``tokens_issued``,
    ``token_refused``, ``send_requests``, ``accepted``, ``unregistered``, ``invalid``,
    ``unauthenticated``, ``forbidden``, ``injected``); ``messages`` keeps every accepted
    message with the ``name`` it was given, unless ``keep_messages`` is false;
    ``max_in_flight`` is the most send requests it was serving at once and ``peers`` the
    client connections it saw. ``clock`` decides token lifetimes and assertion freshness.
    """

    def __init__(
        self,
        service_accounts: Iterable[dict[str, Any]] = (),
        *,
        dead_tokens: Iterable[str] = (),
        dead_prefix: str | None = "dead-",
        keep_messages: bool = True,
        delay_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._trusted: dict[str, _TrustedKey] = {}
        for account in service_accounts:
            self.trust(account)
        self.dead_tokens = set(dead_tokens)
        self.dead_prefix = dead_prefix
        self.keep_messages = keep_messages
        self.delay_seconds = delay_seconds
        self._clock = clock
        self.issued: dict[str, tuple[str, float]] = {}  # access token -> (project, expiry)
        self._failure: _InjectedFailure | None = None
        self._names = itertools.count(1)
        self.reset()

    def trust(self, service_account: dict[str, Any]) -> None:
        """Accept assertions signed by this service account's key."""
        key = serialization.load_pem_private_key(
            service_account["private_key"].encode(), password=None
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the service account's key is not RSA")
        self._trusted[service_account["client_email"]] = _TrustedKey(
            key.public_key(), service_account["private_key_id"], service_account["project_id"]
        )

    def reset(self) -> None:
        """Forget what was received (issued tokens stay valid)."""
        self.counts: Counter[str] = Counter()
        self.messages: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.peers: set[tuple[str, int]] = set()

    def revoke_tokens(self) -> None:
        """Every access token issued so far is refused from now on (answers 401)."""
        self.issued.clear()

    def fail_next(self, count: int, status: int = 429, retry_after: int | None = None) -> None:
        """Answer the next ``count`` send requests with ``status`` (429, 500, 503 or 401),
        before any other check, with ``Retry-After`` when given."""
        self._failure = _InjectedFailure(count, status, retry_after)

    def stats(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "max_in_flight": self.max_in_flight,
            "connections": len(self.peers),
            "messages_kept": len(self.messages),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        response_headers: dict[str, str] = {}
        if method == "POST" and path == "/token":
            status, answer = self._issue_token(body, _request_url(scope, headers))
        elif method == "POST" and path.startswith("/v1/projects/") and path.endswith(":send"):
            project = path.removeprefix("/v1/projects/").removesuffix("/messages:send")
            client = scope.get("client")
            if client:
                self.peers.add((client[0], client[1]))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.delay_seconds:
                    await asyncio.sleep(self.delay_seconds)
                status, answer = self._send(project, headers, body, response_headers)
            finally:
                self.in_flight -= 1
        elif method == "GET" and path == "/_standin/stats":
            status, answer = 200, self.stats()
        elif method == "POST" and path == "/_standin/reset":
            self.reset()
            status, answer = 200, {}
        else:
            status, answer = 404, google_error(404, "Not Found")
        await _respond(send, status, answer, response_headers)

    def _issue_token(self, body: bytes, own_url: str) -> tuple[int, dict[str, Any]]:
        self.counts["token_requests"] += 1
        form = parse_qs(body.decode("utf-8", "replace"))
        if form.get("grant_type") != [JWT_BEARER_GRANT]:
            self.counts["token_refused"] += 1
            return 400, {"error": "unsupported_grant_type", "error_description": "grant_type"}
        try:
            signer = self._verify_assertion((form.get("assertion") or [""])[0], own_url)
        except _InvalidGrant as exc:
            self.counts["token_refused"] += 1
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        token = "ya29.standin-" + secrets.token_urlsafe(32)
        self.issued[token] = (signer.project_id, self._clock() + TOKEN_LIFETIME_SECONDS)
        self.counts["tokens_issued"] += 1
        return 200, {
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "token_type": "Bearer",
        }

    def _verify_assertion(self, assertion: str, own_url: str) -> _TrustedKey:
        """The trusted key that signed a valid assertion; ``_InvalidGrant`` otherwise."""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise _InvalidGrant("Invalid JWT.") from exc
        trusted = self._trusted.get(unverified.get("iss", ""))
        if trusted is None:
            raise _InvalidGrant("Invalid JWT: unknown issuer.")
        if header.get("alg") != "RS256" or header.get("kid", trusted.key_id) != trusted.key_id:
            raise _InvalidGrant("Invalid JWT: wrong algorithm or key id.")
        try:  # only the signature here; the claims are checked below, against our clock
            claims = jwt.decode(
                assertion,
                trusted.public_key,
                algorithms=["RS256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise _InvalidGrant("Invalid JWT Signature.") from exc
        if claims.get("aud") != own_url:
            raise _InvalidGrant("Invalid JWT: the audience is not this token endpoint.")
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            raise _InvalidGrant("Invalid OAuth scope or ID token audience provided.")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise _InvalidGrant("Invalid JWT: iat and exp are required.")
        now = self._clock()
        fresh = iat - CLOCK_SKEW_SECONDS <= now < exp + CLOCK_SKEW_SECONDS
        if not fresh or exp - iat > TOKEN_LIFETIME_SECONDS:
            raise _InvalidGrant(
                "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
            )
        return trusted

    def _send(
        self, project: str, headers: dict[str, str], body: bytes, response_headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        self.counts["send_requests"] += 1
        failure = self._failure
        if failure is not None and failure.remaining > 0:
            failure.remaining -= 1
            self.counts["injected"] += 1
            if failure.retry_after is not None:
                response_headers["retry-after"] = str(failure.retry_after)
            fcm_code = _FCM_CODES.get(failure.status)
            return failure.status, google_error(failure.status, "injected failure", fcm_code)
        bearer = headers.get("authorization", "")
        grant = self.issued.get(bearer.removeprefix("Bearer ")) if bearer else None
        if grant is None or grant[1] <= self._clock():
            self.counts["unauthenticated"] += 1
            return 401, google_error(401, "Request had invalid authentication credentials.")
        if grant[0] != project:
            self.counts["forbidden"] += 1
            return 403, google_error(403, f"Permission denied on resource project {project}.")
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.counts["invalid"] += 1
            return 400, invalid_argument("", "Invalid JSON payload received.")
        message = request.get("message") if isinstance(request, dict) else None
        problem = message_problem(message)
        if problem is not None:
            self.counts["invalid"] += 1
            return 400, invalid_argument(*problem)
        assert isinstance(message, dict)  # message_problem checked it
        token = message.get("token")
        if token is not None and (
            token in self.dead_tokens or (self.dead_prefix and token.startswith(self.dead_prefix))
        ):
            self.counts["unregistered"] += 1
            return 404, google_error(404, "Requested entity was not found.", "UNREGISTERED")
        name = f"projects/{project}/messages/{next(self._names)}"
        self.counts["accepted"] += 1
        if self.keep_messages:
            self.messages.append({"name": name, **message})
        return 200, {"name": name}


def fcm_standin(service_accounts: Iterable[dict[str, Any]] = (), **options: Any) -> FcmStandin:
    """A stand-in trusting ``service_accounts``; ``options`` as for ``FcmStandin``."""
    return FcmStandin(service_accounts, **options)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        event = await receive()
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            return b"".join(chunks)


def _request_url(scope: Scope, headers: dict[str, str]) -> str:
    """The URL the client addressed, which an assertion must name as its audience."""
    host = headers.get("host") or "{}:{}".format(*scope["server"])
    return f"{scope.get('scheme', 'http')}://{host}{scope['path']}"


async def _respond(send: Send, status: int, answer: Any, headers: dict[str, str]) -> None:
    payload = orjson.dumps(answer)
    raw_headers = [
        (b"content-type", b"application/json; charset=UTF-8"),
        (b"content-length", str(len(payload)).encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: FcmStandin, *, fast: bool, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="auto" if fast else "asyncio",
        http="auto" if fast else "h11",
        lifespan="off",
        log_level=log_level,
        log_config=None,
        access_log=False,
        backlog=2048,
    )


class StandinServer(Served):
    """A stand-in served on a free localhost port in the running event loop, with a
    service account made for it (``service_account``, trusted by ``standin``)."""

    def __init__(
        self,
        standin: FcmStandin | None = None,
        *,
        project_id: str = "sesame-test",
        host: str = "127.0.0.1",
    ) -> None:
        self.standin = standin or FcmStandin()
        self._project_id = project_id
        self._host = host
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""
        self.port = 0
        self.service_account: dict[str, Any] = {}

    async def start(self) -> None:
        sock = _bind(self._host, 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://{self._host}:{self.port}"
        self.service_account = make_service_account(f"{self.url}/token", self._project_id)
        self.standin.trust(self.service_account)
        self._server = uvicorn.Server(
            _uvicorn_config(self.standin, fast=False, log_level="warning")
        )
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the FCM stand-in stopped while starting")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None


@dataclass
class StandinProcess:
    """A stand-in serving in a child process; ``stop()`` ends it."""

    process: subprocess.Popen[str]
    url: str
    service_account: dict[str, Any]

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.url}/_standin/stats", timeout=10).json()
        return answer

    def reset(self) -> None:
        httpx.post(f"{self.url}/_standin/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> StandinProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def run_in_process(
    *,
    keep_messages: bool = False,
    delay_seconds: float = 0.0,
    dead_prefix: str = "dead-",
    project_id: str = "sesame-test",
    startup_timeout: float = 30.0,
) -> StandinProcess:
    """Start ``python -m sesame.notifications.testing.fcm`` on a free port and wait until
    it serves."""
    command = [sys.executable, "-m", "sesame.notifications.testing.fcm", "--port", "0"]
    command += ["--quiet", "--project", project_id, "--dead-prefix", dead_prefix]
    command += ["--delay-ms", str(delay_seconds * 1000)]
    if keep_messages:
        command.append("--keep-messages")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], startup_timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        process.kill()
        process.wait()
        raise RuntimeError("the FCM stand-in process did not start")
    hello = json.loads(line)
    return StandinProcess(process, hello["url"], hello["service_account"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a local FCM HTTP v1 stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--project", default="sesame-test")
    parser.add_argument("--dead-prefix", default="dead-")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--keep-messages", action="store_true")
    parser.add_argument("--service-account-out", type=Path, help="also write it to this file")
    parser.add_argument("--quiet", action="store_true", help="log only errors")
    args = parser.parse_args(argv)

    sock = _bind(args.host, args.port)
    url = f"http://{args.host}:{sock.getsockname()[1]}"
    account = make_service_account(f"{url}/token", args.project)
    if args.service_account_out:
        args.service_account_out.write_text(json.dumps(account))
        os.chmod(args.service_account_out, 0o600)
    standin = FcmStandin(
        [account],
        dead_prefix=args.dead_prefix or None,
        keep_messages=args.keep_messages,
        delay_seconds=args.delay_ms / 1000,
    )
    config = _uvicorn_config(standin, fast=True, log_level="error" if args.quiet else "info")
    # The socket already listens: a client connecting now waits in the backlog until the
    # server accepts, so announcing before serving is safe.
    hello = {"port": sock.getsockname()[1], "url": url, "service_account": account}
    print(json.dumps(hello), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
