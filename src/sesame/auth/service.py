"""Signing in and out: staff passwords, resident one-time codes, sessions and API keys.

What must hold:
- a wrong password and an unknown account look the same, in answer and in time;
- failed attempts are counted across processes and refused with 429 past the limit; the
  counts survive the refusal; a stranger's failures never lock a user out of their
  account from their own address (``LoginLimits``);
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
    resident_id,
)
from sesame.auth.repository import (
    ApiKeyRepository,
    OtpRepository,
    RateLimitRepository,
    SessionRepository,
)
from sesame.auth.tokens import TokenKind, issue_access_token
from sesame.kit.db import after_commit
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
from sesame.notifications import catalog
from sesame.runtime import Runtime
from sesame.settings import Settings
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

    async def count(self, key: str) -> int:
        """Events in the current window."""
        start, _, _ = self._window()
        return await self.repository.current(key, start)

    async def add(self, key: str) -> None:
        """Count one event, refusing nothing."""
        start, _, expires_at = self._window()
        await self.repository.increment(key, start, expires_at)


# Failed sign-ins to one account from one address, per window, once the account's
# failures from all addresses passed SESAME_LOGIN_ATTEMPTS_PER_ACCOUNT_ALL_ADDRESSES.
ATTEMPTS_PER_ADDRESS_UNDER_ATTACK = 3


@dataclass(frozen=True)
class LoginLimits:
    """Who is refused after failed sign-ins, so that a stranger cannot lock a user out.

    - Per account *and* address (``SESAME_LOGIN_ATTEMPTS_PER_ACCOUNT``): guessing one
      account's password from one address is refused there, and only there: the owner
      signing in from their own address keeps their attempts.
    - Per address (``SESAME_LOGIN_ATTEMPTS_PER_ADDRESS``): one address trying many
      accounts is refused for all of them.
    - Per account from all addresses (``..._PER_ACCOUNT_ALL_ADDRESSES``, higher): past
      it an attack is spread over many addresses, and each address gets only
      ``ATTEMPTS_PER_ADDRESS_UNDER_ATTACK`` tries at that account per window. That slows
      the attack down to a few guesses per address it controls, and still lets the owner
      in from an address of their own — nobody is refused because of someone else.
    """

    pair: str
    address: str
    account: str

    @classmethod
    def of(cls, email: str, client_address: str) -> LoginLimits:
        return cls(
            pair=RateLimiter.key("login-account-address", f"{email}\x1f{client_address}"),
            address=RateLimiter.key("login-address", client_address),
            account=RateLimiter.key("login-account", email),
        )

    async def pair_limit(self, limiter: RateLimiter, settings: Settings) -> int:
        attacked = await limiter.count(self.account) >= (
            settings.login_attempts_per_account_all_addresses
        )
        per_pair = settings.login_attempts_per_account
        return min(per_pair, ATTEMPTS_PER_ADDRESS_UNDER_ATTACK) if attacked else per_pair

    async def check(self, limiter: RateLimiter, settings: Settings) -> int:
        """Refuse before the password is checked; returns the limit of this pair."""
        await limiter.check(self.address, settings.login_attempts_per_address)
        limit = await self.pair_limit(limiter, settings)
        await limiter.check(self.pair, limit)
        return limit

    async def count_failure(self, limiter: RateLimiter, settings: Settings, limit: int) -> None:
        await limiter.add(self.account)
        await limiter.hit(self.address, settings.login_attempts_per_address)
        await limiter.hit(self.pair, limit)


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
    """Check a password with no transaction open, then write what follows from it.

    argon2id takes most of a second, and on SQLite the request's transaction holds the
    one write lock from its first statement: counters and the account are read in a
    session that writes nothing, the hash is checked (or redone) outside any
    transaction, and only then does ``session`` write the failure counts (committed by
    the edge, ``keep_changes``) or the new session.
    """
    settings = runtime.settings
    limits = LoginLimits.of(email, client_address)
    async with runtime.read_session_factory() as reader:
        pair_limit = await limits.check(RateLimiter(reader, runtime), settings)
        found = await StaffRepository(reader).by_email(email)
    passwords = runtime.passwords
    stored_hash = found.password_hash if found else None
    password_ok = await passwords.verify(stored_hash, password)
    if found is None or not password_ok or not found.is_active:
        await limits.count_failure(RateLimiter(session, runtime), settings, pair_limit)
        log.info("login_failed", client=client_address)
        raise InvalidCredentials("wrong email or password", keep_changes=True)
    # Made at another cost (the installation changed it): redone at today's.
    new_hash = (
        await passwords.hash(password)
        if stored_hash and passwords.needs_rehash(stored_hash)
        else None
    )
    staff = await StaffRepository(session).by_id(found.id)
    if staff is None or not staff.is_active or staff.password_hash != stored_hash:
        # Changed between the check and now: the password checked is no longer the one.
        raise InvalidCredentials("wrong email or password")
    staff.last_login_at = runtime.clock.now()
    if new_hash is not None:
        staff.password_hash = new_hash
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
        if auth_session.phone is None:
            raise Unauthorized("session ended; sign in again")
        subject = resident_id(runtime.keys.access_tokens, auth_session.phone)
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
    locale = await OtpRepository(session).locale_for_phone(phone)
    if locale is not None:
        minutes = max(1, settings.otp_ttl_seconds // 60)
        text = catalog.sms_text("sign_in.code", locale, {"code": code, "minutes": minutes})

        async def send() -> None:
            await runtime.sms_sender.send(phone, text)

        # A call out, so after the commit: never while holding the write lock, and
        # never a code that was not stored. An SMS outage still reaches the caller.
        after_commit(session, send, must_succeed=True)
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
        session,
        runtime,
        kind="resident",
        subject=resident_id(runtime.keys.access_tokens, phone),
        phone=phone,
        client_address=client_address,
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
