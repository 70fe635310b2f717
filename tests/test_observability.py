"""Health, readiness, metrics and the catch-all: what operators rely on."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from sesame.app import create_app
from sesame.runtime import Runtime, build_runtime
from tests.conftest import test_settings
from tests.support import Api, World


async def test_healthz_answers_without_touching_anything(api: Api) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database(api: Api) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    runtime = build_runtime(
        test_settings("postgresql+asyncpg://nobody@127.0.0.1:1/nothing", database_timeout_seconds=1)
    )
    app = create_app(runtime=runtime)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("unavailable")
    finally:
        await runtime.close()


async def test_metrics_count_requests_by_route_template_and_status(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    await api.get(f"/v1/sites/{world.site_id}", token=token)
    await api.get("/v1/sites/00000000-0000-0000-0000-000000000000", token=token)
    text = (await api.get("/metrics")).text
    assert (
        'sesame_http_requests_total{method="GET",route="/v1/sites/{object_id}",status="200"}'
        in text
    )
    assert 'route="/v1/sites/{object_id}",status="404"' in text
    assert "sesame_http_request_duration_seconds_bucket" in text


async def test_an_unhandled_error_is_a_json_500_and_the_app_keeps_serving(runtime: Runtime) -> None:
    app = create_app(runtime=runtime)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("something nobody expected")

    assert isinstance(app, FastAPI)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/boom")
        assert response.status_code == 500
        body = response.json()
        assert body["type"] == "internal_error"
        assert body["request_id"] == response.headers["x-request-id"]
        assert "nobody expected" not in response.text
        assert (await client.get("/healthz")).status_code == 200


async def test_an_unreachable_database_sheds_requests_with_503() -> None:
    """Overload or an outage is answered fast with 503 and Retry-After, not a 500."""
    runtime = build_runtime(
        test_settings("postgresql+asyncpg://nobody@127.0.0.1:1/nothing", database_timeout_seconds=1)
    )
    app = create_app(runtime=runtime)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get(
                "/v1/sites", headers={"Authorization": "Bearer ses_000000000000_x"}
            )
        assert response.status_code == 503
        assert response.json()["type"] == "service_unavailable"
        assert response.headers["retry-after"] == "1"
    finally:
        await runtime.close()
