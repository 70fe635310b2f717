"""One place for every setting, read from ``SESAME_*`` environment variables (or ``.env``).

Every setting has a default that works on a fresh machine in development mode. Outside
development mode the built-in secrets are refused by every command that relies on them
(``Settings.require``): a production deployment that forgot to set ``SESAME_SECRET_KEY``
must not come up signing tokens with a key that is printed in this file. A command checks
only what it uses: ``sesame sim`` needs a broker, not the server's secret.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from sesame.kit.egress import EgressPolicy

# Public on purpose: refused outside development mode.
DEVELOPMENT_SECRET_KEY = "sesame-development-secret-key-do-not-use-in-production"  # noqa: S105

Environment = Literal["development", "production"]

# What a command relies on, checked outside development mode (Settings.require): the
# master secret, staff password hashing, the sender of sign-in codes.
Need = Literal["secret", "passwords", "sms"]
SERVER_NEEDS: tuple[Need, ...] = ("secret", "passwords", "sms")


class SettingsRefused(ValueError):
    """A development value outside development mode, for a command that relies on it."""


class WitnessConfig(BaseModel):
    """A witness the log asks for cosignatures: where it listens and its verifier key."""

    url: str
    vkey: str

    @field_validator("vkey")
    @classmethod
    def _cosigner_key(cls, value: str) -> str:
        from sesame.ledger.note import COSIGNATURE, NoteError, Verifier

        try:
            kind = Verifier.parse(value).kind
        except NoteError as exc:
            raise ValueError(str(exc)) from exc
        if kind != COSIGNATURE:
            raise ValueError("a witness's key is a cosignature key (type 0x04)")
        return value


class LocalSettings(BaseSettings):
    """What any command may read, however it is configured otherwise: logging, and where
    the server is (``sesame sim`` reads no more)."""

    model_config = SettingsConfigDict(
        env_prefix="SESAME_", env_file=".env", extra="ignore", frozen=True
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Where clients reach the server (links, the demo's printout, the ledger's name);
    # unset: http://<host>:<port> (see base_url).
    public_url: str | None = None

    @property
    def base_url(self) -> str:
        """The server's URL, without a trailing slash: SESAME_PUBLIC_URL, or else where
        it listens (a wildcard address read as the loopback one)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        wildcards = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104
        host = wildcards.get(self.host, self.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


class Settings(LocalSettings):
    """Every setting of the server and of the commands that work on its data."""

    env: Environment = "production"

    # Storage
    database_url: str = "sqlite+aiosqlite:///./var/sesame.db"
    database_pool_size: int = Field(default=20, ge=1, le=500)
    database_timeout_seconds: float = Field(default=10.0, gt=0)

    # HTTP
    workers: int = Field(default=1, ge=1, le=64)
    # Peers whose X-Forwarded-For is believed (addresses or networks); none by default.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # On SIGTERM: how long requests in flight may take to finish before they are cancelled;
    # the gateway, broker, workers and loops then get as long again to close.
    shutdown_grace_seconds: int = Field(default=5, ge=0, le=3600)

    # Secrets and tokens
    secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET_KEY)
    # Older master secrets, still accepted for reading while `sesame secrets rotate`
    # re-seals what they sealed: a JSON list, or one secret (see docs/operations.md).
    secret_keys_previous: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86_400, ge=300)
    # How long a process may reuse a resolved credential (see sesame.auth.cache).
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=60)
    # Staff passwords: argon2id passes and memory (RFC 9106's second recommendation by
    # default; outside development at least OWASP's minimum, 2 passes over 19 MiB).
    password_time_cost: int = Field(default=3, ge=1, le=20)
    password_memory_kib: int = Field(default=65_536, ge=32, le=4_194_304)

    # Resident sign-in by one-time code
    otp_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    otp_max_attempts: int = Field(default=5, ge=1, le=20)
    otp_requests_per_phone: int = Field(default=5, ge=1)
    otp_requests_per_address: int = Field(default=20, ge=1)
    otp_verifications_per_address: int = Field(default=30, ge=1)
    login_attempts_per_account: int = Field(default=10, ge=1)  # from one address
    login_attempts_per_account_all_addresses: int = Field(default=100, ge=1)
    login_attempts_per_address: int = Field(default=50, ge=1)
    rate_limit_window_seconds: int = Field(default=900, ge=1)

    # SMS delivery of one-time codes
    sms_backend: Literal["console", "http"] = "console"
    sms_http_url: str | None = None
    sms_http_token: SecretStr | None = None
    sms_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    # Idempotency-Key records are kept this long
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)

    default_time_zone: str = "Asia/Seoul"

    # Devices and MQTT. Without SESAME_MQTT_URL an embedded broker listens on mqtt_bind.
    mqtt_url: str | None = None
    mqtt_bind: str = "127.0.0.1:1884"
    mqtt_device_url: str | None = None  # the broker address devices are told to use
    # Both brokers disconnect a client sending a larger packet; above the largest trust
    # document the gateway publishes, far above any device message (64 KiB at most).
    mqtt_max_packet_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    gateway_enabled: bool = True
    device_heartbeat_timeout_seconds: float = Field(default=90.0, gt=0)
    # With a local Mosquitto: rewrite its password file here and SIGHUP it on changes.
    mosquitto_config_dir: str | None = None
    mosquitto_pid_file: str | None = None
    # Time-bound PIN codes are programmed this long before they start.
    pin_lead_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)
    # A device clock off by more than this gets a clock_drift warning and a sync_clock.
    clock_drift_threshold_seconds: float = Field(default=2.0, gt=0, le=3600)
    # Durable jobs (see sesame.jobs): a worker runs inside `sesame serve` unless disabled;
    # `sesame worker` runs more.
    worker_enabled: bool = True
    job_concurrency: int = Field(default=8, ge=1, le=256)
    job_lease_seconds: float = Field(default=120.0, gt=0, le=86_400)
    job_max_attempts: int = Field(default=8, ge=1, le=1000)
    job_retry_cap_seconds: float = Field(default=600.0, gt=0, le=86_400)
    # Development: run the simulated devices listed in this file inside `sesame serve`.
    simulate_devices_file: str | None = None

    # The ledger (see docs/ledger.md). The origin names the log for good: it is stored
    # with the log's key the first time and may not change afterwards.
    ledger_enabled: bool = True
    ledger_origin: str | None = None  # default: the public URL's host/path + "/ledger"
    ledger_access: Literal["public", "authenticated"] = "authenticated"
    # A key event is in a cosigned checkpoint within about the sequencer's 0.1 s settle +
    # interval + signing + the witnesses' round trip (docs/ledger.md, "Checkpoint
    # latency"): 0.5 s keeps that under 1 s with witnesses that answer within 300 ms.
    ledger_checkpoint_interval_seconds: float = Field(default=0.5, ge=0.05, le=3600)
    ledger_batch_size: int = Field(default=1000, ge=1, le=10_000)
    ledger_witnesses: list[WitnessConfig] = Field(default_factory=list)
    ledger_witness_quorum: int | None = Field(default=None, ge=0)  # default: a majority
    ledger_witness_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    # Notifications (see docs/notifications.md). A channel left unconfigured (no FCM
    # service account, no SMTP host) writes to the log instead: the console channel.
    notify_enabled: bool = True
    notify_fcm_service_account: SecretStr | None = None  # a JSON file's path, or the JSON
    notify_fcm_endpoint: str = "https://fcm.googleapis.com"
    notify_fcm_concurrency: int = Field(default=64, ge=1, le=1000)
    notify_webpush_subject: str = "mailto:operations@sesame.invalid"  # VAPID "sub"
    notify_smtp_host: str | None = None
    notify_smtp_port: int = Field(default=587, ge=1, le=65535)
    notify_smtp_username: str | None = None
    notify_smtp_password: SecretStr | None = None
    notify_smtp_from: str = "sesame@sesame.invalid"
    notify_smtp_starttls: bool | None = None  # None: when the server offers it
    notify_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    notify_batch_size: int = Field(default=500, ge=1, le=5000)
    notify_senders: int = Field(default=2, ge=1, le=32)  # sending loops per process
    notify_batches_in_flight: int = Field(default=3, ge=1, le=16)  # per sending loop
    notify_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    notify_max_attempts: int = Field(default=6, ge=1, le=100)  # push and e-mail; webhooks: 7
    # Webhooks and Web Push go only to public addresses (kit/egress.py): on by default
    # outside development (None), off in it. The allow-list admits internal receivers:
    # comma-separated CIDRs, addresses or host names.
    # Device-offline alerts: only after this long offline, at most once per window.
    notify_offline_grace_seconds: float = Field(default=120.0, ge=0, le=86400)
    notify_offline_window_seconds: float = Field(default=3600.0, ge=0, le=7 * 86400)
    notify_egress_check: bool | None = None
    notify_egress_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Operational alerts to platform administrators.
    alert_relay_lag_seconds: float = Field(default=120.0, gt=0)
    alert_failure_ratio: float = Field(default=0.25, gt=0, le=1)
    alert_min_samples: int = Field(default=20, ge=1)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("secret_keys_previous", mode="before")
    @classmethod
    def _secret_list(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return []
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError("a JSON list of secrets, or one secret") from exc
            return [value]
        return value

    @field_validator("default_time_zone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("notify_egress_allow", mode="before")
    @classmethod
    def _egress_allow_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [entry.strip() for entry in value.split(",") if entry.strip()]
        if isinstance(value, list):
            from sesame.kit.egress import EgressPolicy

            EgressPolicy.from_entries([str(v) for v in value], enforced=True)  # refuses typos
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        if not (
            value.startswith("postgresql+asyncpg://") or value.startswith("sqlite+aiosqlite://")
        ):
            raise ValueError(
                "database_url must be sqlite+aiosqlite:///path or postgresql+asyncpg://..."
            )
        return value

    def refusals(self, needs: Iterable[Need] = SERVER_NEEDS) -> list[str]:
        """What stops a command that relies on ``needs`` from running in this mode: the
        built-in development values are refused outside development mode."""
        if self.env == "development":
            return []
        needs = set(needs)
        problems = []
        if "secret" in needs:
            if self.secret_key.get_secret_value() == DEVELOPMENT_SECRET_KEY:
                problems.append("SESAME_SECRET_KEY is the built-in development key")
            elif len(self.secret_key.get_secret_value()) < 32:
                problems.append("SESAME_SECRET_KEY must be at least 32 characters")
            # A previous secret still verifies tokens: a public or weak one would let anyone in.
            previous = [p.get_secret_value() for p in self.secret_keys_previous]
            if any(p == DEVELOPMENT_SECRET_KEY or len(p) < 32 for p in previous):
                problems.append(
                    "SESAME_SECRET_KEYS_PREVIOUS may hold neither the development key nor a "
                    "secret shorter than 32 characters"
                )
        if "passwords" in needs and (
            self.password_time_cost < 2 or self.password_memory_kib < 19_456
        ):
            problems.append(
                "SESAME_PASSWORD_TIME_COST must be at least 2 and SESAME_PASSWORD_MEMORY_KIB "
                "at least 19456"
            )
        if "sms" in needs:
            if self.sms_backend == "console":
                problems.append(
                    "SESAME_SMS_BACKEND=console prints one-time codes; choose 'http' in production"
                )
            elif not self.sms_http_url:
                problems.append("SESAME_SMS_HTTP_URL is required with SESAME_SMS_BACKEND=http")
        return problems

    def require(self, *needs: Need) -> Settings:
        """These settings, if nothing in ``needs`` (default: all a server needs) is left at a
        development value outside development mode; else :class:`SettingsRefused`."""
        problems = self.refusals(needs or SERVER_NEEDS)
        if problems:
            mode = (
                "SESAME_ENV is production"
                if "env" in self.model_fields_set
                else "SESAME_ENV is not set, so this is production mode"
            )
            raise SettingsRefused(
                f"{mode}, which refuses development values: "
                + "; ".join(problems)
                + ". Set them, or SESAME_ENV=development to try Sesame on this machine"
                " (`make run` writes it to .env)"
            )
        return self

    @property
    def broker_url(self) -> str:
        """Where the gateway connects: the external broker, or the embedded one."""
        return self.mqtt_url or f"mqtt://{self.mqtt_bind}"

    @property
    def device_broker_url(self) -> str:
        return self.mqtt_device_url or self.broker_url

    def new_ledger_origin(self) -> str:
        """The name a new log takes (it is stored with its key and never changes):
        SESAME_LEDGER_ORIGIN, or SESAME_PUBLIC_URL's host and path + "/ledger". Without
        either the log is not named after an address, which may not be the server's for
        long (a port chosen for one run), but gets a name of its own that names none."""
        if self.ledger_origin:
            return self.ledger_origin
        if self.public_url:
            host_and_path = self.public_url.split("://", 1)[-1].rstrip("/")
            return f"{host_and_path}/ledger"
        return f"sesame.invalid/{secrets.token_hex(6)}/ledger"

    @property
    def ledger_quorum(self) -> int:
        """How many witness cosignatures make a checkpoint the one to serve."""
        if self.ledger_witness_quorum is not None:
            return min(self.ledger_witness_quorum, len(self.ledger_witnesses))
        return len(self.ledger_witnesses) // 2 + 1 if self.ledger_witnesses else 0

    def egress_policy(self) -> EgressPolicy:
        """Where requests to user-supplied URLs (webhooks, Web Push) may go."""
        from sesame.kit.egress import EgressPolicy

        enforced = (
            self.env != "development"
            if self.notify_egress_check is None
            else (self.notify_egress_check)
        )
        return EgressPolicy.from_entries(
            self.notify_egress_allow,
            enforced=enforced,
            resolve_timeout_seconds=min(self.notify_timeout_seconds, 5.0),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings() -> Settings:
    """The settings of a server process: refused outside development mode while any
    built-in development value is left."""
    return Settings().require(*SERVER_NEEDS)
