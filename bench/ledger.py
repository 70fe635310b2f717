"""The ledger: how fast it appends, proves, is audited and gets cosigned.

1. Durable appends: ledger events waiting in the outbox are appended by the sequencer
   (``Ledger.append_batch``: sign, hash, store entries, full nodes and the cursor in one
   transaction per batch) — on SQLite and on PostgreSQL. In the same run, the ceiling: the
   bare rate of SQLite inserting rows of the same size in batches of the same size, with
   the same pragmas (WAL, ``synchronous=NORMAL``) and nothing else.
2. Inclusion proofs generated (from the in-memory full nodes) and verified, per second,
   on a tree of 1,000,000 entries.
3. Audit of 1,000,000 entries: a realistic log (keys issued, used many times, revoked;
   devices; credentials) exported as tlog-tiles, then ``sesame ledger audit --tiles``'s
   work — read every tile, recompute the root, replay every key's life — timed.
4. Append → cosigned checkpoint: a real ``sesame serve`` with two real witnesses; keys
   issued over HTTP at a steady rate; for each, the time from the API's answer to the
   first served checkpoint (with its quorum of cosignatures) that covers its entry.

Last line: one JSON object with ``appends_per_s`` (SQLite), ``appends_per_s_postgresql``,
``bare_insert_per_s``, ``proofs_generated_per_s``, ``proofs_verified_per_s``,
``audit_1m_s``, ``checkpoint_p50_s``, ``checkpoint_p99_s``.

Usage: ``python bench/ledger.py [--appends 20000] [--audit-entries 1000000]
[--events 300] [--rate 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

from harness import (
    _create_pg_database,
    _drop_pg_database,
    free_port,
    percentile,
    record,
    run,
    spawn,
    stack,
    step,
)
from sesame.kit.logging import configure_logging
from sesame.ledger import entries, merkle, tiles
from sesame.ledger.note import Checkpoint, Signer, sign_checkpoint
from sesame.settings import Settings

BATCH = int(Settings.model_fields["ledger_batch_size"].default)  # the default batch


# -- 1. appends ----------------------------------------------------------------------------


def sample_body(index: int) -> bytes:
    """An entry of the usual size: a key used at an entrance."""
    return entries.canonical(
        {
            "v": 1,
            "index": index,
            "type": "key.used",
            "at": "2026-11-27T09:41:03.512345Z",
            "partner": str(uuid.uuid4()),
            "site": str(uuid.uuid4()),
            "subject": {"key": str(uuid.uuid4())},
            "actor": {"kind": "device", "id": str(uuid.uuid4())},
            "data": {"method": "mobile", "device_id": str(uuid.uuid4()), "result": "granted"},
            "sig": {"kid": "01234567", "ed25519": base64.b64encode(os.urandom(64)).decode()},
        }
    )


def bare_insert_rate(rows: int) -> float:
    """SQLite alone: rows and indexes like the ledger's entries, ``BATCH`` per transaction."""
    with tempfile.TemporaryDirectory() as directory:
        db = sqlite3.connect(Path(directory) / "bare.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE entries (idx INTEGER PRIMARY KEY, outbox_id INTEGER UNIQUE,"
            " topic TEXT, subject_id TEXT, leaf_hash BLOB UNIQUE, body BLOB, appended_at TEXT)"
        )
        db.execute("CREATE INDEX entries_subject ON entries (subject_id, idx)")  # as Sesame's
        bodies = [sample_body(i) for i in range(rows)]
        started = time.perf_counter()
        for start in range(0, rows, BATCH):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i,
                        i + 1,
                        "key.used",
                        str(uuid.uuid4()),
                        merkle.leaf_hash(bodies[i]),
                        bodies[i],
                        "2026-11-27 09:41:03",
                    )
                    for i in range(start, min(rows, start + BATCH))
                ],
            )
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        db.close()
    return rows / elapsed


