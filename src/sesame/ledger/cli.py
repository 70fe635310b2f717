"""``sesame ledger ...``: verify, audit, export tiles, run a witness, show the log's key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from sesame.ledger.note import NoteError, Verifier

ledger_app = typer.Typer(help="The tamper-evident ledger of key events.", no_args_is_help=True)

LogKey = Annotated[str, typer.Option("--log-key", help="The log's verifier key (vkey).")]
Witnesses = Annotated[
    list[str] | None,
    typer.Option("--witness", help="A witness's verifier key (repeatable)."),
]
Quorum = Annotated[
    int | None, typer.Option(help="Cosignatures required (default: a majority of --witness).")
]
Token = Annotated[
    str | None,
    typer.Option(envvar="SESAME_LEDGER_TOKEN", help="A bearer token, if the log needs one."),
]


def _trust(log_key: str, witnesses: list[str] | None, quorum: int | None) -> Any:
    from sesame.ledger.outsider import Trust

    try:
        witness_keys = [Verifier.parse(w) for w in witnesses or []]
        default = len(witness_keys) // 2 + 1 if witness_keys else 0
        return Trust(Verifier.parse(log_key), witness_keys, default if quorum is None else quorum)
    except NoteError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _progress(label: str) -> Any:
    def show(done: int) -> None:
        if done % 50_000 < 1000:
            typer.echo(f"{label}: {done:,}", err=True)

    return show


@ledger_app.command("verify")
def verify_command(
    log_key: LogKey,
    url: Annotated[str | None, typer.Option(help="The Sesame server, e.g. https://…")] = None,
    witness: Witnesses = None,
    quorum: Quorum = None,
    state: Annotated[
        Path | None,
        typer.Option(help="Where to remember the last checkpoint accepted (for consistency)."),
    ] = None,
    entry: Annotated[
        list[int] | None, typer.Option("--entry", help="Check this entry's inclusion.")
    ] = None,
    receipt: Annotated[
        list[Path] | None,
        typer.Option("--receipt", help="A receipts file from /v1/keys/{id}/receipts."),
    ] = None,
    token: Token = None,
) -> None:
    """Check the log's checkpoint, its consistency with the last one you accepted, and the
    inclusion of entries or receipts. Exits 1 on any failure."""
    from sesame.ledger.outsider import LogClient, VerificationFailed, verify

    trust = _trust(log_key, witness, quorum)
    client = LogClient(url, token) if url else None
    documents = [json.loads(p.read_text()) for p in receipt or []]
    try:
        result = verify(client, trust, state=state, indexes=list(entry or []), receipts=documents)
    except (VerificationFailed, NoteError) as exc:
        typer.echo(f"FAILED: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        if client is not None:
            client.close()
    if client is not None:
        checkpoint = result.checkpoint
        since = (
            f", consistent with the {result.previous_size} you accepted before"
            if result.previous_size is not None
            else ""
        )
        typer.echo(
            f"checkpoint of {checkpoint.size} entries verified ({trust.quorum} cosignatures"
            f" required){since}"
        )
    for index in result.entries:
        typer.echo(f"entry {index} is included")
    if documents:
        typer.echo(f"{result.receipts} receipts verified")


@ledger_app.command("audit")
def audit_command(
    log_key: LogKey,
    url: Annotated[str | None, typer.Option(help="Audit a running server's log.")] = None,
    tiles: Annotated[
        Path | None, typer.Option(help="Or audit exported tiles in this directory.")
    ] = None,
    witness: Witnesses = None,
    quorum: Quorum = None,
    signatures: Annotated[
        bool, typer.Option(help="Also check every entry's own signature (slower).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    token: Token = None,
) -> None:
    """Download every entry, recompute the root, replay every key's life; list violations.
    Exits 1 if the log does not match its checkpoint or any rule is broken."""
    import time

    from sesame.ledger.outsider import LogClient, VerificationFailed, audit_remote, audit_tiles

    if (url is None) == (tiles is None):
        raise typer.BadParameter("give --url or --tiles")
    trust = _trust(log_key, witness, quorum)
    started = time.perf_counter()
    try:
        if url is not None:
            client = LogClient(url, token)
            try:
                checkpoint, report = audit_remote(
                    client, trust, signatures=signatures, progress=_progress("entries")
                )
            finally:
                client.close()
        else:
            assert tiles is not None
            checkpoint, report = audit_tiles(tiles, trust, signatures=signatures)
    except (VerificationFailed, NoteError) as exc:
        typer.echo(f"FAILED: {exc}", err=True)
        raise typer.Exit(1) from exc
    elapsed = time.perf_counter() - started
    if as_json:
        typer.echo(json.dumps({**report.as_dict(), "seconds": round(elapsed, 2)}, indent=2))
    else:
        typer.echo(
            f"{report.size:,} entries, {report.keys:,} keys replayed in {elapsed:.1f} s; root"
            f" {'matches' if report.root_ok else 'DOES NOT MATCH'} the checkpoint of"
            f" {checkpoint.size}"
        )
        for violation in report.violations:
            typer.echo(
                f"  entry {violation.index}: {violation.kind} {violation.subject or ''}"
                f" — {violation.detail}"
            )
        if report.ok:
            typer.echo("no violations")
    if not report.ok:
        raise typer.Exit(1)


@ledger_app.command("export-tiles")
def export_tiles(
    directory: Annotated[Path, typer.Argument(help="Where to write the static files.")],
) -> None:
    """Write the log as C2SP tlog-tiles static files, up to the served checkpoint; run it
    again to add what is new. Serve the directory with any web server."""
    from sesame.cli import _settings

    summary = asyncio.run(_export(_settings("secret"), directory))
    typer.echo(
        f"exported {summary.size:,} entries to {directory}"
        f" ({summary.written} files written, {summary.unchanged} unchanged)"
    )


async def _export(settings: Any, directory: Path) -> Any:
    from sesame.ledger import tiles
    from sesame.ledger.repository import LedgerRepository
    from sesame.ledger.service import Ledger
    from sesame.runtime import build_runtime

    runtime = build_runtime(settings)
    try:
        ledger = Ledger(runtime)
        note = await ledger.served_checkpoint()
        if note is None:
            typer.echo(
                "sesame ledger export-tiles: the log has no checkpoint yet; `sesame serve` "
                "signs one once a key event is logged",
                err=True,
            )
            raise typer.Exit(1)
        from sesame.ledger.note import Checkpoint, parse

        size = Checkpoint.parse(parse(note).text).size
        loop = asyncio.get_running_loop()

        async def page(start: int) -> list[bytes]:
            async with runtime.read_session_factory() as session:
                rows = await LedgerRepository(session).entries(start, min(size, start + 5000))
            return [r.body for r in rows]

        def bodies() -> Iterator[bytes]:
            start = 0
            while start < size:
                batch = asyncio.run_coroutine_threadsafe(page(start), loop).result()
                if not batch:
                    raise RuntimeError(f"entry {start} is missing from the database")
                yield from batch
                start += len(batch)

        return await asyncio.to_thread(
            tiles.export, directory, bodies(), size, note, progress=_progress("exported")
        )
    finally:
        await runtime.close()


@ledger_app.command("info")
def info() -> None:
    """The log's origin and verifier key (give it to whoever verifies)."""
    from sesame.cli import _settings
    from sesame.ledger.service import Ledger
    from sesame.runtime import build_runtime

    settings = _settings("secret")

    async def show() -> None:
        runtime = build_runtime(settings)
        try:
            published = await Ledger(runtime).published()
            typer.echo(f"origin  {published.origin}\nlog key {published.verifier.vkey}")
        finally:
            await runtime.close()

    asyncio.run(show())


@ledger_app.command("witness")
def witness_command(
    name: Annotated[str, typer.Option(help="The witness's key name, e.g. witness.example/w1.")],
    key_file: Annotated[
        Path, typer.Option(help="Its private key; created (mode 0600) if missing.")
    ],
    log: Annotated[list[str], typer.Option("--log", help="A log's verifier key (repeatable).")],
    state: Annotated[Path, typer.Option(help="SQLite file of the checkpoints cosigned.")] = Path(
        "witness.db"
    ),
    host: str = "127.0.0.1",
    port: int = 8101,
) -> None:
    """Run a C2SP tlog-witness: cosign a log's checkpoints that are consistent with the last
    one it cosigned, never a rollback or a fork. Prints its verifier key on stdout; logs
    go to stderr."""
    import sys

    from sesame.kit.logging import configure_logging
    from sesame.ledger.witness import serve

    configure_logging("info", "console", stream=sys.stderr)
    serve(name, key_file, log, state, host, port)
