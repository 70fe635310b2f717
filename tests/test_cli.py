"""The commands an operator types: migrate, seed the demo, create staff, serve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import ServerProcess, free_port, run_cli, sesame_command


def dev_env(directory: Path) -> dict[str, str]:
    """Development mode with every default, as ``make run`` starts it, in ``directory``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SESAME_")}
    env.update(
        {
            "SESAME_ENV": "development",
            "SESAME_TEST_CWD": str(directory),
            # The embedded broker on a port of its own, not the default one.
            "SESAME_MQTT_BIND": f"127.0.0.1:{free_port()}",
        }
    )
    return env


def run_in(directory: Path, env: dict[str, str], *args: str, stdin: str = "") -> str:
    return run_cli(env, *args, stdin=stdin, cwd=str(directory))


def test_make_run_sequence_serves_the_demo(tmp_path: Path) -> None:
    """db upgrade, demo and serve on the default SQLite database under ./var/."""
    env = dev_env(tmp_path)
    run_in(tmp_path, env, "db", "upgrade")
    assert (tmp_path / "var" / "sesame.db").exists()
    printed = run_in(tmp_path, env, "demo")
    api_key = re.search(r"(ses_[0-9a-f]{12}_\S+)", printed).group(1)  # type: ignore[union-attr]
    manager_password = re.search(r"manager@demo\.sesame\.dev\s+(\S+)", printed).group(1)  # type: ignore[union-attr]

    open_url = re.search(r'"\S+(/v1/entrances/\S+/open\?wait=5)"', printed).group(1)  # type: ignore[union-attr]

    server = ServerProcess(env, free_port(), args=("--simulate", "var/demo-devices.json"))
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            # The newcomer's first door: the printed command opens the simulated entrance.
            opened = client.post(open_url, headers={"Authorization": f"Bearer {api_key}"})
            assert opened.status_code == 201, opened.text
            assert opened.json()["status"] == "success"
            assert opened.json()["was_confirmed_by_device"] is True
            sites = client.get("/v1/sites", headers={"Authorization": f"Bearer {api_key}"})
            assert sites.status_code == 200
            [site] = sites.json()["items"]
            units = client.get(
                "/v1/units",
                params={"site_id": site["id"], "limit": 200},
                headers={"Authorization": f"Bearer {api_key}"},
            )
            assert len(units.json()["items"]) == 2 * 10 * 4
            entrances = client.get(
                "/v1/entrances",
                params={"site_id": site["id"]},
                headers={"Authorization": f"Bearer {api_key}"},
            )
            kinds = sorted(e["kind"] for e in entrances.json()["items"])
            assert kinds == ["common_entrance", "common_entrance", "unit_door"]
            # Every simulated device comes online (each also syncs its clock on connecting).
            for _ in range(100):
                devices = client.get("/v1/devices", headers={"Authorization": f"Bearer {api_key}"})
                if all(d["online"] for d in devices.json()["items"]):
                    break
                time.sleep(0.1)
            assert len(devices.json()["items"]) == 5
            assert all(d["online"] for d in devices.json()["items"])
            login = client.post(
                "/v1/auth/login",
                json={"email": "manager@demo.sesame.dev", "password": manager_password},
            )
            assert login.status_code == 200
            assert client.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_demo_twice_keeps_one_complex_and_fresh_credentials(tmp_path: Path) -> None:
    env = dev_env(tmp_path)
    run_in(tmp_path, env, "db", "upgrade")
    first = run_in(tmp_path, env, "demo")
    second = run_in(tmp_path, env, "demo")
    site = re.compile(r"Site:\s+(\S+)")
    assert site.search(first).group(1) == site.search(second).group(1)  # type: ignore[union-attr]
    key = re.compile(r"(ses_\S+)")
    assert key.search(first).group(1) != key.search(second).group(1)  # type: ignore[union-attr]


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = sesame_command(
        dev_env(tmp_path), "serve", "--port", str(free_port()), cwd=str(tmp_path)
    )
    assert result.returncode == 1
    assert "sesame db upgrade" in result.stderr


def test_production_mode_refuses_built_in_secrets(tmp_path: Path) -> None:
    env = dev_env(tmp_path) | {"SESAME_ENV": "production"}
    result = sesame_command(env, "db", "upgrade", cwd=str(tmp_path))
    assert result.returncode == 2
    assert "SESAME_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_staff_create_validates_and_reports_errors(tmp_path: Path) -> None:
    env = dev_env(tmp_path)
    run_in(tmp_path, env, "db", "upgrade")

    def create(email: str, password: str) -> subprocess.CompletedProcess[str]:
        return sesame_command(
            env,
            "staff",
            "create",
            "--email",
            email,
            "--name",
            "Ops",
            "--password-stdin",
            stdin=password + "\n",
            cwd=str(tmp_path),
        )

    created = create("Ops@Example.test", "a long enough password")
    assert created.returncode == 0, created.stderr
    assert "created platform_admin ops@example.test" in created.stdout
    short = create("x@example.test", "short")
    assert short.returncode == 2
    assert "password" in short.stderr
    duplicate = create("ops@example.test", "a long enough password")
    assert duplicate.returncode == 1
    assert "conflict" in duplicate.stderr


def test_sim_provisions_devices_of_each_kind_and_runs_them(tmp_path: Path) -> None:
    env = dev_env(tmp_path)
    run_in(tmp_path, env, "db", "upgrade")
    printed = run_in(tmp_path, env, "demo")
    api_key = re.search(r"(ses_[0-9a-f]{12}_\S+)", printed).group(1)  # type: ignore[union-attr]
    site_id = re.search(r"Site:\s+(\S+)", printed).group(1)  # type: ignore[union-attr]
    server = ServerProcess(env, free_port())
    simulation = None
    try:
        server.wait_ready()
        simulation = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sesame",
                "sim",
                "--file",
                "sim.json",
                "--provision",
                "2",
                "--kinds",
                "door_lock,elevator_agent",
                "--api",
                server.base_url,
                "--api-key",
                api_key,
                "--site-id",
                site_id,
                "--heartbeat",
                "1",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        headers = {"Authorization": f"Bearer {api_key}"}
        deadline = time.monotonic() + 30
        online: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            listed = httpx.get(
                f"{server.base_url}/v1/devices", headers=headers, params={"online": True}
            ).json()["items"]
            online = [d for d in listed if str(d["name"]).startswith("simulated")]
            if len(online) == 4:
                break
            time.sleep(0.3)
        assert sorted(d["kind"] for d in online) == [
            "door_lock",
            "door_lock",
            "elevator_agent",
            "elevator_agent",
        ]
        lock = next(d for d in online if d["kind"] == "door_lock")
        unlocked = httpx.post(
            f"{server.base_url}/v1/devices/{lock['id']}/commands",
            headers=headers,
            params={"wait": 5},
            json={"action": "unlock"},
        )
        assert unlocked.json()["status"] == "success"
        assert len(json.loads((tmp_path / "sim.json").read_text())) == 4
    finally:
        if simulation is not None:
            simulation.terminate()
            simulation.wait(timeout=15)
        server.stop()
