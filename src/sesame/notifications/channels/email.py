"""E-mail over SMTP: a few long-lived connections, each carrying many messages.

At most ``concurrency`` connections are open; a message borrows one, and the most
recently used is lent first, so a quiet system keeps one warm connection rather than
several cold ones. A connection idle for a while is checked with ``NOOP`` before use,
and one the server dropped is replaced. If the server cannot be reached at all, the rest
of the batch is answered ``RETRY`` at once instead of each message waiting out its own
connection timeout.

``Message-ID`` is built from the transaction id, so a resend after a crash carries the
same id and mail systems and clients can recognise it. ``Auto-Submitted:
auto-generated`` (RFC 3834) keeps vacation responders from answering.

Only a refused *recipient* can make a destination ``GONE`` (550/551/553 with no
enhanced code, or an addressing one, 5.1.x or 5.2.1): a 550 5.7.1 "relaying denied"
means our relay is misconfigured, and must not deactivate every address we send to.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from sesame.kit.logging import get_logger
from sesame.notifications.channels.base import (
    Message,
    Outcome,
    Result,
    send_bounded,
)

log = get_logger("sesame.notifications.email")

IDLE_CHECK_SECONDS = 30.0
_GONE_CODES = {550, 551, 553}
_ENHANCED_RE = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})")
_ADDRESS_RE = re.compile(r"^[^\s<>\"@]+@[^\s<>\"@]+$")
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


def classify_reply(code: int, text: str = "", *, recipient: bool = False) -> Result:
    """What an SMTP reply means for the delivery; ``recipient`` for a refused RCPT."""
    label = f"smtp_{code}"
    if 200 <= code < 300:
        return Result(Outcome.SENT)
    if 500 <= code < 600:
        if recipient and code in _GONE_CODES and _names_the_mailbox(text):
            return Result(Outcome.GONE, code=label, detail="recipient refused")
        return Result(Outcome.REJECTED, code=label, detail=_reply_detail(text))
    return Result(Outcome.RETRY, code=label, detail=_reply_detail(text))


def _names_the_mailbox(text: str) -> bool:
    """No enhanced status code, or one about the address itself (RFC 3463 X.1.x, X.2.1)."""
    enhanced = _ENHANCED_RE.match(text)
    if enhanced is None:
        return True
    subject, detail = enhanced.group(2), enhanced.group(3)
    return subject == "1" or (subject, detail) == ("2", "1")


def _reply_detail(text: str) -> str | None:
    # The server's words, shortened; they name a mailbox at most, never the message.
    return text.strip()[:120] or None


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class _Connection:
    smtp: aiosmtplib.SMTP | None = None
    last_used: float = 0.0

    def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
        self.smtp = None


@dataclass
class _Batch:
    unreachable: Result | None = None


class EmailChannel:
    """Send each message as one e-mail from ``sender`` to its address."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool | None = None,
        use_tls: bool = False,
        timeout_seconds: float = 10.0,
        concurrency: int = 4,
        local_hostname: str | None = None,
    ) -> None:
        _, address = parseaddr(sender)
        if not _ADDRESS_RE.match(address):
            raise ValueError("the sender must be an e-mail address with a domain")
        if use_tls and starttls:
            raise ValueError("use_tls (implicit TLS) and starttls exclude each other")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._host = host
        self._port = port
        self._sender = sender
        self._envelope_sender = address
        self._domain = address.rpartition("@")[2]
        self._username = username
        self._password = password
        self._starttls = False if use_tls else starttls
        self._use_tls = use_tls
        self._timeout = timeout_seconds
        self._concurrency = concurrency
        # EHLO names us; the sender's domain avoids a slow reverse lookup of our own name.
        self._local_hostname = local_hostname or self._domain
        self._pool: asyncio.LifoQueue[_Connection] = asyncio.LifoQueue()
        for _ in range(concurrency):
            self._pool.put_nowait(_Connection())

    async def send_many(self, messages: Sequence[Message]) -> list[Result]:
        batch = _Batch()

        async def send_one(m: Message) -> Result:
            if batch.unreachable is not None:
                return batch.unreachable
            try:
                email = self.compose(m)
            except ValueError:
                return Result(Outcome.REJECTED, code="invalid_address", detail="not an address")
            connection = await self._pool.get()
            try:
                return await self._deliver(connection, m, email, batch)
            finally:
                self._pool.put_nowait(connection)

        return await send_bounded(messages, self._concurrency, send_one)

    async def aclose(self) -> None:
        while not self._pool.empty():
            connection = self._pool.get_nowait()
            if connection.smtp is not None and connection.smtp.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):  # closing anyway
                    await connection.smtp.quit(timeout=self._timeout)
            connection.drop()

    def compose(self, m: Message) -> EmailMessage:
        """The e-mail for one message; raises ``ValueError`` for an unusable address."""
        address = m.address.strip()
        if not _ADDRESS_RE.match(address):
            raise ValueError("not an e-mail address")
        email = EmailMessage()
        email["From"] = self._sender
        email["To"] = address
        email["Subject"] = _one_line(m.title)
        email["Date"] = format_datetime(datetime.now(UTC))
        local_part = _MSGID_UNSAFE.sub("-", m.transaction_id) or "message"
        email["Message-ID"] = f"<{local_part}@{self._domain}>"
        email["Auto-Submitted"] = "auto-generated"
        email["X-Sesame-Category"] = _one_line(m.category)
        if m.locale:
            email["Content-Language"] = _one_line(m.locale)
        email.set_content(m.body)
        paragraphs = "".join(
            f"<p>{html.escape(part).replace(chr(10), '<br>')}</p>" for part in m.body.split("\n\n")
        )
        lang = html.escape(m.locale or "en", quote=True)
        email.add_alternative(
            f'<!doctype html><html lang="{lang}"><body>{paragraphs}</body></html>',
            subtype="html",
        )
        return email

    async def _deliver(
        self, connection: _Connection, m: Message, email: EmailMessage, batch: _Batch
    ) -> Result:
        try:
            smtp = await self._connected(connection)
        except aiosmtplib.SMTPResponseException as exc:  # refused greeting or login
            connection.drop()
            batch.unreachable = classify_reply(exc.code, exc.message)
            self._log_failure(m, batch.unreachable)
            return batch.unreachable
        except (aiosmtplib.SMTPException, OSError) as exc:
            connection.drop()
            batch.unreachable = Result(
                Outcome.RETRY, code="smtp_unreachable", detail=type(exc).__name__
            )
            self._log_failure(m, batch.unreachable)
            return batch.unreachable
        try:
            _, reply = await smtp.send_message(
                email, sender=self._envelope_sender, recipients=[m.address.strip()]
            )
            result = Result(Outcome.SENT, provider_id=reply.strip()[:200] or None)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            result = classify_reply(refused.code, refused.message, recipient=True)
        except aiosmtplib.SMTPResponseException as exc:  # sender or content refused
            result = classify_reply(exc.code, exc.message)
        except aiosmtplib.SMTPNotSupported:
            result = Result(Outcome.REJECTED, code="smtputf8_unsupported")
        except (aiosmtplib.SMTPException, OSError) as exc:  # disconnected, timed out
            connection.drop()
            result = Result(Outcome.RETRY, code="smtp_disconnected", detail=type(exc).__name__)
        except ValueError:
            result = Result(Outcome.REJECTED, code="invalid_address", detail="not an address")
        connection.last_used = time.monotonic()
        if result.outcome is not Outcome.SENT:
            self._log_failure(m, result)
        return result

    async def _connected(self, connection: _Connection) -> aiosmtplib.SMTP:
        """A live connection: reused if the server still answers, otherwise a new one."""
        smtp = connection.smtp
        if smtp is not None and smtp.is_connected:
            if time.monotonic() - connection.last_used < IDLE_CHECK_SECONDS:
                return smtp
            try:
                await smtp.noop(timeout=self._timeout)
                return smtp
            except (aiosmtplib.SMTPException, OSError):
                pass  # the server let it go; open a fresh one below
        connection.drop()
        smtp = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            username=self._username,
            password=self._password,
            local_hostname=self._local_hostname,
            timeout=self._timeout,
            use_tls=self._use_tls,
            start_tls=self._starttls,
        )
        try:
            await smtp.connect()
        except BaseException:
            smtp.close()
            raise
        connection.smtp = smtp
        connection.last_used = time.monotonic()
        return smtp

    def _log_failure(self, m: Message, result: Result) -> None:
        log.info(
            "email_not_sent",
            delivery_id=str(m.delivery_id),
            outcome=result.outcome.value,
            smtp_code=result.code,
        )
