"""The ledger as outsiders see it, with every part a real process: ``sesame serve`` with
three ``sesame ledger witness`` processes (one of them down), and the ``sesame ledger``
commands a residents' council would run — verify, audit, export-tiles — using nothing
but HTTP and files. Then the database is tampered with, and a forked checkpoint is sent
to a witness, and both are caught."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sesame.ledger import merkle
from sesame.ledger.note import COSIGNATURE, Checkpoint, Verifier, sign_checkpoint
from tests.support import ServerProcess, free_port, run_cli, sesame_command
from tests.test_cli import dev_env


class WitnessProcess:
    def __init__(self, directory: Path, number: int, log_key: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "sesame", "ledger", "witness",
                "--name", f"witness{number}.example",
                "--key-file", str(directory / f"witness{number}.key"),
                "--state", str(directory / f"witness{number}.db"),
                "--log", log_key,
                "--port", str(self.port),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise

    def _wait_until_serving(self) -> None:
        assert self.process.stdout is not None
        self.vkey = self.process.stdout.readline().strip()
        self.verifier = Verifier.parse(self.vkey)
        assert self.verifier.kind == COSIGNATURE
        for _ in range(100):
            try:
                if httpx.get(self.url + "/", timeout=1).text.strip() == self.vkey:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("the witness did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A served demo complex whose log is witnessed by 2 of 3 witnesses, one down."""
    directory = tmp_path_factory.mktemp("outsiders")
    env = dev_env(directory)
    env["SESAME_LEDGER_ACCESS"] = "public"
    env["SESAME_LEDGER_CHECKPOINT_INTERVAL_SECONDS"] = "0.2"  # receipts sooner
    run_cli(env, "db", "upgrade", cwd=str(directory))
    printed = run_cli(env, "demo", cwd=str(directory))
    api_key = re.search(r"(ses_[0-9a-f]{12}_\S+)", printed).group(1)  # type: ignore[union-attr]
    log_key = re.search(r"log key (\S+)", run_cli(env, "ledger", "info", cwd=str(directory)))
    assert log_key is not None
    witnesses: list[WitnessProcess] = []
    try:
        for n in (1, 2, 3):
            witnesses.append(WitnessProcess(directory, n, log_key.group(1), env))
    except BaseException:
        for started in witnesses:
            started.stop()
        raise
    witnesses[2].stop()  # down for the whole test: 2 of 3 still make the quorum
    env["SESAME_LEDGER_WITNESSES"] = json.dumps([{"url": w.url, "vkey": w.vkey} for w in witnesses])
    env["SESAME_LEDGER_WITNESS_TIMEOUT_SECONDS"] = "2"
    server = ServerProcess(env, free_port())
    try:
        server.wait_ready()
        yield {
            "directory": directory,
            "env": env,
            "url": server.base_url,
            "api_key": api_key,
            "log_key": log_key.group(1),
            "witnesses": witnesses,
        }
    finally:
        server.stop()
        for witness in witnesses:
            witness.stop()


