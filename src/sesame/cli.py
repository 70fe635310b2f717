"""The ``sesame`` command: serve, migrate, create staff, seed the demo."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from uuid import UUID

import typer
from pydantic import ValidationError

from sesame.kit.errors import validation_message
from sesame.ledger.cli import ledger_app
from sesame.settings import SERVER_NEEDS, Need, Settings, SettingsRefused

if TYPE_CHECKING:
    from sesame.demo import DemoCredentials

app = typer.Typer(
    help="Sesame: open smart-access platform.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
staff_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
broker_app = typer.Typer(help="The MQTT broker devices connect to.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(staff_app, name="staff")
app.add_typer(broker_app, name="broker")
protocol_app = typer.Typer(help="The device protocol.", no_args_is_help=True)
app.add_typer(protocol_app, name="protocol")
app.add_typer(ledger_app, name="ledger")
secrets_app = typer.Typer(help="The master secret (SESAME_SECRET_KEY).", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


@protocol_app.command("docs")
def protocol_docs(
    path: Annotated[Path, typer.Option(help="The protocol document.")] = Path("docs/protocol.md"),
    check: Annotated[bool, typer.Option(help="Only check that it is current.")] = False,
) -> None:
    """Regenerate the message schemas and action tables in the protocol document."""
    from sesame.devices.protocol_doc import is_current, update

    if check:
        if not is_current(path):
            typer.echo(f"{path} is stale; run `sesame protocol docs`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{path} is current")
        return
    typer.echo(f"{path} {'updated' if update(path) else 'already current'}")


def _settings(*needs: Need, **overrides: object) -> Settings:
    """The settings, refused (exit 2, one line a problem) when malformed or when, outside
    development mode, one of ``needs`` is left at its development value."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        return settings.require(*needs) if needs else settings
    except ValidationError as exc:
        for error in exc.errors():
            location = ".".join(str(p) for p in error["loc"]) or "settings"
            typer.echo(f"configuration error: {location}: {validation_message(error)}", err=True)
        raise typer.Exit(2) from None
    except SettingsRefused as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _safe_url(url: str) -> str:
    """The database URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


async def _schema_is_current(settings: Settings) -> bool:
    from sesame.kit.db import create_engine
    from sesame.migrations import current_revision, head_revision

    engine = create_engine(settings.database_url, pool_size=1)
    try:
        return await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes.")] = None,
    simulate: Annotated[
        Path | None,
        typer.Option(
            help="Also run the simulated devices listed in this file (see `sesame demo`)."
        ),
    ] = None,
) -> None:
    """Serve the HTTP API, the device gateway and (by default) an embedded MQTT broker."""
    import os
    import subprocess

    from sesame.kit.metrics import prepare_multiprocess_dir

    if simulate is not None:
        os.environ["SESAME_SIMULATE_DEVICES_FILE"] = str(simulate)
    # The app reads its settings again in each server process: it must see these too
    # (its links and the ledger's name follow the address it serves on).
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"SESAME_{name}"] = str(value)
    settings = _settings(*SERVER_NEEDS, host=host, port=port, workers=workers)
    if not asyncio.run(_schema_is_current(settings)):
        typer.echo(
            f"the database at {_safe_url(settings.database_url)} is not at the latest schema; "
            "run `sesame db upgrade` first",
            err=True,
        )
        raise typer.Exit(1)
    broker: subprocess.Popen[bytes] | None = None
    if settings.workers > 1:
        prepare_multiprocess_dir(Path("var") / f"metrics-{settings.port}")
        if settings.gateway_enabled and settings.mqtt_url is None:
            # One broker for all workers: in a process of its own.
            broker = subprocess.Popen([sys.executable, "-m", "sesame", "broker", "run"])
            os.environ["SESAME_MQTT_URL"] = f"mqtt://{settings.mqtt_bind}"
            if simulate is not None:
                typer.echo("--simulate runs in one process only; use `sesame sim`", err=True)
                os.environ.pop("SESAME_SIMULATE_DEVICES_FILE")
    try:
        _run_uvicorn(settings)
    finally:
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(timeout=settings.shutdown_grace_seconds + 5)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()


@app.command()
def worker(
    count: Annotated[int, typer.Option(help="Workers in this process.")] = 1,
) -> None:
    """Run durable jobs (key activations and expiries, PIN codes, sweeps) and send
    notifications without serving HTTP. With an external broker (SESAME_MQTT_URL) it
    also joins the device gateway, so it can run jobs that command devices; without one
    it leaves those to `sesame serve`."""
    from sesame.kit.logging import configure_logging

    settings = _settings("secret")
    configure_logging(settings.log_level, settings.log_format)
    if not asyncio.run(_schema_is_current(settings)):
        typer.echo("the database is not at the latest schema; run `sesame db upgrade`", err=True)
        raise typer.Exit(1)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_work(settings, count))


async def _work(settings: Settings, count: int) -> None:
    import signal

    from sesame.devices.lifecycle import start_devices, stop_devices
    from sesame.jobs.install import start_workers, stop_workers
    from sesame.keys.install import install as install_keys
    from sesame.keys.install import install_jobs
    from sesame.kit.logging import get_logger
    from sesame.notifications.install import start_notifications, stop_notifications
    from sesame.runtime import build_runtime

    runtime = build_runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    install_keys(runtime)
    if settings.mqtt_url is not None and settings.gateway_enabled:
        await start_devices(runtime)
    await install_jobs(runtime)
    notifier = await start_notifications(runtime)
    task = start_workers(runtime, count)
    get_logger("sesame.worker").info("worker_started", workers=count)
    try:
        await stop.wait()
    finally:
        await stop_workers(task)
        await stop_notifications(notifier, runtime)
        await stop_devices(runtime)
        await runtime.close()


def _stopped_by_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _run_uvicorn(settings: Settings) -> None:
    """uvicorn, stopping on SIGTERM as on Ctrl-C: no new connections, the requests in
    flight finish (long polls answer at once, see ``sesame.app.drain``) for at most
    ``SESAME_SHUTDOWN_GRACE_SECONDS``, then the app's shutdown closes the workers, the
    gateway and the broker, and the process exits 0."""
    import signal

    import uvicorn

    # uvicorn handles SIGTERM itself, puts back the handler it found and raises the signal
    # again once it has stopped; with the default handler that kills the process (status
    # 143) after a clean stop. This one makes it a normal exit, also if SIGTERM comes
    # before uvicorn listens.
    signal.signal(signal.SIGTERM, _stopped_by_sigterm)
    uvicorn.run(
        "sesame.app:serve_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        # httptools, answering what it cannot parse in the one JSON error shape.
        http="sesame.api.http_protocol:JsonErrorsHttpToolsProtocol",
        log_config=None,
        access_log=False,
        # X-Forwarded-For is Sesame's to read, from SESAME_TRUSTED_PROXIES only: uvicorn
        # would otherwise believe it from any local peer.
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


@broker_app.command("run")
def broker_run() -> None:
    """Run the embedded broker alone (what `serve --workers N` does for its workers)."""
    from sesame.devices.lifecycle import embedded_broker
    from sesame.kit.logging import configure_logging
    from sesame.runtime import build_runtime

    settings = _settings("secret")
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        import signal

        runtime = build_runtime(settings)
        broker = embedded_broker(runtime)
        await broker.start()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await broker.stop()
            await runtime.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@broker_app.command("config")
def broker_config(
    output: Annotated[Path, typer.Option(help="Directory for mosquitto.conf, passwords, acl.")],
    listen: Annotated[str, typer.Option(help="The devices' listener.")] = "0.0.0.0:1883",
    gateway_listen: Annotated[
        str, typer.Option(help="The gateway's listener (SESAME_MQTT_URL); devices cannot sign in.")
    ] = "127.0.0.1:1884",
    tls_listen: Annotated[
        str | None, typer.Option(help="A TLS listener for devices, e.g. 0.0.0.0:8883.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain) of the TLS listener.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key of the TLS listener.")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            help="User Mosquitto switches to when started as root; it must read the 0600 "
            "password files. Default: the user running this command, who owns them."
        ),
    ] = None,
) -> None:
    """Write a Mosquitto configuration that enforces device credentials and topics."""
    import getpass

    from sesame.devices.broker import MosquittoConfig
    from sesame.devices.service import mosquitto_passwords
    from sesame.runtime import build_runtime

    settings = _settings("secret")
    if tls_listen and (tls_cert is None or tls_key is None):
        raise typer.BadParameter("--tls-listen needs --tls-cert and --tls-key")

    async def passwords() -> dict[str, str]:
        runtime = build_runtime(settings)
        try:
            async with runtime.read_session_factory() as session:
                return await mosquitto_passwords(session, runtime)
        finally:
            await runtime.close()

    found = asyncio.run(passwords())
    conf = MosquittoConfig(
        listener=listen,
        gateway_listener=gateway_listen,
        passwords=found,
        user=user or getpass.getuser(),
        tls_listener=tls_listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_packet_bytes=settings.mqtt_max_packet_bytes,
    ).write(output)
    typer.echo(
        f"wrote {conf} for {len(found) - 1} devices; run `mosquitto -c {conf}`; "
        f"set SESAME_MQTT_URL=mqtt://{gateway_listen} and SESAME_MQTT_DEVICE_URL to the "
        f"devices' address (port {listen.rpartition(':')[2]}); set "
        "SESAME_MOSQUITTO_CONFIG_DIR (and SESAME_MOSQUITTO_PID_FILE) to keep its "
        "passwords current"
    )


@app.command()
def sim(
    file: Annotated[
        Path,
        typer.Option(
            help="Devices to simulate (JSON): the file `sesame demo` writes "
            "(var/demo-devices.json), or answers of POST /v1/devices, a list or just one."
        ),
    ],
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 30.0,
    drop_results: Annotated[float, typer.Option(help="Probability a result is lost.")] = 0.0,
    result_delay: Annotated[float, typer.Option(help="Seconds before each result.")] = 0.0,
    duplicate_events: Annotated[
        float, typer.Option(help="Probability an event is sent twice.")
    ] = 0.0,
    clock_offset: Annotated[float, typer.Option(help="Seconds the clocks are off.")] = 0.0,
    disconnect_every: Annotated[
        float, typer.Option(help="Drop every connection this often (seconds; 0: never).")
    ] = 0.0,
    clock_drift_ppm: Annotated[float, typer.Option(help="How fast the clocks drift.")] = 0.0,
    provision: Annotated[
        int,
        typer.Option(
            help="First provision this many devices of each kind (see --kinds) "
            "through the API, adding them to FILE."
        ),
    ] = 0,
    api: Annotated[
        str | None,
        typer.Option(
            help="Sesame's URL, for --provision (default: SESAME_PUBLIC_URL, or "
            "SESAME_HOST and SESAME_PORT)."
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="A partner API key with devices:write, for --provision.")
    ] = None,
    site_id: Annotated[str | None, typer.Option(help="The site, for --provision.")] = None,
    kinds: Annotated[str, typer.Option(help="Kinds to provision, comma-separated.")] = (
        "entrance_reader,door_lock,doorbell,zwave_hub,elevator_agent"
    ),
) -> None:
    """Run simulated devices against any broker until interrupted. Needs only the broker
    (each device's URL is in FILE): no database, no server secret."""
    import json
    import random

    from sesame.kit.logging import configure_logging
    from sesame.settings import LocalSettings
    from sesame.simulators import (
        Faults,
        FleetFileError,
        provision_fleet,
        read_fleet,
        simulator,
        start_fleet,
    )

    try:
        local = LocalSettings()
    except ValidationError as exc:
        for error in exc.errors():
            location = ".".join(str(p) for p in error["loc"]) or "settings"
            typer.echo(f"configuration error: {location}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    configure_logging(local.log_level, local.log_format)
    faults = Faults(
        drop_results=drop_results,
        result_delay=result_delay,
        duplicate_events=duplicate_events,
        clock_offset=clock_offset,
        clock_drift_ppm=clock_drift_ppm,
    )
    if provision > 0:
        if not api_key or not site_id:
            typer.echo("--provision needs --api-key and --site-id", err=True)
            raise typer.Exit(2)
        try:
            known = read_fleet(file) if file.exists() else []
        except FleetFileError as exc:
            typer.echo(f"sesame sim: {exc}", err=True)
            raise typer.Exit(2) from None
        added = asyncio.run(
            provision_fleet(api or local.base_url, api_key, site_id, kinds.split(","), provision)
        )
        from sesame.demo import write_private

        write_private(file, json.dumps(known + added, indent=2) + "\n")
        typer.echo(f"provisioned {len(added)} devices into {file}")
    try:
        entries = read_fleet(file)
    except FleetFileError as exc:
        typer.echo(f"sesame sim: {exc}", err=True)
        raise typer.Exit(2) from None
    fleet = [
        simulator(
            e["kind"],
            e["device_id"],
            e["password"],
            e["url"],
            faults=faults,
            heartbeat_interval=heartbeat,
        )
        for e in entries
    ]

    async def run() -> None:
        try:
            try:
                await start_fleet(fleet)
            except OSError as exc:
                urls = ", ".join(sorted({e["url"] for e in entries}))
                detail = str(exc) or "not connected within 15 s; or it refuses these credentials"
                typer.echo(
                    f"sesame sim: cannot reach the broker at {urls} ({detail}); "
                    "is `sesame serve` (or your broker) running?",
                    err=True,
                )
                raise typer.Exit(1) from None
            typer.echo(f"{len(fleet)} simulated devices connected; Ctrl-C to stop")
            while True:
                if disconnect_every > 0:
                    await asyncio.sleep(disconnect_every)
                    for device in fleet:
                        if random.random() < 0.5:  # noqa: S311 - a storm, not security
                            await device.drop_connection()
                else:
                    await asyncio.Event().wait()
        finally:
            for device in fleet:
                await device.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to the latest schema (or REVISION)."""
    from sesame.migrations import upgrade

    settings = _settings()  # the schema needs no secret
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {_safe_url(settings.database_url)} upgraded to {revision}")


@staff_app.command("create")
def staff_create(
    email: Annotated[str, typer.Option(help="Sign-in email.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    role: Annotated[
        str, typer.Option(help="platform_admin, partner_admin, site_manager or installer.")
    ] = "platform_admin",
    partner_id: Annotated[UUID | None, typer.Option(help="Partner of partner staff.")] = None,
    site_id: Annotated[
        list[UUID] | None, typer.Option(help="Site of a site-scoped role; repeat for several.")
    ] = None,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Create a staff account; the password is prompted for (or read from stdin)."""
    from sesame.kit.errors import SesameError
    from sesame.kit.logging import configure_logging
    from sesame.staff.schemas import StaffCreate

    settings = _settings("secret", "passwords")
    configure_logging("warning", settings.log_format)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            typer.echo("passwords differ", err=True)
            raise typer.Exit(1)
    try:
        data = StaffCreate.model_validate(
            {
                "email": email,
                "name": name,
                "role": role,
                "password": password,
                "partner_id": partner_id,
                "site_ids": site_id or [],
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            typer.echo(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    try:
        staff_id = asyncio.run(_create_staff(settings, data))
    except SesameError as exc:
        typer.echo(f"{exc.type}: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {data.role.value} {data.email} ({staff_id})")


async def _create_staff(settings: Settings, data: object) -> str:
    from sesame.demo import PLATFORM
    from sesame.kit.db import write_intent
    from sesame.runtime import build_runtime
    from sesame.staff.service import StaffService

    runtime = build_runtime(settings)
    try:
        with write_intent():
            async with runtime.session_factory() as session:
                staff = await StaffService(session, PLATFORM, runtime).create(data)  # type: ignore[arg-type]
                await session.commit()
                return str(staff.id)
    finally:
        await runtime.close()


@secrets_app.command("rotate")
def secrets_rotate(
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per transaction.")] = 500,
) -> None:
    """Re-seal everything sealed under a previous secret with SESAME_SECRET_KEY.

    Safe while Sesame serves and safe to repeat; see docs/operations.md."""
    settings = _settings("secret")
    if not asyncio.run(_schema_is_current(settings)):
        typer.echo("the database is not at the latest schema; run `sesame db upgrade`", err=True)
        raise typer.Exit(1)
    unreadable = asyncio.run(_rotate(settings, batch_size))
    if unreadable:
        typer.echo(
            f"{unreadable} values are sealed under a secret not in the ring; put it back in "
            "SESAME_SECRET_KEYS_PREVIOUS and run this again",
            err=True,
        )
        raise typer.Exit(1)


async def _rotate(settings: Settings, batch_size: int) -> int:
    from sesame.runtime import build_runtime
    from sesame.sealing.service import TableRotation, rotate

    def show(report: TableRotation) -> None:
        typer.echo(
            f"{report.name}: {report.checked}/{report.total} checked, "
            f"{report.resealed} re-sealed"
            + (f", {report.unreadable} unreadable" if report.unreadable else "")
        )

    runtime = build_runtime(settings)
    try:
        typer.echo(f"re-sealing under key {runtime.keys.ring.current_id}")
        reports = await rotate(runtime, batch_size=batch_size, progress=show)
    finally:
        await runtime.close()
    typer.echo(f"done: {sum(r.resealed for r in reports)} values re-sealed")
    return sum(r.unreadable for r in reports)


@app.command()
def demo(
    reset: Annotated[
        bool,
        typer.Option(help="New passwords, API key and device credentials; the old ones stop."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the credentials as JSON.")] = False,
) -> None:
    """Seed the demo complex (what is missing of it) and print how to reach it. The
    credentials stay the same from run to run, kept in var/demo-credentials.json."""
    import json

    from sesame.demo import seed_demo
    from sesame.kit.logging import configure_logging
    from sesame.runtime import build_runtime

    settings = _settings("secret", "passwords")
    configure_logging("warning", settings.log_format)

    async def run() -> DemoCredentials:
        runtime = build_runtime(settings)
        try:
            return await seed_demo(runtime, reset=reset)
        finally:
            await runtime.close()

    credentials = asyncio.run(run())
    remembered = _remember_development_mode(settings)
    summary = _demo_summary(settings, credentials)
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        typer.echo(_demo_text(summary))
    if remembered:
        typer.echo(remembered, err=True)


ENV_FILE = Path(".env")


def _remember_development_mode(settings: Settings) -> str | None:
    """In development mode, write SESAME_ENV=development to ./.env when it has none, so
    that every ``sesame`` command typed in this folder works on the demo's data (sealed
    with the development secret) as ``make run`` does. Returns what to tell the user."""
    import re

    if settings.env != "development":
        return None
    try:
        existing = ENV_FILE.read_text(encoding="utf-8") if ENV_FILE.exists() else None
    except OSError:
        return None
    if existing is None:
        ENV_FILE.write_text(
            "# Written by `sesame demo`: sesame commands in this folder run in development\n"
            "# mode, as `make run` does. Remove it before using this folder for anything real.\n"
            "SESAME_ENV=development\n",
            encoding="utf-8",
        )
        return "wrote .env (SESAME_ENV=development) for the sesame commands typed here"
    if re.search(r"^\s*(export\s+)?SESAME_ENV\s*=", existing, re.MULTILINE):
        return None
    return "add SESAME_ENV=development to .env to run sesame commands here on the demo's data"


def _demo_summary(settings: Settings, credentials: DemoCredentials) -> dict[str, Any]:
    from sesame.demo import CREDENTIALS_FILE, DEVICES_FILE

    url = settings.base_url
    open_url = f"{url}/v1/entrances/{credentials.open_entrance_id}/open?wait=5"
    return {
        "url": url,
        "docs": f"{url}/docs",
        "health": f"{url}/healthz",
        "partner_id": credentials.partner_id,
        "site_id": credentials.site_id,
        "counts": credentials.counts,
        "staff": [
            {"email": email, "role": credentials.roles[email], "password": password}
            for email, password in credentials.passwords.items()
        ],
        "api_key": credentials.api_key,
        "residents": [{"phone": phone, "name": name} for phone, name in credentials.residents],
        "sms_codes_on_console": settings.sms_backend == "console",
        "devices": [
            {"device_id": d["device_id"], "kind": d["kind"], "name": d["name"]}
            for d in credentials.devices
        ],
        "devices_file": str(DEVICES_FILE),
        "credentials_file": str(CREDENTIALS_FILE),
        "open_entrance": {
            "entrance_id": credentials.open_entrance_id,
            "url": open_url,
            "curl": f'curl -X POST -H "Authorization: Bearer {credentials.api_key}" "{open_url}"',
        },
    }


ROLE_NOTES = {
    "platform_admin": "platform administrator: every partner, /v1/jobs",
    "partner_admin": "partner administrator",
    "site_manager": "site manager",
    "installer": "installer",
}


def _demo_text(summary: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {what}" for what, n in summary["counts"].items())
    width = max(len(s["email"]) for s in summary["staff"])
    return "\n".join(
        [
            "",
            "Sesame demo is ready.",
            f"  API docs:      {summary['docs']}",
            f"  Health:        {summary['health']}",
            f"  Partner:       {summary['partner_id']}",
            f"  Site:          {summary['site_id']}  ({counts})",
            '  Staff sign-in: POST /v1/auth/login {"email", "password"}',
            *(
                f"    {s['email']:<{width}}  {s['password']}  ({ROLE_NOTES[s['role']]})"
                for s in summary["staff"]
            ),
            f"  Partner API key (Authorization: Bearer ...): {summary['api_key']}",
            '  Residents sign in by phone: POST /v1/auth/codes {"phone"}, then '
            "/v1/auth/codes/verify with the code"
            + (" printed on the server's console" if summary["sms_codes_on_console"] else ""),
            *(f"    {r['phone']}  {r['name']}" for r in summary["residents"]),
            f"  Simulated devices ({len(summary['devices'])}, credentials in "
            f"{summary['devices_file']}); `make run` starts them. Open the 101동 entrance:",
            f"    {summary['open_entrance']['curl']}",
            f"  These stay the same from run to run ({summary['credentials_file']});"
            " `sesame demo --reset` makes new ones.",
            "",
        ]
    )


def main() -> None:
    """``sesame``: bad input or a failure is one line on stderr and a non-zero exit, never
    a traceback (SESAME_TRACEBACK=1 shows it, for a bug report)."""
    import os

    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # the command line's own: a usage error, a bad value
        ctx = getattr(exc, "ctx", None)
        exit_code = int(getattr(exc, "exit_code", 1))
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help, shown already
            sys.exit(exit_code)
        message = " ".join(exc.format_message().split())
        if ctx is None:
            _fail(f"sesame: {message}", exit_code)
        _fail(f"{ctx.command_path}: {message} (see `{ctx.command_path} --help`)", exit_code)
    except typer.Abort:
        _fail("sesame: aborted", 1)
    except Exception as exc:
        if os.environ.get("SESAME_TRACEBACK"):
            raise
        _fail(f"sesame: {_one_line(exc)}", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or "failed"
    return f"{type(exc).__name__}: {message}" if not isinstance(exc, OSError) else message


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(message, err=True)
    sys.exit(code or 1)
