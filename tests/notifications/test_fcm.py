"""The FCM channel against the local stand-in, over real HTTP on localhost: tokens,
classification of every answer, order, bounded concurrency, and no token in the logs."""

from __future__ import annotations

import io
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from sesame.kit.clock import OffsetClock
from sesame.kit.logging import configure_logging
from sesame.notifications.channels.base import Message, Outcome
from sesame.notifications.channels.fcm import (
    MAX_PAYLOAD_BYTES,
    FcmChannel,
    ServiceAccountTokens,
    TokenUnavailable,
    fcm_message,
    load_service_account,
)
from sesame.notifications.testing.fcm import (
    FcmStandin,
    StandinServer,
    make_service_account,
    run_in_process,
)


def message(n: int, *, address: str | None = None, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "delivery_id": uuid.uuid4(),
        "transaction_id": f"tx-{n}-{uuid.uuid4().hex}",
        "address": address or f"device-token-{n}",
        "title": "현관문",
        "body": "문이 열렸습니다",
        "category": "door",
        "locale": "ko",
        "event_type": "door.opened",
        "data": {"door_id": str(n)},
    }
    values.update(fields)
    return Message(**values)


@pytest.fixture
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
def wall(clock: OffsetClock) -> Callable[[], float]:
    return lambda: clock.now().timestamp()


@pytest.fixture
async def server(wall: Callable[[], float]) -> AsyncIterator[StandinServer]:
    async with StandinServer(FcmStandin(clock=wall)) as running:
        yield running


@pytest.fixture
async def channel(server: StandinServer, wall: Callable[[], float]) -> AsyncIterator[FcmChannel]:
    fcm = FcmChannel(server.service_account, endpoint=server.url, concurrency=16, clock=wall)
    yield fcm
    await fcm.aclose()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def access_token(server: StandinServer) -> str:
    async with httpx.AsyncClient() as client:
        return await ServiceAccountTokens(server.service_account, client).access_token()


async def test_a_batch_of_300_answers_in_order_with_dead_tokens_gone(
    server: StandinServer, channel: FcmChannel
) -> None:
    """Every result lines up with its message: dead tokens are GONE, the rest SENT with
    the name the stand-in gave that very message."""
    batch = [message(n, address=f"dead-{n}" if n % 7 == 0 else None) for n in range(300)]
    results = await channel.send_many(batch)

    assert len(results) == 300
    names = {kept["name"]: kept["token"] for kept in server.standin.messages}
    for sent, result in zip(batch, results, strict=True):
        if sent.address.startswith("dead-"):
            assert (result.outcome, result.code) == (Outcome.GONE, "UNREGISTERED")
        else:
            assert result.outcome is Outcome.SENT
            assert result.provider_id is not None
            assert result.provider_id.startswith("projects/sesame-test/messages/")
            assert names[result.provider_id] == sent.address
    assert server.standin.counts["unregistered"] == 43


async def test_the_wire_message_carries_the_transaction_id_for_deduplication(
    server: StandinServer, channel: FcmChannel
) -> None:
    """The transaction id travels in data and as both platforms' collapse keys."""
    sent = message(1, transaction_id="t" * 80)
    [result] = await channel.send_many([sent])

    assert result.outcome is Outcome.SENT
    [kept] = server.standin.messages
    assert kept["data"] == {"door_id": "1", "transaction_id": "t" * 80, "category": "door"}
    assert kept["android"] == {"collapse_key": "t" * 80}
    assert kept["apns"] == {"headers": {"apns-collapse-id": "t" * 64}}
    assert kept["notification"] == {"title": "현관문", "body": "문이 열렸습니다"}


async def test_one_token_serves_many_batches_and_is_renewed_near_expiry(
    server: StandinServer, channel: FcmChannel, clock: OffsetClock
) -> None:
    """The access token is fetched once, reused, and replaced only within the last
    minutes of its hour."""
    for n in range(3):
        results = await channel.send_many([message(n * 10 + k) for k in range(10)])
        assert {r.outcome for r in results} == {Outcome.SENT}
    assert server.standin.counts["tokens_issued"] == 1

    clock.advance(3000)  # 10 minutes left: still good
    await channel.send_many([message(100)])
    assert server.standin.counts["tokens_issued"] == 1

    clock.advance(400)  # under 5 minutes left: renewed before use
    results = await channel.send_many([message(200 + k) for k in range(20)])
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert server.standin.counts["tokens_issued"] == 2
    assert server.standin.counts["unauthenticated"] == 0


async def test_a_refused_token_is_replaced_once_for_the_whole_batch(
    server: StandinServer, channel: FcmChannel
) -> None:
    """After a 401 the token is fetched again, once, however many requests saw the 401."""
    await channel.send_many([message(0)])
    server.standin.revoke_tokens()

    results = await channel.send_many([message(n) for n in range(1, 41)])

    assert {r.outcome for r in results} == {Outcome.SENT}
    assert server.standin.counts["unauthenticated"] >= 1
    assert server.standin.counts["tokens_issued"] == 2


