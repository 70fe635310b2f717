"""A guest pass's links point at the server: SESAME_PUBLIC_URL, or its host and port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sesame.auth.sms import MemorySmsSender
from sesame.runtime import build_runtime
from tests.conftest import test_settings
from tests.keys.test_keys_e2e import resident_token
from tests.support import served_world, unique_phone


@pytest.mark.parametrize(
    ("settings", "base"),
    [
        ({"host": "127.0.0.1", "port": 8101}, "http://127.0.0.1:8101"),
        ({"port": 8101, "public_url": "https://sesame.example/"}, "https://sesame.example"),
    ],
)
async def test_guest_pass_links_follow_the_configured_address(
    own_database_url: str, settings: dict[str, object], base: str
) -> None:
    runtime = build_runtime(
        test_settings(own_database_url, **settings), sms_sender=MemorySmsSender()
    )
    try:
        async with served_world(runtime, "10.9.2.1") as (api, world):
            owner = await resident_token(api, runtime, world, world.ids["person"])
            now = datetime.now(UTC)
            created = await api.post(
                "/v1/me/guest-passes",
                token=owner,
                json={
                    "entrance_id": world.ids["entrance"],
                    "guest_name": "친구",
                    "guest_phone": unique_phone(),
                    "starts_at": now.isoformat(),
                    "ends_at": (now + timedelta(hours=2)).isoformat(),
                },
            )
            assert created.status_code == 201, created.text
            links = created.json()
            token = links["token"]
            assert links["link"] == f"{base}/v1/passes/{token}"
            assert links["png"].startswith(f"{base}/v1/passes/{token}?")
            assert links["svg"].startswith(f"{base}/v1/passes/{token}?")
    finally:
        await runtime.close()
