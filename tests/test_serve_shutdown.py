"""``sesame serve`` on SIGTERM: the requests in flight finish, everything closes, status 0.

The bounds on ``wait`` are how long a stop may take at most (the grace period, then as
long again for the gateway, broker and workers, plus the interpreter's own exit on a busy
machine): a test fails if a stop overruns them, not if it is slow within them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import threading
from pathlib import Path

import httpx

from tests.support import ServerProcess, eventually, free_port, run_cli

MARGIN_SECONDS = 5


def _installation(directory: Path, grace: int) -> tuple[dict[str, str], str, str]:
    """A migrated SQLite database with the demo; the env, a partner key and the path that
    opens the demo's entrance (whose simulated reader is not running: nobody answers)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SESAME_")}
    env.update(
        {
            "SESAME_ENV": "development",
            "SESAME_TEST_CWD": str(directory),
            "SESAME_TEST_LOG": str(directory / "server.log"),
            "SESAME_DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'sesame.db'}",
            "SESAME_MQTT_BIND": f"127.0.0.1:{free_port()}",
            "SESAME_SHUTDOWN_GRACE_SECONDS": str(grace),
        }
    )
    run_cli(env, "db", "upgrade", cwd=str(directory))
    printed = run_cli(env, "demo", cwd=str(directory))
    api_key = re.search(r"(ses_[0-9a-f]{12}_\S+)", printed).group(1)  # type: ignore[union-attr]
    open_path = re.search(r"(/v1/entrances/[0-9a-f-]+/open)", printed).group(1)  # type: ignore[union-attr]
    return env, api_key, open_path


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    """A new server could listen there (with SO_REUSEADDR, as servers do)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ports(env: dict[str, str], server: ServerProcess) -> list[int]:
    return [server.port, int(env["SESAME_MQTT_BIND"].rpartition(":")[2])]


def test_sigterm_answers_the_long_poll_in_flight_and_exits_0_with_its_ports_free(
    tmp_path: Path,
) -> None:
    """An open waiting for its device when SIGTERM comes gets a complete answer (its
    attempt, still pending), and the process exits 0 within the grace period, its HTTP
    port and its embedded broker's port closed."""
    grace = 5
    env, api_key, open_path = _installation(tmp_path, grace)
    headers = {"Authorization": f"Bearer {api_key}"}
    server = ServerProcess(env, free_port())
    answers: list[httpx.Response | Exception] = []

    def long_poll() -> None:
        try:
            answers.append(
                httpx.post(
                    f"{server.base_url}{open_path}",
                    params={"queue": "true", "wait": 30},  # far past the grace period
                    json={"ttl_seconds": 30},
                    headers=headers,
                    timeout=60,
                )
            )
        except Exception as exc:
            answers.append(exc)

    try:
        server.wait_ready()
        assert all(_listening(port) for port in _ports(env, server))
        poll = threading.Thread(target=long_poll)
        poll.start()

        def pending() -> bool:
            listed = httpx.get(
                f"{server.base_url}/v1/action-attempts",
                params={"status": "pending"},
                headers=headers,
            )
            return bool(listed.json()["items"])

        # Committed, so the request is past its transaction and waiting for the reader.
        asyncio.run(eventually(pending))
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=grace + MARGIN_SECONDS) == 0
        poll.join(timeout=30)
        [answer] = answers
        assert isinstance(answer, httpx.Response), answer
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "pending"
        assert answer.json()["action"] == "open"
        for port in _ports(env, server):
            assert not _listening(port)
            assert _bindable(port)
    finally:
        server.stop()


def test_a_request_past_the_grace_period_is_cut_and_the_server_still_stops(
    tmp_path: Path,
) -> None:
    """A request whose body never comes (it would wait SESAME_REQUEST_TIMEOUT_SECONDS, 30)
    is still in flight when the grace period ends: it is cancelled, and the process exits
    0 within the grace period and the closing budget, its ports free."""
    grace = 1
    env, _, _ = _installation(tmp_path, grace)
    server = ServerProcess(env, free_port())
    try:
        server.wait_ready()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(
                b"POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 4096\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            # The server says so when the app starts reading the body: it is in flight.
            assert client.recv(64).startswith(b"HTTP/1.1 100 Continue")
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=grace + 1 + MARGIN_SECONDS) == 0
            answered = b""
            while chunk := client.recv(4096):  # to the end: the connection is closed
                answered += chunk
        assert not answered.startswith(b"HTTP/1.1 2"), answered
        for port in _ports(env, server):
            assert not _listening(port)
            assert _bindable(port)
    finally:
        server.stop()
