"""Settings: sensible defaults, production refuses the built-in secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sesame.settings import DEVELOPMENT_SECRET_KEY, Settings, SettingsRefused


def test_development_defaults_work_out_of_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SESAME_DATABASE_URL", "SESAME_SECRET_KEY", "SESAME_ENV"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(env="development", _env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite+aiosqlite:///./var/sesame.db"
    assert settings.default_time_zone == "Asia/Seoul"
    assert settings.is_sqlite


def test_production_refuses_the_development_secret() -> None:
    settings = Settings(
        env="production", sms_backend="http", sms_http_url="http://sms.test", _env_file=None
    )  # type: ignore[call-arg]
    with pytest.raises(SettingsRefused) as error:
        settings.require()
    assert "SESAME_SECRET_KEY" in str(error.value)
    assert "SESAME_ENV is production," in str(error.value)


def test_production_refuses_the_console_sms_sender() -> None:
    settings = Settings(env="production", secret_key="x" * 40, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(SettingsRefused) as error:
        settings.require("secret", "sms")
    assert "SESAME_SMS_BACKEND" in str(error.value)
    # A command that sends no codes does not care.
    assert settings.require("secret", "passwords") is settings


def test_the_refusal_names_the_mode_in_force_and_how_to_leave_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unset, SESAME_ENV means production: the message must not read as if
    SESAME_ENV=development were the current mode."""
    monkeypatch.delenv("SESAME_ENV", raising=False)
    with pytest.raises(SettingsRefused) as error:
        Settings(_env_file=None).require("secret")  # type: ignore[call-arg]
    message = str(error.value)
    assert message.startswith("SESAME_ENV is not set, so this is production mode")
    assert "SESAME_ENV=development to try Sesame on this machine" in message
    assert "\n" not in message
    # Development mode refuses nothing.
    assert Settings(env="development", _env_file=None).refusals() == []  # type: ignore[call-arg]


def test_production_starts_with_real_secrets() -> None:
    settings = Settings(
        env="production",
        secret_key="x" * 40,
        sms_backend="http",
        sms_http_url="http://sms.test",
        _env_file=None,
    ).require()  # type: ignore[call-arg]
    assert settings.secret_key.get_secret_value() not in repr(settings)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"port": 8101}, "http://127.0.0.1:8101"),
        ({"host": "0.0.0.0", "port": 8101}, "http://127.0.0.1:8101"),  # noqa: S104
        ({"host": "::1", "port": 9000}, "http://[::1]:9000"),
        ({"host": "sesame.internal", "port": 80}, "http://sesame.internal:80"),
        ({"port": 8101, "public_url": "https://sesame.example/"}, "https://sesame.example"),
    ],
)
def test_the_public_url_follows_host_and_port_unless_set(
    values: dict[str, object], expected: str
) -> None:
    assert Settings(env="development", _env_file=None, **values).base_url == expected  # type: ignore[arg-type]


def test_a_new_log_is_named_after_an_address_only_when_one_is_configured() -> None:
    """The origin is fixed for good at the log's first start: it may follow
    SESAME_LEDGER_ORIGIN or SESAME_PUBLIC_URL, never the port of one run."""
    local = Settings(env="development", port=8101, _env_file=None)  # type: ignore[call-arg]
    first, second = local.new_ledger_origin(), local.new_ledger_origin()
    assert first.startswith("sesame.invalid/")
    assert first.endswith("/ledger")
    assert first != second  # a name of its own for each log
    assert "127.0.0.1" not in first
    assert "8101" not in first
    public = Settings(env="development", public_url="https://s.example/a/", _env_file=None)  # type: ignore[call-arg]
    assert public.new_ledger_origin() == "s.example/a/ledger"
    named = Settings(env="development", ledger_origin="log.example", _env_file=None)  # type: ignore[call-arg]
    assert named.new_ledger_origin() == "log.example"


@pytest.mark.parametrize(("time_cost", "memory_kib"), [(1, 65_536), (3, 8_192)])
def test_production_refuses_cheap_password_hashing(time_cost: int, memory_kib: int) -> None:
    with pytest.raises(SettingsRefused) as error:
        Settings(
            env="production",
            secret_key="x" * 40,
            sms_backend="http",
            sms_http_url="http://sms.test",
            password_time_cost=time_cost,
            password_memory_kib=memory_kib,
            _env_file=None,
        ).require("passwords")  # type: ignore[call-arg]
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
    with pytest.raises(SettingsRefused) as error:
        Settings(
            env="production",
            secret_key="x" * 40,
            secret_keys_previous=[previous],
            sms_backend="http",
            sms_http_url="http://sms.test",
            _env_file=None,
        ).require("secret")  # type: ignore[call-arg]
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
