"""Credentials: how fast a reader decides alone, and a resident's remote open end to end.

1. Reader-side verification on one core: ``sesame.keys.reader.Reader.decide`` on valid
   mobile credentials (signature, site, entrance, validity, schedule, blocked keys, replay
   count), against the bare Ed25519 verification rate of the same library on a message of
   the same size — the ceiling.
2. A resident's remote open through the API (key checks, access log, action attempt,
   simulated reader, result), one request at a time, against a real ``sesame serve``:
   p50/p99, on the embedded stack (SQLite, in-process broker) and on the production one
   (PostgreSQL, Mosquitto). Staff opening the same entrance (no key checks, no access
   log) is the baseline of each stack.

Last line: one JSON object with ``verify_per_s``, ``bare_ed25519_verify_per_s``,
``verify_share_of_bare``, ``remote_open_p50_ms``, ``remote_open_p99_ms`` (first stack),
the same suffixed with the broker and database for the others, and ``staff_open_*``.

Usage: ``python bench/credential_verify.py [--tokens 20000] [--requests 300]
[--stacks sqlite/embedded,postgresql/mosquitto]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import percentile, record, run, stack, step
from sesame.devices import protocol
from sesame.keys.credentials import MOBILE_LIFETIME, claims_for, public_b64, sign
from sesame.keys.reader import Reader, ReaderTrust
from sesame.kit.logging import configure_logging
from sesame.simulators import simulator


def verification_rates(tokens: int) -> tuple[float, float]:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    site, entrance = uuid.uuid4(), uuid.uuid4()
    key = SimpleNamespace(
        id=uuid.uuid4(),
        site_id=site,
        person_id=uuid.uuid4(),
        starts_at=None,
        ends_at=None,
        schedule=None,
    )
    now = datetime.now(UTC)
    issued = [
        sign(
            "k1",
            private,
            claims_for(
                key,
                entrance,
                now=now,
                lifetime=MOBILE_LIFETIME,
                zone=ZoneInfo("Asia/Seoul"),
                credential_id=uuid.uuid4(),
                uses=1,
            ),
        )
        for _ in range(tokens)
    ]
    reader = Reader(
        ReaderTrust.of(
            protocol.TrustDocument(
                version=1,
                site_id=site,
                entrance_id=entrance,
                keys=[protocol.TrustedKey(kid="k1", x=public_b64(private))],
                revoked_keys=[],
            )
        )
    )
    clock = now.timestamp()
    started = time.process_time()
    for token in issued:
        if not reader.decide(token, clock).granted:
            raise RuntimeError("a valid credential was refused")
    verify_rate = tokens / (time.process_time() - started)

    head, body, _ = issued[0].split(".")
    message = f"{head}.{body}".encode()
    signature = private.sign(message)
    public = private.public_key()
    started = time.process_time()
    for _ in range(tokens):
        public.verify(signature, message)
    bare_rate = tokens / (time.process_time() - started)
    return verify_rate, bare_rate


async def _opens(
    url: str, headers: dict[str, str], entrance_id: str, reader: dict[str, str], requests: int
) -> list[float]:
    device = simulator(reader["kind"], reader["device_id"], reader["password"], reader["url"])
    await device.start()
    await asyncio.sleep(1.0)
    samples = []
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as client:
        for n in range(requests + 20):
            started = time.perf_counter()
            response = await client.post(f"/v1/entrances/{entrance_id}/open", params={"wait": 5})
            elapsed = (time.perf_counter() - started) * 1000
            if response.json().get("status") != "success":
                raise RuntimeError(response.text)
            if n >= 20:  # warm-up
                samples.append(elapsed)
    await device.stop()
    return samples


def remote_open(database: str, broker: str, requests: int) -> tuple[list[float], list[float]]:
    """A resident's remote opens, then the same entrance opened by staff (no key checks:
    only its access log row) as the baseline of the same stack."""
    with stack(database=database, broker=broker) as running:
        running.start_server()
        phone = "+821000000001"  # the demo's owner of 101동 1001호
        httpx.post(f"{running.url}/v1/auth/codes", json={"phone": phone}).raise_for_status()
        time.sleep(0.3)
        log = (running.directory / "server.log").read_text()
        code = re.findall(rf"\[sms to {re.escape(phone)}\].*?(\d{{6}})", log)[-1]
        tokens = httpx.post(
            f"{running.url}/v1/auth/codes/verify", json={"phone": phone, "code": code}
        ).json()
        entrance_id = re.search(r"/v1/entrances/([0-9a-f-]+)/open", running.demo_output).group(1)  # type: ignore[union-attr]
        reader = next(d for d in running.demo_devices() if d["entrance_id"] == entrance_id)
        resident = asyncio.run(
            _opens(
                running.url,
                {"Authorization": f"Bearer {tokens['access_token']}"},
                entrance_id,
                reader,
                requests,
            )
        )
        staff = asyncio.run(
            _opens(
                running.url,
                {"Authorization": f"Bearer {running.api_key}"},
                entrance_id,
                reader,
                requests,
            )
        )
        return resident, staff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--stacks",
        default="sqlite/embedded,postgresql/mosquitto",
        help="database/broker pairs; the first one gives the unsuffixed figures",
    )
    args = parser.parse_args()
    configure_logging("warning", "console")  # the simulated reader's chatter
    step("reader-side verification")
    verify_rate, bare_rate = verification_rates(args.tokens)
    print(
        f"reader decisions {verify_rate:.0f}/s on one core; bare Ed25519 verify "
        f"{bare_rate:.0f}/s ({verify_rate / bare_rate:.0%})",
        flush=True,
    )
    figures = record()
    figures |= {
        "verify_per_s": round(verify_rate),
        "bare_ed25519_verify_per_s": round(bare_rate),
        "verify_share_of_bare": round(verify_rate / bare_rate, 3),
    }
    for n, pair in enumerate(args.stacks.split(",")):
        database, broker = pair.split("/")
        step(f"remote opens on {database}/{broker}")
        resident, staff = remote_open(database, broker, args.requests)
        suffix = "" if n == 0 else f"_{broker}_{'pg' if database == 'postgresql' else database}"
        figures.update(
            {
                f"remote_open_p50_ms{suffix}": round(percentile(resident, 0.5), 2),
                f"remote_open_p99_ms{suffix}": round(percentile(resident, 0.99), 2),
                f"staff_open_p50_ms{suffix}": round(percentile(staff, 0.5), 2),
                f"staff_open_p99_ms{suffix}": round(percentile(staff, 0.99), 2),
            }
        )
        print(
            f"{database}/{broker}: resident remote open p50 "
            f"{figures[f'remote_open_p50_ms{suffix}']} ms, p99 "
            f"{figures[f'remote_open_p99_ms{suffix}']} ms; staff open (no key checks) p50 "
            f"{figures[f'staff_open_p50_ms{suffix}']} ms",
            flush=True,
        )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    run(main)