async def sesame_append_rate(
    database: str, events: int, sealed: bool = True
) -> tuple[float, float]:
    """The sequencer appending ``events`` outbox events, batch after batch; and the time
    (µs per event) the committing transactions spent signing them. ``sealed`` False: the
    events come from processes without the ledger and the sequencer signs them too."""
    from sesame.kit.db import write_intent
    from sesame.ledger.service import Ledger
    from sesame.migrations import upgrade
    from sesame.outbox import repository as outbox
    from sesame.runtime import build_runtime

    directory = tempfile.mkdtemp(prefix="sesame-ledger-bench-")
    url = (
        f"sqlite+aiosqlite:///{directory}/ledger.db"
        if database == "sqlite"
        else await _create_pg_database()
    )
    try:
        await asyncio.to_thread(upgrade, url)
        settings = Settings(
            env="development",
            database_url=url,
            secret_key="bench-secret-key-with-at-least-32-characters!",
            gateway_enabled=False,
            log_level="warning",
        )  # type: ignore[call-arg]
        runtime = build_runtime(settings)
        try:
            ledger = Ledger(runtime)
            await ledger.signer()
            signing = 0.0

            def seal(row: dict[str, Any]) -> None:
                nonlocal signing
                started = time.perf_counter()
                ledger.seal_row(row)
                signing += time.perf_counter() - started

            if sealed:
                outbox.set_sealer(runtime.engine, seal)
            for start in range(0, events, 1000):  # what the key operations left in the outbox
                with write_intent():
                    async with runtime.session_factory() as session:
                        await outbox.append(
                            session,
                            [
                                outbox.message(
                                    "key.used",
                                    partner_id=None,
                                    aggregate_id=uuid.uuid4(),
                                    site_id=str(uuid.uuid4()),
                                    method="mobile",
                                    device_id=str(uuid.uuid4()),
                                    result="granted",
                                    actor={"kind": "device", "id": str(uuid.uuid4())},
                                )
                                for _ in range(min(1000, events - start))
                            ],
                        )
                        await session.commit()
            outbox.set_sealer(runtime.engine, None)
            started = time.perf_counter()
            appended = 0
            while (count := await ledger.append_batch()) > 0:
                appended += count
            elapsed = time.perf_counter() - started
            assert appended == events, (appended, events)
        finally:
            await runtime.close()
    finally:
        if database == "postgresql":
            await _drop_pg_database(url)
    return appended / elapsed, signing / events * 1e6


# -- 2 and 3. a log of a million entries ---------------------------------------------------