async def test_a_second_401_is_a_retry_not_a_loop(
    server: StandinServer, channel: FcmChannel
) -> None:
    """A message refused twice for authentication is retried later, after one refresh."""
    await channel.send_many([message(0)])
    server.standin.fail_next(2, status=401)

    [result] = await channel.send_many([message(1)])

    assert (result.outcome, result.code) == (Outcome.RETRY, "UNAUTHENTICATED")
    assert server.standin.counts["tokens_issued"] == 2
    assert server.standin.counts["send_requests"] == 3


async def test_quota_and_unavailable_answers_are_retries(
    server: StandinServer, channel: FcmChannel
) -> None:
    """429 QUOTA_EXCEEDED and 503 UNAVAILABLE ask for a retry, with FCM's Retry-After."""
    server.standin.fail_next(1, status=429, retry_after=17)
    [throttled] = await channel.send_many([message(1)])
    server.standin.fail_next(1, status=503)
    [unavailable] = await channel.send_many([message(2)])

    assert (throttled.outcome, throttled.code, throttled.retry_after) == (
        Outcome.RETRY,
        "QUOTA_EXCEEDED",
        17.0,
    )
    assert (unavailable.outcome, unavailable.code, unavailable.retry_after) == (
        Outcome.RETRY,
        "UNAVAILABLE",
        None,
    )


async def test_the_standin_refuses_what_fcm_refuses(server: StandinServer) -> None:
    """Non-string data, two targets, or no valid bearer are refused in Google's shape."""
    url = f"{server.url}/v1/projects/sesame-test/messages:send"
    token = await access_token(server)
    bearer = {"Authorization": f"Bearer {token}"}
    good = {"token": "device-1", "data": {"n": "5"}}
    async with httpx.AsyncClient() as client:
        numeric = await client.post(
            url, json={"message": {**good, "data": {"n": 5}}}, headers=bearer
        )
        two_targets = await client.post(
            url, json={"message": {**good, "topic": "news"}}, headers=bearer
        )
        stranger = await client.post(
            url, json={"message": good}, headers={"Authorization": "Bearer forged"}
        )
        other_project = await client.post(
            url.replace("sesame-test", "elsewhere"), json={"message": good}, headers=bearer
        )
        accepted = await client.post(url, json={"message": good}, headers=bearer)

    assert numeric.status_code == 400
    error = numeric.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "INVALID_ARGUMENT",
    } in error["details"]
    assert two_targets.status_code == 400
    assert (stranger.status_code, stranger.json()["error"]["status"]) == (401, "UNAUTHENTICATED")
    assert other_project.status_code == 403
    assert accepted.status_code == 200
    assert accepted.json()["name"].startswith("projects/sesame-test/messages/")


async def test_the_standin_refuses_a_forged_assertion(server: StandinServer) -> None:
    """A token request signed by a key the stand-in does not trust gets no token."""
    stranger = {
        **server.service_account,
        "private_key": make_service_account("http://unused/token")["private_key"],
    }
    async with httpx.AsyncClient() as client:
        tokens = ServiceAccountTokens(stranger, client)
        with pytest.raises(TokenUnavailable, match="answered 400") as refused:
            await tokens.access_token()

    assert refused.value.code == "token_invalid_grant"
    assert server.standin.counts["tokens_issued"] == 0


async def test_non_string_data_is_refused_before_sending(
    server: StandinServer, channel: FcmChannel
) -> None:
    """The channel never lets non-string data reach FCM, and does not guess a string."""
    bad = message(1, data={"count": 5, "flag": None})
    results = await channel.send_many([bad, message(2)])

    assert (results[0].outcome, results[0].code) == (Outcome.REJECTED, "invalid_data")
    assert results[1].outcome is Outcome.SENT
    assert server.standin.counts["send_requests"] == 1


async def test_the_size_limit_is_the_same_on_both_sides(
    server: StandinServer, channel: FcmChannel
) -> None:
    """A message of exactly 4096 bytes goes through; one byte more is refused locally,
    without a request."""
    base = message(1, body="")
    compact = json.dumps(fcm_message(base), separators=(",", ":"), ensure_ascii=False)
    fits = replace(base, body="x" * (MAX_PAYLOAD_BYTES - len(compact.encode())))

    results = await channel.send_many([fits, replace(fits, body=fits.body + "x")])

    assert results[0].outcome is Outcome.SENT
    assert (results[1].outcome, results[1].code) == (Outcome.REJECTED, "too_large")
    assert server.standin.counts["send_requests"] == 1


async def test_a_failing_token_endpoint_leaves_the_current_token_in_use(
    clock: OffsetClock, wall: Callable[[], float]
) -> None:
    """Early renewal failing is no outage: the token serves until it really expires, and
    the endpoint is not hammered meanwhile."""
    answers = iter([httpx.Response(200, json={"access_token": "first", "expires_in": 3600})])
    requests = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return next(answers, httpx.Response(503, json={"error": "backend_error"}))

    account = make_service_account("https://oauth2.test/token")
    async with httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint)) as client:
        tokens = ServiceAccountTokens(account, client, clock=wall)
        assert await tokens.access_token() == "first"
        clock.advance(3500)  # inside the renewal margin
        assert [await tokens.access_token() for _ in range(5)] == ["first"] * 5
        assert len(requests) == 2
        clock.advance(200)  # expired
        with pytest.raises(TokenUnavailable) as failed:
            await tokens.access_token()

    assert failed.value.code == "token_backend_error"
    assert len(requests) == 3


