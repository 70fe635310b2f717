"""Regression test for the production incident: a log call that fails on an unusual
argument must neither fail the request nor take the server down."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sesame.migrations import upgrade
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def poisoned_server(tmp_path: Path) -> object:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'poison.db'}"
    upgrade(database_url)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.kit.poison_server", database_url, str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("poisoned server did not start: " + process.stderr.read().decode()[-2000:])
    yield base, process
    process.terminate()
    process.wait(timeout=10)


def test_requests_are_answered_while_every_log_call_fails(poisoned_server: object) -> None:
    base, process = poisoned_server  # type: ignore[misc]
    poisoned = {"X-Request-ID": "poison-123"}  # bound into every log line of the request
    with httpx.Client(base_url=base, timeout=5) as client:
        assert client.get("/v1/poison").status_code == 404
        assert client.get("/healthz", headers=poisoned).status_code == 200
        unauthenticated = client.get("/v1/sites", headers=poisoned)
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["type"] == "unauthorized"
        login = client.post(
            "/v1/auth/login",
            headers=poisoned,
            json={"email": "poison@sesame.test", "password": "poison"},
        )
        assert login.status_code == 401
        for _ in range(50):
            assert client.get("/v1/poison/again").status_code == 404
        # Still up, still serving, and the failures were counted rather than hidden.
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
    assert process.poll() is None
    failures = [
        line for line in metrics.splitlines() if line.startswith("sesame_log_failures_total")
    ]
    assert failures
    assert sum(float(line.rsplit(" ", 1)[1]) for line in failures) >= 50
