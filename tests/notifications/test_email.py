"""E-mail: real SMTP to a local aiosmtpd server, reused connections, honest classification."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from sesame.notifications.channels import email as email_channel
from sesame.notifications.channels.base import Message, Outcome
from sesame.notifications.channels.email import EmailChannel, classify_reply
from sesame.notifications.testing.smtp import SmtpStandin

SENDER = "Sesame <no-reply@sesame.test>"
GONE_ADDRESS = "moved-away@example.test"


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpStandin]:
    async with SmtpStandin(refuse={GONE_ADDRESS}) as server:
        yield server


def message(address: str, *, transaction_id: str | None = None) -> Message:
    return Message(
        delivery_id=uuid.uuid4(),
        transaction_id=transaction_id or uuid.uuid4().hex,
        address=address,
        title="Your visitor key is ready",
        body="Show the QR code at the lobby.\n\nIt works until 18:00.",
        category="visitor_key",
        locale="en",
        event_type="key.issued",
    )


async def test_a_batch_arrives_with_its_headers_over_one_connection(smtp: SmtpStandin) -> None:
    """Three messages and then a second batch all travel over the same SMTP connection."""
    channel = EmailChannel("127.0.0.1", smtp.port, SENDER, concurrency=1)
    batch = [message(f"resident{n}@example.test") for n in range(3)]
    try:
        results = await channel.send_many(batch)
        later = await channel.send_many([message("resident9@example.test")])
    finally:
        await channel.aclose()

    assert [r.outcome for r in results + later] == [Outcome.SENT] * 4
    assert all("queued as" in (r.provider_id or "") for r in results)
    assert smtp.connections == 1
    first = smtp.messages[0]
    assert first["To"] == "resident0@example.test"
    assert first["From"] == SENDER
    assert first["Subject"] == "Your visitor key is ready"
    assert first["Message-ID"] == f"<{batch[0].transaction_id}@sesame.test>"
    assert first["Auto-Submitted"] == "auto-generated"
    assert first["X-Sesame-Category"] == "visitor_key"
    plain = first.get_body(preferencelist=("plain",))
    html = first.get_body(preferencelist=("html",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n").strip() == batch[0].body  # CRLF on the wire
    assert html is not None
    assert "<p>It works until 18:00.</p>" in html.get_content()
    assert {e.mail_from for e in smtp.envelopes} == {"no-reply@sesame.test"}
    assert [e.rcpt_tos for e in smtp.envelopes][:3] == [[m.address] for m in batch]


async def test_a_refused_recipient_is_gone_while_the_rest_are_sent(smtp: SmtpStandin) -> None:
    """550 5.1.1 at RCPT deactivates that address only; the batch goes on around it."""
    channel = EmailChannel("127.0.0.1", smtp.port, SENDER)
    try:
        results = await channel.send_many(
            [message("a@example.test"), message(GONE_ADDRESS), message("b@example.test")]
        )
    finally:
        await channel.aclose()

    assert [(r.outcome, r.code) for r in results] == [
        (Outcome.SENT, None),
        (Outcome.GONE, "smtp_550"),
        (Outcome.SENT, None),
    ]
    assert sorted(m["To"] for m in smtp.messages) == ["a@example.test", "b@example.test"]


async def test_a_server_that_is_down_means_retry() -> None:
    """Nothing listening: every message is retried later, none fails for good."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = EmailChannel("127.0.0.1", port, SENDER, timeout_seconds=2)
    try:
        results = await channel.send_many([message("a@example.test"), message("b@example.test")])
    finally:
        await channel.aclose()

    assert [(r.outcome, r.code) for r in results] == [(Outcome.RETRY, "smtp_unreachable")] * 2


async def test_a_connection_the_server_dropped_is_replaced(
    smtp: SmtpStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the server hangs up on an idle connection, the next message opens a new one."""
    monkeypatch.setattr(email_channel, "IDLE_CHECK_SECONDS", 0.0)  # always probe with NOOP
    channel = EmailChannel("127.0.0.1", smtp.port, SENDER, concurrency=1)
    try:
        before = await channel.send_many([message("a@example.test")])
        smtp.drop_connections()
        after = await channel.send_many([message("b@example.test")])
    finally:
        await channel.aclose()

    assert [r.outcome for r in before + after] == [Outcome.SENT, Outcome.SENT]
    assert smtp.connections == 2
    assert [m["To"] for m in smtp.messages] == ["a@example.test", "b@example.test"]


async def test_an_unusable_address_is_refused_without_a_connection(smtp: SmtpStandin) -> None:
    """An address that would inject SMTP commands is never put on the wire."""
    channel = EmailChannel("127.0.0.1", smtp.port, SENDER)
    try:
        [result] = await channel.send_many([message("x@example.test>\r\nRCPT TO:<y@evil.test")])
    finally:
        await channel.aclose()

    assert (result.outcome, result.code) == (Outcome.REJECTED, "invalid_address")
    assert smtp.connections == 0


@pytest.mark.parametrize(
    ("code", "text", "recipient", "outcome"),
    [
        (250, "2.0.0 Ok", False, Outcome.SENT),
        (550, "5.1.1 User unknown", True, Outcome.GONE),
        (551, "User not local", True, Outcome.GONE),
        (553, "5.1.3 Bad address syntax", True, Outcome.GONE),
        (550, "5.7.1 Relaying denied", True, Outcome.REJECTED),  # our relay, not the address
        (550, "5.1.1 User unknown", False, Outcome.REJECTED),  # a refused sender
        (552, "5.3.4 Message too big", True, Outcome.REJECTED),
        (554, "5.7.1 Spam", False, Outcome.REJECTED),
        (450, "4.2.1 Mailbox busy", True, Outcome.RETRY),
        (421, "4.3.2 Shutting down", False, Outcome.RETRY),
    ],
)
def test_smtp_replies_are_classified(
    code: int, text: str, recipient: bool, outcome: Outcome
) -> None:
    """Only a refused recipient about the mailbox itself deactivates the destination."""
    result = classify_reply(code, text, recipient=recipient)

    assert result.outcome is outcome
    assert result.code == (None if outcome is Outcome.SENT else f"smtp_{code}")


def test_configuration_mistakes_raise_at_construction() -> None:
    """A sender without a domain or implicit TLS with STARTTLS is a setup error."""
    with pytest.raises(ValueError, match="domain"):
        EmailChannel("127.0.0.1", 25, "no-reply")
    with pytest.raises(ValueError, match="exclude"):
        EmailChannel("127.0.0.1", 465, SENDER, use_tls=True, starttls=True)