def ledger(deployment: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    witnesses = [arg for w in deployment["witnesses"] for arg in ("--witness", w.vkey)]
    extra = ["--url", deployment["url"], "--log-key", deployment["log_key"], *witnesses]
    return sesame_command(
        deployment["env"], "ledger", *args, *extra, cwd=str(deployment["directory"])
    )


def key_life(deployment: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Issue and revoke a courier key over HTTP; its receipts once cosigned."""
    headers = {"Authorization": f"Bearer {deployment['api_key']}"}
    with httpx.Client(base_url=deployment["url"], headers=headers, timeout=10) as client:
        [person, *_] = client.get("/v1/people").json()["items"]
        [building, *_] = client.get("/v1/buildings").json()["items"]
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
        key_id = created.json()["id"]
        assert client.delete(f"/v1/keys/{key_id}").status_code == 204
        for _ in range(150):
            body = client.get(f"/v1/keys/{key_id}/receipts").json()
            proven = [r for r in body["receipts"] if r["proof"]]
            if body["checkpoint"] and len(proven) == len(body["receipts"]) == 2:
                return key_id, body
            time.sleep(0.1)
    raise AssertionError(f"no cosigned receipts: {body}")


def test_outsiders_verify_audit_and_export_the_witnessed_log(
    deployment: dict[str, Any],
) -> None:
    directory = deployment["directory"]
    _, receipts = key_life(deployment)
    # The served checkpoint carries the cosignatures of the two running witnesses.
    note = receipts["checkpoint"]
    cosigners = {line.split(" ")[1] for line in note.split("\n\n", 1)[1].splitlines()}
    assert cosigners == {
        "witness1.example",
        "witness2.example",
        deployment["log_key"].split("+")[0],
    }
    (directory / "receipts.json").write_text(json.dumps(receipts))

    state = directory / "verifier-state.json"
    first = ledger(deployment, "verify", "--state", str(state), "--receipt", "receipts.json")
    assert first.returncode == 0, first.stderr
    assert "2 receipts verified" in first.stdout
    assert "cosignatures required" in first.stdout
    # A second run checks the log only grew since the checkpoint it accepted.
    key_life(deployment)
    second = ledger(deployment, "verify", "--state", str(state), "--entry", "0")
    assert second.returncode == 0, second.stderr
    assert "consistent with the" in second.stdout
    assert "entry 0 is included" in second.stdout

    # Requiring all three witnesses fails: one is down.
    strict = ledger(deployment, "verify", "--quorum", "3")
    assert strict.returncode == 1
    assert "FAILED" in strict.stderr

    audit = ledger(deployment, "audit", "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert report["root_matches_checkpoint"] is True
    assert report["violations"] == []
    assert report["entries_by_type"]["device.provisioned"] == 5  # the demo's devices
    assert report["entries_by_type"]["key.issued"] >= 2
    assert report["entries_by_type"]["key.revoked"] >= 2

    exported = run_cli(deployment["env"], "ledger", "export-tiles", "tiles", cwd=str(directory))
    assert "exported" in exported
    offline = sesame_command(
        deployment["env"], "ledger", "audit", "--tiles", "tiles", "--log-key",
        deployment["log_key"], "--witness", deployment["witnesses"][0].vkey, "--quorum", "1",
        cwd=str(directory),
    )  # fmt: skip
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "no violations" in offline.stdout


def test_a_flipped_proof_byte_fails_verification(deployment: dict[str, Any]) -> None:
    directory = deployment["directory"]
    _, receipts = key_life(deployment)
    proof = receipts["receipts"][0]["proof"]
    raw = bytearray(base64.b64decode(proof["hashes"][0]))
    raw[7] ^= 0x01
    proof["hashes"][0] = base64.b64encode(bytes(raw)).decode()
    (directory / "flipped.json").write_text(json.dumps(receipts))
    result = ledger(deployment, "verify", "--receipt", "flipped.json")
    assert result.returncode == 1
    assert f"receipt for entry {proof['leaf_index']} does not verify" in result.stderr


def test_a_rewritten_entry_is_found_and_named(deployment: dict[str, Any]) -> None:
    key_life(deployment)
    database = deployment["directory"] / "var" / "sesame.db"
    with sqlite3.connect(database) as db:
        index, body = db.execute(
            "SELECT idx, body FROM ledger_entries WHERE topic = 'key.revoked' ORDER BY idx LIMIT 1"
        ).fetchone()
        forged = bytes(body).replace(b'"reason":', b'"reason":"never",  "x":', 1)
        assert forged != bytes(body)
        db.execute("UPDATE ledger_entries SET body = ? WHERE idx = ?", (forged, index))
    audit = ledger(deployment, "audit")
    assert audit.returncode == 1
    assert f"entry {index}: entry_altered" in audit.stdout
    included = ledger(deployment, "verify", "--entry", str(index))
    assert included.returncode == 1
    assert f"entry {index} is not in the checkpoint's tree" in included.stderr
    with sqlite3.connect(database) as db:  # put it back for the other tests
        db.execute("UPDATE ledger_entries SET body = ? WHERE idx = ?", (bytes(body), index))


def test_witnesses_refuse_a_fork_and_a_rollback(deployment: dict[str, Any]) -> None:
    """A log that signs two histories (its key stolen, or its operator dishonest) cannot
    get the second one cosigned."""
    key_life(deployment)
    witness = deployment["witnesses"][0]
    with httpx.Client(base_url=deployment["url"], timeout=10) as client:
        honest = client.get("/v1/ledger/checkpoint").text
    head = Checkpoint.parse(honest.split("\n\n", 1)[0] + "\n")
    signer = stolen_log_key(deployment)

    def add(old: int, proof: list[bytes], checkpoint: Checkpoint) -> httpx.Response:
        body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        note = sign_checkpoint(checkpoint, signer)
        return httpx.post(f"{witness.url}/add-checkpoint", content=body + "\n" + note)

    # Same size, another root: a fork.
    fork = add(head.size, [], Checkpoint(head.origin, head.size, merkle.leaf_hash(b"fork")))
    assert fork.status_code == 409
    # A smaller tree claimed from an old size: the witness answers with the size it holds.
    rollback = add(1, [], Checkpoint(head.origin, 1, merkle.leaf_hash(b"x")))
    assert rollback.status_code == 409
    assert rollback.headers["content-type"] == "text/x.tlog.size"
    assert int(rollback.text) >= head.size
    # And from the size it holds: the old size is larger than the new checkpoint's.
    older = add(int(rollback.text), [], Checkpoint(head.origin, 1, merkle.leaf_hash(b"x")))
    assert older.status_code == 400
    # A larger tree that does not extend the cosigned one: the proof cannot verify.
    bigger = Checkpoint(head.origin, int(rollback.text) + 5, merkle.leaf_hash(b"other"))
    forged = add(int(rollback.text), [merkle.leaf_hash(b"p")] * 3, bigger)
    assert forged.status_code == 422


def stolen_log_key(deployment: dict[str, Any]) -> Any:
    """The log's signing key, as someone with the server's secrets would have it."""
    script = (
        "import asyncio, base64\n"
        "from sesame.cli import _settings\n"
        "from sesame.runtime import build_runtime\n"
        "from sesame.ledger.service import Ledger\n"
        "async def main():\n"
        "    runtime = build_runtime(_settings())\n"
        "    signer = await Ledger(runtime).signer()\n"
        "    print(base64.b64encode(signer.private.private_bytes_raw()).decode())\n"
        "    await runtime.close()\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=deployment["env"],
        cwd=deployment["directory"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sesame.ledger.note import Signer

    seed = base64.b64decode(result.stdout.strip().splitlines()[-1])
    origin = deployment["log_key"].split("+")[0]
    return Signer(origin, Ed25519PrivateKey.from_private_bytes(seed))
