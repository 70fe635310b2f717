"""Web Push (RFC 8030) with message encryption (RFC 8291) and VAPID (RFC 8292).

Each message is encrypted for one browser subscription with a fresh ephemeral P-256 key,
so the push service only ever sees ciphertext. The VAPID token names the push service's
origin as ``aud`` (a token for one service is useless at another) and is cached per
origin well inside its lifetime. ``Topic`` is derived from the transaction id, so a
resend replaces an undelivered copy instead of buzzing the phone twice.

Endpoints come from browsers, that is from anyone: every connection goes through the
egress policy (``sesame.kit.egress``), which refuses this host and private networks
however they are spelled or resolved, and plain http unless allow-listed. Redirects are
not followed; one fails the delivery.

The server's VAPID key is made from a 32-byte seed (``vapid_key_from_secret``), stored
sealed (``sesame.notifications.install.load_vapid_key``): browsers keep their
subscriptions, which are bound to the ``applicationServerKey``, across restarts and
changes of the master secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped]
import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02  # type: ignore[import-untyped]

from sesame.kit.egress import EgressPolicy, EgressRefused, Unresolvable
from sesame.kit.logging import get_logger
from sesame.notifications.channels.base import (
    InFlight,
    Message,
    Outcome,
    Result,
    retry_after_seconds,
    send_bounded,
)

log = get_logger("sesame.notifications.webpush")

# Categories a person wants to hear about at once (RFC 8030 §5.3 ``Urgency: high``).
URGENT_CATEGORIES = frozenset({"doorbell", "security"})

# A push service must accept 4096 octets of body (RFC 8291 §4). The aes128gcm header
# takes 86 (salt 16, record size 4, key id length 1, key id 65); the single record adds
# a 16-octet tag and a 1-octet delimiter.
MAX_BODY_BYTES = 4096
MAX_PLAINTEXT_BYTES = MAX_BODY_BYTES - 86 - 17

# VAPID tokens: valid for 16 h (RFC 8292 caps ``exp`` at 24 h) and reused for 12 h, so a
# token in use always has at least 4 h left even against a push service's skewed clock.
VAPID_LIFETIME_SECONDS = 16 * 3600
VAPID_REUSE_SECONDS = 12 * 3600

_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding (browsers send it without)."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))


def vapid_key_from_secret(seed: bytes) -> ec.EllipticCurvePrivateKey:
    """A stable P-256 key from at least 32 bytes of secret material.

    The same seed always gives the same key. The seed is first hashed under a label of its
    own, so the key stays unrelated to anything else derived from the same master secret;
    the digest is reduced modulo the curve order (a bias of about 2^-32, harmless for a
    signing key) and zero, which is not a valid key, becomes one.
    """
    if len(seed) < 32:
        raise ValueError("a VAPID seed needs at least 32 bytes of secret material")
    scalar = int.from_bytes(hashlib.sha256(b"sesame-vapid-v1\x00" + seed).digest(), "big")
    scalar %= _P256_ORDER
    return ec.derive_private_key(scalar or 1, ec.SECP256R1())


def vapid_public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The ``applicationServerKey`` browsers subscribe with: the uncompressed point, base64url."""
    raw = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return b64url_encode(raw)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of an endpoint: the VAPID audience."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("not an http(s) URL")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{host}{port}"


def topic_for(transaction_id: str) -> str:
    """At most 32 base64url characters (RFC 8030 §5.4), the same for every resend."""
    if _TOPIC_RE.match(transaction_id):
        return transaction_id
    return b64url_encode(hashlib.sha256(transaction_id.encode()).digest())[:32]