def _entries_chunk(seed: bytes, start: int, count: int) -> list[bytes]:
    """Entries ``start .. start+count`` of a synthetic but rule-abiding log: staff issue
    courier keys, which are used a few times at an entrance and then revoked."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = Signer("bench.sesame.example/ledger", Ed25519PrivateKey.from_private_bytes(seed))
    partner = uuid.UUID(int=1)
    staff = {"kind": "staff", "id": str(uuid.UUID(int=2)), "role": "partner_admin"}
    device = {"kind": "device", "id": str(uuid.UUID(int=3))}
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    bodies = []
    for index in range(start, start + count):
        life, step = divmod(index, 8)  # per key: issued, credential, 5 uses, revoked
        key = uuid.UUID(int=10_000 + life)
        topic, actor, data = "key.used", device, {"device_id": device["id"], "method": "mobile"}
        if step == 0:
            topic, actor = "key.issued", staff
            data = {"kind": "courier", "person_id": str(uuid.UUID(int=life)), "max_uses": None}
        elif step == 1:
            topic, actor, data = "credential.issued", staff, {"key_id": str(key)}
        elif step == 7:
            topic, actor, data = "key.revoked", staff, {"reason": "delivered"}
        entry = entries.build(
            topic=topic,
            at=origin + timedelta(milliseconds=index),
            partner_id=partner,
            aggregate_id=key,
            payload={"actor": actor, "site_id": str(uuid.UUID(int=4)), **data},
        )
        bodies.append(entries.seal(entry, index, entries.sign(entry, signer), signer.verifier))
    return bodies


def synthetic_log(count: int, seed: bytes) -> list[bytes]:
    chunk = 50_000
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        parts = pool.map(
            _entries_chunk,
            [seed] * ((count + chunk - 1) // chunk),
            range(0, count, chunk),
            [min(chunk, count - s) for s in range(0, count, chunk)],
        )
        return [body for part in parts for body in part]


def proof_rates(tree: merkle.Tree, rounds: int) -> tuple[float, float]:
    size = tree.size
    rng = random.Random(7)
    indexes = [rng.randrange(size) for _ in range(rounds)]
    started = time.perf_counter()
    proofs = [tree.inclusion_proof(i, size) for i in indexes]
    generated = rounds / (time.perf_counter() - started)
    root = tree.root(size)
    leaves = [tree.node(0, i) for i in indexes]
    started = time.perf_counter()
    ok = all(
        merkle.verify_inclusion(leaf, i, size, proof, root)
        for leaf, i, proof in zip(leaves, indexes, proofs, strict=True)
    )
    verified = rounds / (time.perf_counter() - started)
    assert ok
    return generated, verified


def audit_time(bodies: list[bytes], seed: bytes) -> tuple[float, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sesame.ledger.outsider import Trust, audit_tiles

    signer = Signer("bench.sesame.example/ledger", Ed25519PrivateKey.from_private_bytes(seed))
    tree = merkle.Tree()
    tree.append(merkle.leaf_hash(b) for b in bodies)
    note = sign_checkpoint(Checkpoint(signer.name, tree.size, tree.root()), signer)
    with tempfile.TemporaryDirectory() as directory:
        tiles.export(Path(directory), iter(bodies), len(bodies), note)
        started = time.perf_counter()
        _, report = audit_tiles(Path(directory), Trust(signer.verifier, [], 0))
        elapsed = time.perf_counter() - started
    assert report.ok, report.violations[:5]
    return elapsed, tree


# -- 4. append -> cosigned checkpoint -------------------------------------------------------


def checkpoint_latencies(events: int, rate: float) -> list[float]:
    with stack(log_level=os.environ.get("BENCH_LOG_LEVEL", "warning")) as running:
        log_key = next(
            line.split()[-1]
            for line in running.sesame("ledger", "info").splitlines()
            if line.startswith("log key")
        )
        witnesses = []
        try:
            for number in (1, 2):
                port = free_port()
                process = spawn(
                    [
                        sys.executable, "-m", "sesame", "ledger", "witness",
                        "--name", f"witness{number}.bench",
                        "--key-file", str(running.directory / f"w{number}.key"),
                        "--state", str(running.directory / f"w{number}.db"),
                        "--log", log_key, "--port", str(port),
                    ],
                    env=running.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )  # fmt: skip
                assert process.stdout is not None
                vkey = process.stdout.readline().strip()
                witnesses.append((process, f"http://127.0.0.1:{port}", vkey))
            for _, url, _ in witnesses:
                for _ in range(100):
                    try:
                        httpx.get(url, timeout=1)
                        break
                    except httpx.HTTPError:
                        time.sleep(0.1)
            running.env["SESAME_LEDGER_WITNESSES"] = json.dumps(
                [{"url": url, "vkey": vkey} for _, url, vkey in witnesses]
            )
            running.start_server()
            return _measure(running, events, rate)
        finally:
            running.stop_server()
            for process, _, _ in witnesses:
                process.terminate()
                process.wait(timeout=10)


def _measure(running: Any, events: int, rate: float) -> list[float]:
    headers = running.headers()
    seen: list[tuple[float, int]] = []  # (when, size) of each new served checkpoint
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=running.url, headers=headers, timeout=5) as client:
            last = -1
            while not done.is_set():
                response = client.get("/v1/ledger/checkpoint")
                if response.status_code == 200:
                    size = int(response.text.split("\n")[1])
                    if size != last:
                        seen.append((time.perf_counter(), size))
                        last = size
                time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    committed: list[tuple[str, float]] = []
    with httpx.Client(base_url=running.url, headers=headers, timeout=10) as client:
        [person, *_] = client.get("/v1/people").json()["items"]
        [building, *_] = client.get("/v1/buildings").json()["items"]
        started = time.perf_counter()
        for n in range(events):
            time.sleep(max(0.0, started + n / rate - time.perf_counter()))
            created = client.post(
                "/v1/keys",
                json={
                    "person_id": person["id"],
                    "kind": "courier",
                    "carrier": "CJ Logistics",
                    "building_id": building["id"],
                },
            )
            assert created.status_code == 201, created.text
            committed.append((created.json()["id"], time.perf_counter()))
        time.sleep(3)
        done.set()
        poller.join()
        latencies = []
        for key_id, at in committed:
            receipts = client.get(f"/v1/keys/{key_id}/receipts").json()["receipts"]
            index = next(
                r["entry"]["index"] for r in receipts if r["entry"]["entry"]["type"] == "key.issued"
            )
            covered = next(when for when, size in seen if size > index)
            latencies.append(covered - at)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    if gaps:
        print(
            f"  served checkpoints: {len(seen)}, every {percentile(gaps, 0.5):.3f} s (p50),"
            f" {max(gaps):.3f} s at most",
            flush=True,
        )
    return latencies


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--audit-entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="key events per second")
    args = parser.parse_args()
    configure_logging("warning", "console")
    figures = record()

    step("bare SQLite inserts")
    bare = bare_insert_rate(args.appends)
    print(f"bare SQLite batched insert ({BATCH}/txn): {bare:,.0f} rows/s", flush=True)
    figures["bare_insert_per_s"] = round(bare)
    step("durable appends, SQLite")
    sqlite_rate, signing_us = asyncio.run(sesame_append_rate("sqlite", args.appends))
    figures["appends_per_s"] = round(sqlite_rate)
    figures["signing_at_commit_us"] = round(signing_us, 1)
    print(
        f"durable appends, SQLite: {sqlite_rate:,.0f}/s ({sqlite_rate / bare:.0%} of bare);"
        f" signing at commit cost the producers {signing_us:.0f} µs per event",
        flush=True,
    )
    unsealed, _ = asyncio.run(sesame_append_rate("sqlite", args.appends, sealed=False))
    print(f"  events not signed at commit (the sequencer signs): {unsealed:,.0f}/s", flush=True)
    figures["appends_per_s_signed_by_sequencer"] = round(unsealed)
    step("durable appends, PostgreSQL")
    pg_rate, _ = asyncio.run(sesame_append_rate("postgresql", args.appends))
    print(f"durable appends, PostgreSQL: {pg_rate:,.0f}/s", flush=True)
    figures["appends_per_s_postgresql"] = round(pg_rate)

    step("audit of a synthetic log")

    seed = os.urandom(32)
    started = time.perf_counter()
    bodies = synthetic_log(args.audit_entries, seed)
    print(
        f"built a log of {len(bodies):,} signed entries in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    audit_s, tree = audit_time(bodies, seed)
    del bodies
    print(f"audit of {tree.size:,} entries from tiles: {audit_s:.1f} s", flush=True)
    figures["audit_1m_s"] = round(audit_s * 1_000_000 / tree.size, 2)
    step("inclusion proofs")
    generated, verified = proof_rates(tree, args.proofs)
    print(
        f"inclusion proofs on {tree.size:,} entries: {generated:,.0f} generated/s,"
        f" {verified:,.0f} verified/s",
        flush=True,
    )

    figures["proofs_generated_per_s"] = round(generated)
    figures["proofs_verified_per_s"] = round(verified)
    step("append -> cosigned checkpoint")
    latencies = checkpoint_latencies(args.events, args.rate)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"append -> cosigned checkpoint ({args.events} key events at {args.rate:g}/s, 2 of 2"
        f" witnesses): p50 {p50:.3f} s, p99 {p99:.3f} s, max {max(latencies):.3f} s",
        flush=True,
    )
    print(
        json.dumps(
            {
                "appends_per_s": round(sqlite_rate),
                "appends_per_s_postgresql": round(pg_rate),
                "appends_per_s_signed_by_sequencer": round(unsealed),
                "signing_at_commit_us": round(signing_us, 1),
                "bare_insert_per_s": round(bare),
                "appends_share_of_bare": round(sqlite_rate / bare, 3),
                "proofs_generated_per_s": round(generated),
                "proofs_verified_per_s": round(verified),
                "audit_entries": tree.size,
                "audit_1m_s": round(audit_s * 1_000_000 / tree.size, 2),
                "checkpoint_p50_s": round(p50, 3),
                "checkpoint_p99_s": round(p99, 3),
            }
        )
    )


if __name__ == "__main__":
    run(main)
