"""Settings: sensible defaults, production refuses the built-in secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sesame.settings import DEVELOPMENT_SECRET_KEY, Settings


def test_development_defaults_work_out_of_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SESAME_DATABASE_URL", "SESAME_SECRET_KEY", "SESAME_ENV"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(env="development", _env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite+aiosqlite:///./var/sesame.db"
    assert settings.default_time_zone == "Asia/Seoul"
    assert settings.is_sqlite


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(ValidationError) as error:
        Settings(
            env="production", sms_backend="http", sms_http_url="http://sms.test", _env_file=None
        )  # type: ignore[call-arg]
    assert "SESAME_SECRET_KEY" in str(error.value)


def test_production_refuses_the_console_sms_sender() -> None:
    with pytest.raises(ValidationError) as error:
        Settings(env="production", secret_key="x" * 40, _env_file=None)  # type: ignore[call-arg]
    assert "SESAME_SMS_BACKEND" in str(error.value)


def test_production_starts_with_real_secrets() -> None:
    settings = Settings(
        env="production",
        secret_key="x" * 40,
        sms_backend="http",
        sms_http_url="http://sms.test",
        _env_file=None,
    )  # type: ignore[call-arg]
    assert settings.secret_key.get_secret_value() not in repr(settings)


@pytest.mark.parametrize(("time_cost", "memory_kib"), [(1, 65_536), (3, 8_192)])
def test_production_refuses_cheap_password_hashing(time_cost: int, memory_kib: int) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(
            env="production",
            secret_key="x" * 40,
            sms_backend="http",
            sms_http_url="http://sms.test",
            password_time_cost=time_cost,
            password_memory_kib=memory_kib,
            _env_file=None,
        )  # type: ignore[call-arg]
    assert "SESAME_PASSWORD_TIME_COST" in str(error.value)
    # The defaults are RFC 9106's second recommendation: 3 passes over 64 MiB.
    defaults = Settings(env="development", _env_file=None)  # type: ignore[call-arg]
    assert (defaults.password_time_cost, defaults.password_memory_kib) == (3, 65_536)


def test_plain_database_urls_get_the_async_driver() -> None:
    pg = Settings(env="development", database_url="postgresql://u@db:5432/sesame", _env_file=None)  # type: ignore[call-arg]
    assert pg.database_url == "postgresql+asyncpg://u@db:5432/sesame"
    lite = Settings(env="development", database_url="sqlite:///data/s.db", _env_file=None)  # type: ignore[call-arg]
    assert lite.database_url == "sqlite+aiosqlite:///data/s.db"
    with pytest.raises(ValidationError):
        Settings(env="development", database_url="mysql://x", _env_file=None)  # type: ignore[call-arg]


def test_unknown_default_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(env="development", default_time_zone="Nowhere/City", _env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '["an-older-secret-of-at-least-32-characters", "an-even-older-one-of-32-characters"]',
            ["an-older-secret-of-at-least-32-characters", "an-even-older-one-of-32-characters"],
        ),
        (
            "an-older-secret-of-at-least-32-characters",
            ["an-older-secret-of-at-least-32-characters"],
        ),
        ("", []),
    ],
)
def test_previous_secrets_are_a_json_list_or_one_secret(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("SESAME_SECRET_KEYS_PREVIOUS", value)
    settings = Settings(env="development", _env_file=None)  # type: ignore[call-arg]
    assert [p.get_secret_value() for p in settings.secret_keys_previous] == expected
    assert expected == [] or expected[0] not in repr(settings)


@pytest.mark.parametrize("previous", [DEVELOPMENT_SECRET_KEY, "short-secret"])
def test_production_refuses_a_public_or_weak_previous_secret(previous: str) -> None:
    """A previous secret still verifies tokens, so it must be as strong as the current."""
    with pytest.raises(ValidationError) as error:
        Settings(
            env="production",
            secret_key="x" * 40,
            secret_keys_previous=[previous],
            sms_backend="http",
            sms_http_url="http://sms.test",
            _env_file=None,
        )  # type: ignore[call-arg]
    assert "SESAME_SECRET_KEYS_PREVIOUS" in str(error.value)


def test_the_egress_check_is_on_outside_development_and_reads_an_allow_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Production checks by default; the allow-list is a comma-separated variable."""
    production = {"secret_key": "x" * 40, "sms_backend": "http", "sms_http_url": "http://s.test"}
    assert Settings(env="production", **production, _env_file=None).egress_policy().enforced  # type: ignore[arg-type]
    assert not Settings(env="development", _env_file=None).egress_policy().enforced  # type: ignore[call-arg]
    monkeypatch.setenv("SESAME_NOTIFY_EGRESS_CHECK", "true")
    monkeypatch.setenv("SESAME_NOTIFY_EGRESS_ALLOW", "10.20.0.0/16, hooks.internal")
    policy = Settings(env="development", _env_file=None).egress_policy()  # type: ignore[call-arg]
    assert policy.enforced
    assert policy.allows_host("10.20.1.2")
    assert policy.allows_host("hooks.internal")
    monkeypatch.setenv("SESAME_NOTIFY_EGRESS_ALLOW", "10.0.0.0/8,not a host")
    with pytest.raises(ValidationError, match="not a CIDR"):
        Settings(env="development", _env_file=None)  # type: ignore[call-arg]