async def test_an_unreachable_fcm_is_a_quick_retry(
    server: StandinServer, wall: Callable[[], float]
) -> None:
    """A closed port answers RETRY connect_error for every message of the batch."""
    down = FcmChannel(server.service_account, endpoint=closed_port_url(), clock=wall)
    try:
        results = await down.send_many([message(n) for n in range(5)])
    finally:
        await down.aclose()

    assert {(r.outcome, r.code) for r in results} == {(Outcome.RETRY, "connect_error")}


async def test_an_unreachable_token_endpoint_is_a_retry(server: StandinServer) -> None:
    """Without a token nothing is sent; the batch is retried, the token endpoint asked once."""
    account = {**server.service_account, "token_uri": f"{closed_port_url()}/token"}
    channel = FcmChannel(account, endpoint=server.url)
    try:
        results = await channel.send_many([message(n) for n in range(30)])
    finally:
        await channel.aclose()

    assert {(r.outcome, r.code) for r in results} == {(Outcome.RETRY, "connect_error")}
    assert server.standin.counts["send_requests"] == 0


async def test_requests_in_flight_never_exceed_the_concurrency(
    wall: Callable[[], float],
) -> None:
    """With slow answers, 8 workers keep at most 8 requests and 8 connections open."""
    async with StandinServer(FcmStandin(delay_seconds=0.01, clock=wall)) as slow:
        channel = FcmChannel(slow.service_account, endpoint=slow.url, concurrency=8, clock=wall)
        try:
            results = await channel.send_many([message(n) for n in range(120)])
        finally:
            await channel.aclose()
        standin = slow.standin

    assert {r.outcome for r in results} == {Outcome.SENT}
    assert 1 < standin.max_in_flight <= 8
    assert len(standin.peers) <= 8


async def test_a_given_client_is_used_and_left_open(server: StandinServer) -> None:
    """The caller's client carries the requests and outlives the channel."""
    async with httpx.AsyncClient() as client:
        channel = FcmChannel(server.service_account, endpoint=server.url, client=client)
        [result] = await channel.send_many([message(1)])
        await channel.aclose()
        assert not client.is_closed
    assert result.outcome is Outcome.SENT


@pytest.fixture
def log_output() -> Iterator[io.BytesIO]:
    stream = io.BytesIO()
    configure_logging("debug", "json", stream=stream)
    yield stream
    configure_logging("warning", "console")


async def test_the_access_token_never_reaches_the_logs(
    server: StandinServer, wall: Callable[[], float], log_output: io.BytesIO
) -> None:
    """Fetches, refusals and refreshes are logged, the tokens themselves never."""
    channel = FcmChannel(server.service_account, endpoint=server.url, clock=wall)
    try:
        await channel.send_many([message(1), message(2, address="dead-2")])
        issued = list(server.standin.issued)
        server.standin.revoke_tokens()
        await channel.send_many([message(3)])
        issued += list(server.standin.issued)
    finally:
        await channel.aclose()

    output = log_output.getvalue().decode()
    events = [json.loads(line)["event"] for line in output.splitlines()]
    assert events.count("fcm_access_token_fetched") == 2
    assert "fcm_access_token_refused" in events
    assert len(issued) == 2
    for token in issued:
        assert token not in output
        assert token.removeprefix("ya29.") not in output


def test_a_service_account_loads_from_a_file_or_a_string(tmp_path: Path) -> None:
    """Both forms load; a missing field is named in the error."""
    account = {
        "client_email": "a@b.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\n...",
        "private_key_id": "k1",
        "token_uri": "https://oauth2.googleapis.com/token",
        "project_id": "p",
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(account))

    assert load_service_account(str(path)) == account
    assert load_service_account(json.dumps(account)) == account
    with pytest.raises(ValueError, match="lacks private_key_id, project_id"):
        load_service_account(json.dumps({**account, "private_key_id": "", "project_id": None}))
    with pytest.raises(ValueError, match="cannot read"):
        load_service_account(str(tmp_path / "missing.json"))


async def test_the_standin_serves_from_another_process() -> None:
    """The benchmark's way: a child process announces its URL and service account."""
    with run_in_process() as standin:
        channel = FcmChannel(standin.service_account, endpoint=standin.url)
        try:
            results = await channel.send_many(
                [message(n, address="dead-x" if n == 3 else None) for n in range(20)]
            )
        finally:
            await channel.aclose()
        stats = standin.stats()

    assert [r.outcome for r in results].count(Outcome.SENT) == 19
    assert stats["counts"]["accepted"] == 19
    assert stats["counts"]["unregistered"] == 1
    assert stats["messages_kept"] == 0
