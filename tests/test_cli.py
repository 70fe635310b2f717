"""The commands an operator types: migrate, seed the demo, create staff, serve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

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


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = sesame_command(
        dev_env(tmp_path), "serve", "--port", str(free_port()), cwd=str(tmp_path)
    )
    assert result.returncode == 1
    assert "sesame db upgrade" in result.stderr


def test_production_mode_refuses_built_in_secrets(tmp_path: Path) -> None:
    env = dev_env(tmp_path) | {"SESAME_ENV": "production"}
    result = sesame_command(env, "ledger", "info", cwd=str(tmp_path))
    assert result.returncode == 2
    assert "SESAME_SECRET_KEY" in result.stderr
    assert "SESAME_ENV is production," in result.stderr
    assert "Traceback" not in result.stderr


SESAME = Path(sys.executable).with_name("sesame")


def plain(
    directory: Path, *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``sesame ...`` typed in a plain shell in ``directory``: nothing exported but PATH
    and HOME (and whatever ``env`` adds), as after opening a new terminal."""
    return subprocess.run(
        [str(SESAME), *args],
        env={"PATH": os.environ["PATH"], "HOME": str(directory), **(env or {})},
        cwd=directory,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_outside_development_mode_the_message_says_which_mode_it_is(tmp_path: Path) -> None:
    """A plain shell, no .env: production mode, and the message says so — and a command
    that needs no secret (the schema) runs anyway."""
    refused = plain(tmp_path, "ledger", "info")
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "SESAME_ENV is not set, so this is production mode" in line
    assert "SESAME_SECRET_KEY is the built-in development key" in line
    assert "SESAME_ENV=development to try Sesame on this machine" in line
    migrated = plain(tmp_path, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr


def api_key_of(printed: str) -> str:
    return re.search(r"(ses_[0-9a-f]{12}_\S+)", printed).group(1)  # type: ignore[union-attr]


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.timeout(300)  # a server and several commands, on a loaded machine
def test_after_make_run_the_readme_commands_work_from_a_plain_shell(tmp_path: Path) -> None:
    """`make run` (migrate, demo, serve), then a new terminal in the same folder:
    `sesame ledger info`, `staff create`, `ledger export-tiles` and `sim` work as the
    README writes them, with nothing exported."""
    env = dev_env(tmp_path)
    run_in(tmp_path, env, "db", "upgrade")
    api_key = api_key_of(run_in(tmp_path, env, "demo"))
    assert "SESAME_ENV=development" in (tmp_path / ".env").read_text()
    server = ServerProcess(env, free_port())
    simulation = None
    try:
        server.wait_ready()
        info = plain(tmp_path, "ledger", "info")
        assert info.returncode == 0, info.stderr
        assert info.stdout.startswith("origin  ")
        created = plain(
            tmp_path,
            *("staff", "create", "--email", "ops@example.com", "--name", "Ops", "--password-stdin"),
            stdin="a long enough password\n",
        )
        assert created.returncode == 0, created.stderr
        assert "created platform_admin ops@example.com" in created.stdout
        headers = {"Authorization": f"Bearer {api_key}"}
        assert wait_until(
            lambda: (
                httpx.get(f"{server.base_url}/v1/ledger", headers=headers).json()["checkpoint_size"]
                is not None
            )
        )
        tiles = plain(tmp_path, "ledger", "export-tiles", "tiles")
        assert tiles.returncode == 0, tiles.stderr
        assert (tmp_path / "tiles" / "checkpoint").exists()
        # The simulators need the broker only: not even the server's secret, in any mode.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        simulation = subprocess.Popen(
            [str(SESAME), "sim", "--file", str(tmp_path / "var" / "demo-devices.json")],
            env={"PATH": os.environ["PATH"], "SESAME_ENV": "production"},
            cwd=elsewhere,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert wait_until(
            lambda: all(
                d["online"]
                for d in httpx.get(f"{server.base_url}/v1/devices", headers=headers).json()["items"]
            )
        ), "the simulated devices did not come online"
    finally:
        if simulation is not None:
            simulation.terminate()
            simulation.wait(timeout=15)
        server.stop()


@pytest.mark.timeout(300)  # a server and several commands, on a loaded machine
def test_urls_follow_the_configured_port(tmp_path: Path) -> None:
    """SESAME_PORT=N: the demo's printout and its curl command say :N, and they work; the
    ledger is not named after the address."""
    port = free_port()
    env = dev_env(tmp_path) | {"SESAME_PORT": str(port)}
    run_in(tmp_path, env, "db", "upgrade")
    printed = run_in(tmp_path, env, "demo")
    assert f"http://127.0.0.1:{port}/docs" in printed
    assert ":8000" not in printed
    curl = re.search(r'curl -X POST -H "Authorization: Bearer (\S+)" "(\S+)"', printed)
    assert curl is not None
    assert curl.group(2).startswith(f"http://127.0.0.1:{port}/v1/entrances/")
    server = ServerProcess(env, port, args=("--simulate", "var/demo-devices.json"))
    try:
        server.wait_ready()

        def opened() -> bool:
            answer = httpx.post(
                curl.group(2), headers={"Authorization": f"Bearer {curl.group(1)}"}, timeout=10
            )
            return answer.status_code == 201 and answer.json()["status"] == "success"

        assert wait_until(opened), "the printed curl command did not open the entrance"
        origin = run_in(tmp_path, env, "ledger", "info").split("\n")[0]
        assert origin.startswith("origin  sesame.invalid/")
        assert str(port) not in origin
        assert "8000" not in origin
    finally:
        server.stop()


def device_answer(base_url: str, api_key: str, site_id: str, name: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{base_url}/v1/devices",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"site_id": site_id, "kind": "door_lock", "name": name, "model": "simulator"},
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.timeout(300)  # a server and several commands, on a loaded machine
def test_sim_runs_the_answers_of_post_devices_one_or_a_list(tmp_path: Path) -> None:
    """What `sesame sim --help` says it accepts: a POST /v1/devices answer, alone or in a
    list; the devices it runs come online and answer commands."""
    env = dev_env(tmp_path)
    run_in(tmp_path, env, "db", "upgrade")
    printed = run_in(tmp_path, env, "demo")
    api_key = api_key_of(printed)
    site_id = re.search(r"Site:\s+(\S+)", printed).group(1)  # type: ignore[union-attr]
    server = ServerProcess(env, free_port())
    simulations: list[subprocess.Popen[bytes]] = []
    try:
        server.wait_ready()
        one = device_answer(server.base_url, api_key, site_id, "one lock")
        listed = [device_answer(server.base_url, api_key, site_id, f"listed {n}") for n in (1, 2)]
        (tmp_path / "one.json").write_text(json.dumps(one))
        (tmp_path / "list.json").write_text(json.dumps(listed))
        for name in ("one.json", "list.json"):
            simulations.append(
                subprocess.Popen(
                    [str(SESAME), "sim", "--file", name, "--heartbeat", "1"],
                    env=env | {"PATH": os.environ["PATH"]},
                    cwd=tmp_path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        headers = {"Authorization": f"Bearer {api_key}"}
        ids = {one["id"], *(d["id"] for d in listed)}

        def online() -> set[str]:
            items = httpx.get(
                f"{server.base_url}/v1/devices", headers=headers, params={"online": True}
            ).json()["items"]
            return {d["id"] for d in items} & ids

        assert wait_until(lambda: online() == ids), f"online: {online()} of {ids}"
        unlocked = httpx.post(
            f"{server.base_url}/v1/devices/{one['id']}/commands",
            headers=headers,
            params={"wait": 5},
            json={"action": "unlock"},
            timeout=15,
        )
        assert unlocked.json()["status"] == "success", unlocked.text
    finally:
        for simulation in simulations:
            simulation.terminate()
            simulation.wait(timeout=15)
        server.stop()


BAD_INPUT = [
    ("sim", "--file", "missing.json"),
    ("sim", "--file", "not-json.json"),
    ("sim", "--file", "not-a-device.json"),
    ("sim", "--file", "empty.json"),
    ("sim",),
    ("sim", "--file", "var"),
    ("ledger", "verify", "--log-key", "not-a-key"),
    ("ledger", "audit", "--log-key", "not-a-key"),
    ("staff", "create", "--email", "x@example.test"),
    ("demo", "--no-such-option"),
    ("serve", "--port", "not-a-port"),
    ("db", "upgrade", "no-such-revision"),
]


@pytest.mark.parametrize("args", BAD_INPUT, ids=" ".join)
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "not-json.json").write_text("{devices: [")
    (tmp_path / "not-a-device.json").write_text(json.dumps({"id": "x", "kind": "door_lock"}))
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "var").mkdir()
    result = plain(tmp_path, *args, env={"SESAME_ENV": "development"})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr


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
