"""`sesame demo`: the same accounts and key from run to run, new ones on --reset."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ServerProcess, free_port, run_cli
from tests.test_cli import dev_env, run_in, wait_until


def demo_json(directory: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    printed: dict[str, Any] = json.loads(run_in(directory, env, "demo", "--json", *extra))
    return printed


def passwords(printed: dict[str, Any]) -> dict[str, str]:
    return {s["email"]: s["password"] for s in printed["staff"]}


def sign_in(base_url: str, email: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/auth/login", json={"email": email, "password": password}, timeout=30
    )


@pytest.mark.timeout(300)  # a server and several commands, on a loaded machine
def test_the_demo_keeps_its_credentials_across_runs_until_reset(tmp_path: Path) -> None:
    env = dev_env(tmp_path)
    run_in(tmp_path, env, "db", "upgrade")
    first = demo_json(tmp_path, env)
    devices_before = (tmp_path / "var" / "demo-devices.json").read_text()
    text = run_cli(env, "demo", cwd=str(tmp_path))
    second = demo_json(tmp_path, env)
    # Readable text, not a Python dict; the same credentials, printed every time.
    assert "2 buildings, 80 units, 3 entrances, 4 residents, 5 devices" in text
    assert "{'" not in text
    assert second["api_key"] == first["api_key"]
    assert passwords(second) == passwords(first)
    assert first["api_key"] in text
    assert all(password in text for password in passwords(first).values())
    assert json.loads((tmp_path / "var" / "demo-devices.json").read_text()) == json.loads(
        devices_before
    )
    kept = tmp_path / "var" / "demo-credentials.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # A platform administrator is among them.
    [platform] = [s for s in first["staff"] if s["role"] == "platform_admin"]

    server = ServerProcess(env, free_port(), args=("--simulate", "var/demo-devices.json"))
    try:
        server.wait_ready()
        base = server.base_url
        key = {"Authorization": f"Bearer {first['api_key']}"}
        assert httpx.get(f"{base}/v1/sites", headers=key).status_code == 200
        signed_in = sign_in(base, platform["email"], platform["password"])
        assert signed_in.status_code == 200, signed_in.text
        admin = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        assert httpx.get(f"{base}/v1/jobs", headers=admin).status_code == 200
        # The simulated devices still sign in with the credentials the first run wrote.
        assert wait_until(
            lambda: all(
                d["online"] for d in httpx.get(f"{base}/v1/devices", headers=key).json()["items"]
            )
        )

        reset = demo_json(tmp_path, env, "--reset")
        assert reset["api_key"] != first["api_key"]
        assert set(passwords(reset).values()).isdisjoint(passwords(first).values())
        # The old key is revoked (within the server's credential cache), the new one works.
        assert wait_until(
            lambda: httpx.get(f"{base}/v1/sites", headers=key).status_code == 401, timeout=15
        )
        new_key = {"Authorization": f"Bearer {reset['api_key']}"}
        assert httpx.get(f"{base}/v1/sites", headers=new_key).status_code == 200
        assert sign_in(base, platform["email"], platform["password"]).status_code == 401
        assert sign_in(base, platform["email"], passwords(reset)[platform["email"]]).is_success
        # And the next run keeps the new ones.
        assert demo_json(tmp_path, env)["api_key"] == reset["api_key"]
    finally:
        server.stop()
