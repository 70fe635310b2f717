"""Property-based API testing: generated requests never get a 5xx, and every answer
matches the OpenAPI document — its schemas, status codes, headers and ``Allow``; what
the document allows is accepted and what it forbids refused. Bounded: about a minute and
a quarter per backend on two cores (fewer fuzzed examples pay for the extra checks).

Schemathesis runs as its command-line tool against a live ``sesame serve``, the way it
would be pointed at a deployment.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sesame.migrations import upgrade
from tests.conftest import BACKENDS, drop_postgres_database, fresh_database
from tests.support import PASSWORD, ServerProcess, free_port, run_cli

ROOT = Path(__file__).resolve().parents[1]
MAX_EXAMPLES = int(os.environ.get("SESAME_SCHEMATHESIS_EXAMPLES", "6"))

# Every check schemathesis has but one: ``object_level_authorization`` needs two tenants'
# credentials, which tests/test_tenant_isolation.py covers for every resource.
#
# ``positive_data_acceptance`` is off only where a rule the document cannot state decides:
# what makes a phone number valid, which time-zone names exist, fields required for
# platform staff only, site lists for site-scoped roles only, one-of-several fields,
# windows whose end must follow their start, the languages of a campaign, the URLs a
# destination may have, the code mailed to confirm one, and proofs about tree sizes
# the log has not reached.
CHECKS = """
[checks]
enabled = true
object_level_authorization.enabled = false

[[operations]]
include-operation-id = [
    "request_sign_in_code", "verify_sign_in_code",
    "create_person", "list_people", "update_person",
    "create_site", "update_site", "create_staff_account", "update_staff_account",
    "create_api_key",
    "create_key", "update_key", "create_pin_code", "update_pin_code", "create_campaign",
    "register_my_notification_destination", "confirm_my_notification_destination",
    "create_webhook_endpoint", "update_webhook_endpoint",
    "get_inclusion_proof", "get_consistency_proof",
]
checks.positive_data_acceptance.enabled = false
"""


@pytest.fixture(scope="module", params=BACKENDS)
async def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    directory = tmp_path_factory.mktemp("schemathesis")
    url = await fresh_database(request.param, directory)
    await asyncio.to_thread(upgrade, url)
    env = {
        "SESAME_ENV": "development",
        "SESAME_DATABASE_URL": url,
        "SESAME_LOG_LEVEL": "warning",
        "SESAME_MQTT_BIND": f"127.0.0.1:{free_port()}",
        "SESAME_TEST_CWD": str(directory),
    }
    run_cli(
        env,
        "staff",
        "create",
        "--email",
        "fuzz@sesame.test",
        "--name",
        "Fuzz",
        "--role",
        "platform_admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    server = ServerProcess(env, free_port())
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            login = await client.post(
                "/v1/auth/login", json={"email": "fuzz@sesame.test", "password": PASSWORD}
            )
        yield server.base_url, login.json()["access_token"]
    finally:
        server.stop()
        if request.param == "postgresql":
            await drop_postgres_database(url)


# About a minute and a quarter per backend here; the run's own timeout comes first, so a
# slow machine gets schemathesis's output rather than a killed worker.
@pytest.mark.timeout(360)
def test_api_never_answers_5xx_and_matches_its_schema(
    served: tuple[str, str], tmp_path: Path
) -> None:
    base_url, token = served
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[auth.openapi.HTTPBearer]\nbearer = "{token}"\n\n{CHECKS}')
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{base_url}/openapi.json",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "1",
            # Signing out would end the session the other cases use.
            "--exclude-path",
            "/v1/auth/logout",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    failures = result.stdout.find("FAILURES")
    shown = result.stdout[failures : failures + 8000] if failures >= 0 else ""
    assert result.returncode == 0, shown + result.stdout[-3000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower()
    # The token stayed valid throughout: the run exercised the API, not its 401s.
    me = httpx.get(f"{base_url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
