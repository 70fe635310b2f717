"""A real SMTP server (aiosmtpd) on localhost for tests, running in the test's own loop.

It records every accepted message parsed as an ``EmailMessage`` (``messages``) with its
envelope (``envelopes``), refuses the addresses in ``refuse`` with ``550 5.1.1`` at
RCPT, and counts the connections it accepted, so a test can see that a batch reused one.

Usage::

    async with SmtpStandin() as smtp:
        channel = EmailChannel("127.0.0.1", smtp.port, "Sesame <no-reply@sesame.test>")
        ...
        assert smtp.messages[0]["Subject"] == "..."

``aiosmtpd`` is a development dependency: import this module from tests only.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from sesame.notifications.testing.serving import Served


@dataclass(frozen=True)
class ReceivedEnvelope:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class _Handler:
    refuse: set[str]
    envelopes: list[ReceivedEnvelope] = field(default_factory=list)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.envelopes.append(
            ReceivedEnvelope(envelope.mail_from or "", list(envelope.rcpt_tos), parsed)
        )
        return f"250 2.0.0 Ok: queued as Q{len(self.envelopes)}"


class SmtpStandin(Served):
    """An SMTP server for tests; see the module docstring."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self._handler = _Handler({address.lower() for address in refuse or set()})
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []

    @property
    def refuse(self) -> set[str]:
        return self._handler.refuse

    @property
    def envelopes(self) -> list[ReceivedEnvelope]:
        return self._handler.envelopes

    @property
    def messages(self) -> list[EmailMessage]:
        return [envelope.message for envelope in self._handler.envelopes]

    async def start(self) -> int:
        """Listen on a free localhost port; answers the port."""
        loop = asyncio.get_running_loop()

        def new_session() -> SMTP:
            self.connections += 1
            session = SMTP(self._handler, hostname="smtp.standin.test", loop=loop)
            self._sessions.append(session)
            return session

        self._server = await loop.create_server(new_session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def drop_connections(self) -> None:
        """Hang up on every connected client, as a server does after its idle timeout."""
        for session in self._sessions:
            transport: Any = session.transport
            if transport is not None:
                transport.close()
        self._sessions.clear()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.drop_connections()
        await self._server.wait_closed()
        self._server = None
