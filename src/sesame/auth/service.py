"""Signing in and out: staff passwords, resident one-time codes, sessions and API keys.

What must hold:
- a wrong password and an unknown account look the same, in answer and in time;
- failed attempts are counted per account (or phone) and per client address, across
  processes, and refused with 429 past the limit; the counts survive the refusal;
- one-time codes are six digits, stored as keyed digests, expire in minutes and allow a
  few tries; asking for a code reveals nothing about whether the phone is registered;
- refresh tokens rotate: each works once; presenting one again ends its session, because
  only a thief or a bug does that;
- secrets are returned once and never logged.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.auth.principal import (
    API_KEY_PREFIX,
    API_KEY_PREFIX_LENGTH,
    API_KEY_SCOPES,
    Action,
    Group,
    Principal,
)
from sesame.auth.repository import (
    ApiKeyRepository,
    OtpRepository,
    RateLimitRepository,
    SessionRepository,
)
from sesame.auth.tokens import TokenKind, issue_access_token
from sesame.kit.errors import (
    FieldError,
    InvalidCredentials,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from sesame.kit.ids import new_id
from sesame.kit.logging import get_logger
from sesame.kit.security import digest, new_token
from sesame.models import ApiKey, AuthSession, OtpChallenge, RefreshToken, SubjectKind
from sesame.runtime import Runtime
from sesame.staff.repository import StaffRepository

log = get_logger("sesame.auth")

OTP_DIGITS = 6


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    session_id: UUID


class RateLimiter:
    """Fixed-window counters in the database, so every process shares them."""

    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.repository = RateLimitRepository(session)
        self.window = runtime.settings.rate_limit_window_seconds
        self.clock = runtime.clock

    @staticmethod
    def key(kind: str, subject: str) -> str:
        """Counter keys hold a digest, not the email, phone or address itself."""
        return f"{kind}:{digest(subject)[:40]}"

    def _window(self) -> tuple[int, int, datetime]:
        now = self.clock.now()
        epoch = int(now.timestamp())
        start = epoch - epoch % self.window
        retry_after = start + self.window - epoch
        return start, retry_after, now + timedelta(seconds=retry_after + self.window)

    async def hit(self, key: str, limit: int) -> None:
        """Count one event; refuse it when the window already holds ``limit`` events."""
        start, retry_after, expires_at = self._window()
        count = await self.repository.increment(key, start, expires_at)
        if count > limit:
            raise RateLimited(
                "too many attempts; wait and try again", retry_after=retry_after, keep_changes=True
            )

    async def check(self, key: str, limit: int) -> None:
        """Refuse, without counting, when the window already holds ``limit`` events."""
        start, retry_after, _ = self._window()
        if await self.repository.current(key, start) >= limit:
            raise RateLimited("too many attempts; wait and try again", retry_after=retry_after)


async def start_session(
    session: AsyncSession,
    runtime: Runtime,
    *,
    kind: TokenKind,
    subject: str,
    staff_id: UUID | None = None,
    phone: str | None = None,
    client_address: str | None = None,
) -> IssuedTokens:
    now = runtime.clock.now()
    settings = runtime.settings
    refresh_token = new_token()
    auth_session = AuthSession(
        id=new_id(),
        subject_kind=SubjectKind(kind),
        staff_id=staff_id,
        phone=phone,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.refresh_token_ttl_seconds),
        client_address=client_address,
    )
    token_row = RefreshToken(
        session_id=auth_session.id,
        token_digest=digest(refresh_token),
        created_at=now,
        expires_at=auth_session.expires_at,
    )
    await SessionRepository(session).add(auth_session, token_row)
    access_token, access_expires_at = issue_access_token(
        runtime.keys.access_tokens,
        kind=kind,
        subject=subject,
        session_id=auth_session.id,
        now=now,
        ttl_seconds=settings.access_token_ttl_seconds,
    )
    return IssuedTokens(
        access_token, access_expires_at, refresh_token, auth_session.expires_at, auth_session.id
    )


async def login(
    session: AsyncSession, runtime: Runtime, *, email: str, password: str, client_address: str
) -> IssuedTokens:
    settings = runtime.settings
    limiter = RateLimiter(session, runtime)
    account_key = RateLimiter.key("login-account", email)
    address_key = RateLimiter.key("login-address", client_address)
    await limiter.check(account_key, settings.login_attempts_per_account)
    await limiter.check(address_key, settings.login_attempts_per_address)
    staff = await StaffRepository(session).by_email(email)
    passwords = runtime.passwords
    password_ok = await passwords.verify(staff.password_hash if staff else None, password)
    if staff is None or not password_ok or not staff.is_active:
        await limiter.hit(account_key, settings.login_attempts_per_account)
        await limiter.hit(address_key, settings.login_attempts_per_address)
        log.info("login_failed", client=client_address)
        raise InvalidCredentials("wrong email or password", keep_changes=True)
    staff.last_login_at = runtime.clock.now()
    if staff.password_hash and passwords.needs_rehash(staff.password_hash):
        # Made at another cost (the installation changed it): redone at today's.
        staff.password_hash = await passwords.hash(password)
    log.info("login_succeeded", staff_id=str(staff.id))
    return await start_session(
        session,
        runtime,
        kind="staff",
        subject=str(staff.id),
        staff_id=staff.id,
        client_address=client_address,
    )


async def refresh(session: AsyncSession, runtime: Runtime, *, refresh_token: str) -> IssuedTokens:
    now = runtime.clock.now()
    sessions = SessionRepository(session)
    token_digest = digest(refresh_token)
    session_id = await sessions.use_refresh_token(token_digest, now)
    if session_id is None:
        known_session = await sessions.refresh_token_session(token_digest)
        if known_session is not None:
            # A used or expired token came back: end the session it belongs to.
            await sessions.revoke(known_session, now)
            runtime.credential_cache.clear()
            log.warning("refresh_token_reused", session_id=str(known_session))
            raise Unauthorized("refresh token already used; sign in again", keep_changes=True)
        raise Unauthorized("invalid refresh token")
    auth_session = await sessions.get(session_id)
    if (
        auth_session is None
        or auth_session.revoked_at is not None
        or auth_session.expires_at <= now
    ):
        raise Unauthorized("session ended; sign in again")
    subject: str
    if auth_session.subject_kind is SubjectKind.STAFF:
        staff = (
            await StaffRepository(session).by_id(auth_session.staff_id)
            if (auth_session.staff_id)
            else None
        )
        if staff is None or not staff.is_active:
            raise Unauthorized("account disabled")
        subject = str(staff.id)
    else:
        subject = auth_session.phone or ""
    new_refresh = new_token()
    await sessions.add_refresh_token(
        RefreshToken(
            session_id=auth_session.id,
            token_digest=digest(new_refresh),
            created_at=now,
            expires_at=auth_session.expires_at,
        )
    )
    access_token, access_expires_at = issue_access_token(
        runtime.keys.access_tokens,
        kind=auth_session.subject_kind.value,
        subject=subject,
        session_id=auth_session.id,
        now=now,
        ttl_seconds=runtime.settings.access_token_ttl_seconds,
    )
    return IssuedTokens(
        access_token, access_expires_at, new_refresh, auth_session.expires_at, auth_session.id
    )


async def logout(session: AsyncSession, runtime: Runtime, principal: Principal) -> None:
    if principal.session_id is None:
        raise ValidationFailed("API keys have no session; revoke the key instead")
    await SessionRepository(session).revoke(principal.session_id, runtime.clock.now())
    runtime.credential_cache.clear()


# -- residents: one-time codes ------------------------------------------------------------


def _code_digest(runtime: Runtime, challenge_id: UUID, phone: str, code: str) -> str:
    return runtime.keys.one_time_codes.digest(str(challenge_id), phone, code)


def _code_matches(runtime: Runtime, challenge: OtpChallenge, phone: str, code: str) -> bool:
    """A code sent before a change of secret still matches under the previous one."""
    return runtime.keys.one_time_codes.matches(
        challenge.code_digest, str(challenge.id), phone, code
    )


async def request_code(
    session: AsyncSession, runtime: Runtime, *, phone: str, client_address: str
) -> datetime:
    """Send a sign-in code to a registered phone; answer the same way for any phone."""
    settings = runtime.settings
    limiter = RateLimiter(session, runtime)
    await limiter.hit(RateLimiter.key("otp-phone", phone), settings.otp_requests_per_phone)
    await limiter.hit(
        RateLimiter.key("otp-address", client_address), settings.otp_requests_per_address
    )
    now = runtime.clock.now()
    code = f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"
    challenge_id = new_id()
    expires_at = now + timedelta(seconds=settings.otp_ttl_seconds)
    await OtpRepository(session).add(
        OtpChallenge(
            id=challenge_id,
            phone=phone,
            code_digest=_code_digest(runtime, challenge_id, phone, code),
            created_at=now,
            expires_at=expires_at,
            attempts=0,
        )
    )
    if await OtpRepository(session).person_ids_for_phone(phone):
        minutes = max(1, settings.otp_ttl_seconds // 60)
        await runtime.sms_sender.send(
            phone, f"[Sesame] 인증번호 {code} ({minutes}분 안에 입력) / code {code}"
        )
    log.info("otp_requested", client=client_address)
    return expires_at


async def verify_code(
    session: AsyncSession, runtime: Runtime, *, phone: str, code: str, client_address: str
) -> IssuedTokens:
    settings = runtime.settings
    limiter = RateLimiter(session, runtime)
    await limiter.hit(
        RateLimiter.key("otp-verify-address", client_address),
        settings.otp_verifications_per_address,
    )
    codes = OtpRepository(session)
    now = runtime.clock.now()
    challenge = await codes.latest_open(phone, now)
    if challenge is None:
        raise InvalidCredentials(
            "no valid code for this phone; request a new one", keep_changes=True
        )
    if challenge.attempts >= settings.otp_max_attempts:
        raise InvalidCredentials("too many wrong codes; request a new one", keep_changes=True)
    attempts = await codes.count_attempt(challenge.id)
    if not _code_matches(runtime, challenge, phone, code):
        remaining = max(0, settings.otp_max_attempts - attempts)
        raise InvalidCredentials("wrong code", keep_changes=True, attempts_remaining=remaining)
    if not await codes.consume(challenge.id, now) or not await codes.person_ids_for_phone(phone):
        raise InvalidCredentials(
            "no valid code for this phone; request a new one", keep_changes=True
        )
    log.info("otp_verified")
    return await start_session(
        session, runtime, kind="resident", subject=phone, phone=phone, client_address=client_address
    )


# -- partner API keys ---------------------------------------------------------------------


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(API_KEY_SCOPES))
    if unknown:
        raise ValidationFailed(
            "unknown scopes: " + ", ".join(unknown),
            errors=[
                FieldError(
                    ("body", "scopes"), f"allowed: {', '.join(API_KEY_SCOPES)}", "unknown_scope"
                )
            ],
        )
    return sorted(set(scopes))


async def create_api_key(
    session: AsyncSession,
    principal: Principal,
    *,
    partner_id: UUID,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """A new key and its full secret, which exists only in this answer."""
    principal.require(Group.API_KEYS, Action.WRITE)
    prefix = secrets.token_hex(API_KEY_PREFIX_LENGTH // 2)
    secret = new_token()
    key = ApiKey(
        partner_id=partner_id,
        name=name,
        prefix=prefix,
        secret_digest=digest(secret),
        scopes=check_scopes(scopes),
        created_by_staff_id=principal.staff_id,
        expires_at=expires_at,
    )
    await ApiKeyRepository(session).add(key)
    return key, f"{API_KEY_PREFIX}{prefix}_{secret}"


def describe_tokens(tokens: IssuedTokens, now: datetime) -> dict[str, Any]:
    return {
        "access_token": tokens.access_token,
        "token_type": "bearer",
        "expires_in": int((tokens.access_expires_at - now).total_seconds()),
        "refresh_token": tokens.refresh_token,
        "refresh_expires_in": int((tokens.refresh_expires_at - now).total_seconds()),
    }
