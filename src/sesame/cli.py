"""The ``sesame`` command: serve, migrate, create staff, seed the demo."""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from pydantic import ValidationError

from sesame.settings import Settings

app = typer.Typer(
    help="Sesame: open smart-access platform.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
staff_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(staff_app, name="staff")


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            location = ".".join(str(p) for p in error["loc"]) or "settings"
            typer.echo(f"configuration error: {location}: {error['msg']}", err=True)
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
) -> None:
    """Serve the HTTP API (and, as later features arrive, the gateway and workers)."""
    import uvicorn

    from sesame.kit.metrics import prepare_multiprocess_dir

    settings = _settings(host=host, port=port, workers=workers)
    if not asyncio.run(_schema_is_current(settings)):
        typer.echo(
            f"the database at {_safe_url(settings.database_url)} is not at the latest schema; "
            "run `sesame db upgrade` first",
            err=True,
        )
        raise typer.Exit(1)
    if settings.workers > 1:
        prepare_multiprocess_dir(Path("var") / f"metrics-{settings.port}")
    uvicorn.run(
        "sesame.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to the latest schema (or REVISION)."""
    from sesame.migrations import upgrade

    settings = _settings()
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

    settings = _settings()
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


@app.command()
def demo() -> None:
    """Seed (or refresh) the demo complex and print how to reach it."""
    from sesame.demo import DemoCredentials, seed_demo
    from sesame.kit.logging import configure_logging
    from sesame.runtime import build_runtime

    settings = _settings()
    configure_logging("warning", settings.log_format)

    async def run() -> DemoCredentials:
        runtime = build_runtime(settings)
        try:
            return await seed_demo(runtime)
        finally:
            await runtime.close()

    credentials = asyncio.run(run())
    url = settings.public_url.rstrip("/")
    typer.echo(
        "\n".join(
            [
                "",
                "Sesame demo is ready.",
                f"  API docs:      {url}/docs",
                f"  Health:        {url}/healthz",
                f"  Partner:       {credentials.partner_id}",
                f"  Site:          {credentials.site_id}  ({credentials.counts})",
                '  Staff sign-in: POST /v1/auth/login {"email", "password"}',
                *(f"    {email}  {password}" for email, password in credentials.passwords.items()),
                f"  Partner API key (Authorization: Bearer ...): {credentials.api_key}",
                '  Residents sign in by phone: POST /v1/auth/codes {"phone"}, then '
                "/v1/auth/codes/verify with the code"
                + (" printed on the server's console" if settings.sms_backend == "console" else ""),
                *(f"    {phone}  {name}" for phone, name in credentials.residents),
                "",
            ]
        )
    )


def main() -> None:
    app()