def encrypt_payload(plaintext: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291 ``aes128gcm`` body for one subscription, with a fresh ephemeral key."""
    receiver_key = b64url_decode(p256dh)
    auth_secret = b64url_decode(auth)
    if len(receiver_key) != 65 or len(auth_secret) != 16:
        raise ValueError("p256dh must be a 65-byte point and auth 16 bytes")
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    body = http_ece.encrypt(
        plaintext,
        private_key=ephemeral,
        dh=receiver_key,
        auth_secret=auth_secret,
        version="aes128gcm",
    )
    return bytes(body)


class WebPushChannel:
    """Send to browser push subscriptions; one encrypted POST per message."""

    name = "webpush"

    def __init__(
        self,
        vapid_private_key: ec.EllipticCurvePrivateKey,
        subject: str,
        *,
        concurrency: int = 32,
        timeout_seconds: float = 10.0,
        ttl_seconds: int = 86400,
        urgent_categories: frozenset[str] = URGENT_CATEGORIES,
        egress: EgressPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """``egress``: where endpoints may be (default: public https only). A ``client``
        given is used as it is, its connections the caller's business."""
        if not (subject.startswith("mailto:") or subject.startswith("https://")):
            raise ValueError("the VAPID subject must be a mailto: or https: URL")
        if not isinstance(vapid_private_key.curve, ec.SECP256R1):
            raise ValueError("the VAPID key must be on P-256")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._vapid = Vapid02(private_key=vapid_private_key)
        self._subject = subject
        self._concurrency = concurrency
        self._in_flight = InFlight(concurrency)
        self._timeout = timeout_seconds
        self._ttl = str(max(0, ttl_seconds))
        self._urgent = urgent_categories
        self._owns_client = client is None
        self._egress = egress or EgressPolicy()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = client or httpx.AsyncClient(
            timeout=timeout_seconds,
            transport=self._egress.transport(limits=limits),
            follow_redirects=False,
        )
        self._vapid_cache: dict[str, tuple[float, str]] = {}
        self.sign_vapid("https://push.invalid")  # fail now, not per message, on a bad subject
        self._vapid_cache.clear()

    def sign_vapid(self, origin: str) -> str:
        """The ``Authorization`` value for one push service origin, cached for 12 h."""
        now = time.time()
        cached = self._vapid_cache.get(origin)
        if cached and cached[0] > now:
            return cached[1]
        # A fresh dict every call: some py_vapid versions write into the claims they get.
        claims = {"aud": origin, "exp": int(now) + VAPID_LIFETIME_SECONDS, "sub": self._subject}
        header = str(self._vapid.sign(claims)["Authorization"])
        self._vapid_cache[origin] = (now + VAPID_REUSE_SECONDS, header)
        return header

    async def send_many(self, messages: Sequence[Message]) -> list[Result]:
        return await send_bounded(messages, self._concurrency, self._send_one, self._in_flight)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _payload(self, m: Message) -> bytes:
        return orjson.dumps(
            {
                "title": m.title,
                "body": m.body,
                "category": m.category,
                "transaction_id": m.transaction_id,
                "data": m.data,
            }
        )

    def _headers(self, m: Message, origin: str) -> dict[str, str]:
        return {
            "Authorization": self.sign_vapid(origin),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": self._ttl,
            "Urgency": "high" if m.category in self._urgent else "normal",
            "Topic": topic_for(m.transaction_id),
        }

    async def _send_one(self, m: Message) -> Result:
        try:
            origin = origin_of(m.address)
        except ValueError:
            return Result(Outcome.REJECTED, code="invalid_endpoint", detail="not an http(s) URL")
        if (
            self._egress.enforced
            and not origin.startswith("https:")
            and not self._egress.allows_host(urlsplit(m.address).hostname or "")
        ):
            return Result(Outcome.GONE, code="not_https", detail="push endpoints are https")
        plaintext = self._payload(m)
        if len(plaintext) > MAX_PLAINTEXT_BYTES:
            return Result(Outcome.REJECTED, code="too_large", detail="payload over 4 KB")
        try:
            body = encrypt_payload(plaintext, m.keys.get("p256dh", ""), m.keys.get("auth", ""))
        except (ValueError, binascii.Error, http_ece.ECEException):
            return Result(Outcome.REJECTED, code="invalid_subscription", detail="bad keys")
        try:
            response = await self._client.post(
                m.address, content=body, headers=self._headers(m, origin), timeout=self._timeout
            )
        except httpx.InvalidURL:
            return Result(Outcome.REJECTED, code="invalid_endpoint", detail="malformed URL")
        except Unresolvable:
            return Result(Outcome.RETRY, code="unresolvable")
        except EgressRefused as exc:
            log.warning("webpush_refused", delivery_id=str(m.delivery_id), reason=exc.reason)
            return Result(Outcome.GONE, code=exc.reason, detail=str(exc))
        except httpx.TimeoutException:
            return Result(Outcome.RETRY, code="timeout")
        except httpx.HTTPError as exc:
            return Result(Outcome.RETRY, code="connection_error", detail=type(exc).__name__)
        result = classify(response)
        if result.outcome is not Outcome.SENT:
            log.info(
                "webpush_not_sent",
                delivery_id=str(m.delivery_id),
                origin=origin,
                status=response.status_code,
                outcome=result.outcome.value,
            )
        return result


def classify(response: httpx.Response) -> Result:
    """What a push service's answer means for the delivery (RFC 8030 §5, §8.3)."""
    status = response.status_code
    code = f"http_{status}"
    if status in {200, 201, 202}:
        return Result(Outcome.SENT, provider_id=response.headers.get("Location"))
    if status in {404, 410}:
        return Result(Outcome.GONE, code=code, detail="subscription expired or unknown")
    if status == 413:
        return Result(Outcome.REJECTED, code="too_large", detail="payload too large")
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        return Result(Outcome.RETRY, code=code, retry_after=retry_after)
    if 300 <= status < 400:
        return Result(Outcome.REJECTED, code=code, detail="redirects are not followed")
    if 400 <= status < 500:
        return Result(Outcome.REJECTED, code=code, detail=response.reason_phrase or None)
    return Result(Outcome.RETRY, code=code)  # an odd 2xx: try again later
