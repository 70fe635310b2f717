"""The README's commands and requests work as written.

Every shell block of README.md is parsed into its commands, and each command is run as
an operator would (a few placeholders filled in: the printed key, ids, a free port, a
scratch directory); a command of the README that no step here runs fails the test, so
a command added to the README is a command tested. ``sesame serve``, ``sesame sim``,
``sesame worker`` and the witness keep running: each is started, seen at work, and
stopped. Requests the README names in its prose must be operations of the document,
with the query parameters they show.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import POSTGRES_ADMIN_URL, _postgres_reachable, _require_postgres
from tests.conftest import drop_postgres_database as drop_database
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = str(Path(sys.executable).parent)
README_URL = "http://127.0.0.1:8000"
PASSWORD = "a long enough password for ops"


def shell_blocks(text: str) -> list[tuple[str, str]]:
    """``(section heading, block)`` for every ```` ```sh ```` block."""
    blocks = []
    heading = ""
    for part in re.split(r"(^```sh\n.*?^```$)", text, flags=re.S | re.M):
        if part.startswith("```sh"):
            blocks.append((heading, part.removeprefix("```sh\n").removesuffix("```")))
        else:
            headings = re.findall(r"^## (.+)$", part, flags=re.M)
            heading = headings[-1] if headings else heading
    return blocks


def commands(block: str) -> list[str]:
    """A block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        command = re.sub(r"(^|\s+)#\s.*$", "", line).strip()
        if command:
            found.append(re.sub(r"\s+", " ", command))
    return found


def without_options(command: str) -> str:
    """The command with its ``[optional ...]`` parts left out."""
    return re.sub(r"\s*\[[^\]]*\]", "", command).strip()


class Operator:
    """Runs README commands in a scratch directory with the given environment, and
    crosses each off the README's list."""

    def __init__(self, cwd: Path, env: dict[str, str], pending: list[str]) -> None:
        self.cwd = cwd
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env}
        self.pending = pending
        self.processes: list[subprocess.Popen[bytes]] = []

    def take(self, prefix: str) -> str:
        """The README's command that starts with ``prefix``, crossed off."""
        matches = [c for c in self.pending if c.startswith(prefix)]
        assert len(matches) == 1, (prefix, matches)
        self.pending.remove(matches[0])
        return matches[0]

    def run(self, command: str, *, stdin: str = "", ok: bool = True) -> str:
        """What the command printed on stdout (with stderr after it, when it fails)."""
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            start_new_session=True,  # no terminal: a password prompt reads stdin
        )
        output = result.stdout + result.stderr
        assert (result.returncode == 0) is ok, (command, result.returncode, output)
        return result.stdout if ok else output

    @contextmanager
    def running(self, command: str, *, stdin: str = "") -> Iterator[Callable[[], str]]:
        """The command running in the background; yields what it has printed so far.
        Stopped with SIGTERM afterwards, as a service manager does."""
        log = self.cwd / f"process-{len(self.processes)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {command}" if "\n" not in command else command],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        assert process.stdin is not None
        process.stdin.write(stdin.encode())
        process.stdin.close()

        def printed() -> str:
            if process.poll() is not None:
                raise AssertionError(f"{command} exited: {log.read_text()}")
            return log.read_text()

        try:
            yield printed
        finally:
            with_group = process.pid
            os.killpg(with_group, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                process.wait()


def until(check: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = check()
        except (httpx.HTTPError, AssertionError):
            if time.monotonic() > deadline:
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition never held within {seconds} s")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


def readme_commands(sections: Callable[[str], bool]) -> list[str]:
    return [
        command
        for heading, block in shell_blocks(README.read_text())
        if sections(heading)
        for command in commands(block)
    ]


def is_postgres(heading: str) -> bool:
    return heading == "Running on PostgreSQL"


def test_the_readme_has_the_blocks_this_test_reads() -> None:
    """Blocks under "Running on PostgreSQL" are run against PostgreSQL, every other one
    on SQLite; each has commands."""
    blocks = shell_blocks(README.read_text())
    assert [heading for heading, _ in blocks if is_postgres(heading)] == ["Running on PostgreSQL"]
    assert all(commands(block) for _, block in blocks)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_readme_command_runs(tmp_path: Path) -> None:
    pending = readme_commands(lambda heading: not is_postgres(heading))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "protocol.md", tmp_path / "docs" / "protocol.md")
    # `sesame protocol docs` also rewrites the test vectors from their fixed test keys.
    shutil.copytree(ROOT / "docs" / "test-vectors", tmp_path / "docs" / "test-vectors")
    op = Operator(
        tmp_path,
        {
            "SESAME_ENV": "development",
            "SESAME_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'sesame.db'}",
            "SESAME_PORT": str(port),
            "SESAME_PUBLIC_URL": url,
            "SESAME_MQTT_BIND": f"127.0.0.1:{free_port()}",
            "SESAME_LOG_LEVEL": "info",
            "SESAME_PASSWORD_TIME_COST": "1",
            "SESAME_PASSWORD_MEMORY_KIB": "64",
        },
        pending,
    )

    # `make run` is migrate, demo, serve with the simulated devices: each is run below
    # as the commands block gives it. `make test` is this suite.
    for target, step in (("run", "sesame serve --simulate"), ("test", "pytest")):
        plan = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert step in plan, plan
        op.take(f"make {target}")

    op.run(op.take("sesame db upgrade"))
    demo = op.run(without_options(op.take("sesame demo")))
    [api_key] = set(re.findall(r"\bses_[A-Za-z0-9_-]+", demo))
    [entrance_id] = set(re.findall(r"/v1/entrances/([0-9a-f-]{36})/open", demo))
    bearer = {"Authorization": f"Bearer {api_key}"}

    with op.running(without_options(op.take("sesame serve"))):
        until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200)
        with op.running(without_options(op.take("sesame sim --file var/demo-devices.json"))):

            def reader_online() -> bool:
                devices = httpx.get(
                    f"{url}/v1/devices", headers=bearer, params={"entrance_id": entrance_id}
                ).json()["items"]
                return any(d["online"] for d in devices)

            until(reader_online)
            sites = op.run(
                op.take("curl -H")
                .replace("<the printed ses_... key>", api_key)
                .replace(README_URL, url)
            )
            assert json.loads(sites)["items"], sites
            opened = op.run(
                op.take("curl -X POST")
                .replace("<key>", api_key)
                .replace("<id>", entrance_id)
                .replace(README_URL, url)
            )
            assert json.loads(opened)["status"] == "success", opened

        with op.running(without_options(op.take("sesame worker"))) as printed:
            until(lambda: "worker_started" in printed())

        staff = without_options(op.take("sesame staff create"))
        op.run(staff, stdin=f"{PASSWORD}\n{PASSWORD}\n")

        broker = without_options(op.take("sesame broker config")).replace(
            "/etc/mosquitto/sesame", str(tmp_path / "mosquitto")
        )
        op.run(broker)
        assert (tmp_path / "mosquitto" / "mosquitto.conf").exists()

        assert "already current" in op.run(op.take("sesame protocol docs"))

        info = op.run(op.take("sesame ledger info"))
        [vkey] = re.findall(r"log key (\S+)", info)

        def filled(command: str) -> str:
            return (
                without_options(command)
                .replace("URL", url)
                .replace("VKEY", vkey)
                .replace("--token KEY", f"--token {api_key}")
            )

        verify = filled(op.take("sesame ledger verify"))
        # Under the default SESAME_LEDGER_ACCESS the token is needed, and the failure
        # says so.
        unsigned = op.run(verify.replace(f" --token {api_key}", ""), ok=False)
        assert "--token" in unsigned, unsigned
        assert "verified" in until(lambda: op.run(verify))
        receipts = httpx.get(
            f"{url}/v1/keys/{first_key(url, bearer)}/receipts", headers=bearer
        ).json()
        (tmp_path / "receipts.json").write_text(json.dumps(receipts))
        assert "receipts verified" in op.run(f"{verify} --receipt receipts.json")
        op.run(filled(op.take("sesame ledger audit")))

        op.run(op.take("sesame ledger export-tiles DIR").replace("DIR", "tiles"))
        assert (tmp_path / "tiles" / "checkpoint").exists()

        witness_port = free_port()
        witness = (
            op.take("sesame ledger witness")
            .replace("NAME", "witness.test/w1")
            .replace("--key-file F", "--key-file witness.key")
            .replace("VKEY", vkey)
        )
        with op.running(f"{witness} --port {witness_port}"):
            until(lambda: answers(f"http://127.0.0.1:{witness_port}/"))

    assert pending == [], "README commands no step ran"


def first_key(url: str, bearer: dict[str, str]) -> str:
    keys = httpx.get(f"{url}/v1/keys", headers=bearer, params={"limit": 1}).json()["items"]
    return str(keys[0]["id"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_postgresql_block_runs(tmp_path: Path) -> None:
    _require_postgres(asyncio.run(_postgres_reachable()))
    [block] = [b for heading, b in shell_blocks(README.read_text()) if is_postgres(heading)]
    name = f"sesame_readme_{uuid.uuid4().hex[:10]}"
    server = POSTGRES_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]  # user@host:port
    user, address = server.split("@")
    host, port = address.split(":")
    api_port = free_port()
    script = (
        block.replace("createdb sesame", f"createdb -h {host} -p {port} -U {user} {name}")
        .replace(
            "postgresql+asyncpg://sesame:secret@db/sesame",
            f"postgresql+asyncpg://{server}/{name}",
        )
        # A free port, and two workers rather than four on a shared test machine.
        .replace("--host 0.0.0.0 --workers 4", f"--host 127.0.0.1 --port {api_port} --workers 2")
    )
    for line in commands(block):  # each command is still there, its arguments filled in
        words = line.split()
        assert " ".join(words[:3] if words[0] == "sesame" else words[:1]) in script, line
    op = Operator(tmp_path, {"SESAME_MQTT_BIND": f"127.0.0.1:{free_port()}"}, [])
    try:
        with op.running(f"set -e\n{script}", stdin=f"{PASSWORD}\n{PASSWORD}\n"):
            base = f"http://127.0.0.1:{api_port}"
            until(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 120)
            login = httpx.post(
                f"{base}/v1/auth/login",
                json={"email": "you@example.com", "password": PASSWORD},
            )
            assert login.status_code == 200, login.text
    finally:
        asyncio.run(drop_database(f"postgresql+asyncpg://{server}/{name}"))


def test_the_requests_in_the_readme_are_operations() -> None:
    """Each ``METHOD /v1/...?param=`` the README names is an operation of the document,
    and the query parameters it shows are that operation's."""
    from sesame.app import create_app
    from sesame.settings import Settings

    document = create_app(Settings(env="development")).openapi()
    spans = re.findall(r"`((?:(GET|POST|PATCH|PUT|DELETE) )?(/v1/[^`\s]*))`", README.read_text())
    assert len(spans) > 20, spans

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path.rstrip("/"))

    for span, method, target in spans:
        if "..." in target:
            continue  # a family of paths, in prose
        path, _, query = target.partition("?")
        operations = [
            operation
            for template, by_method in document["paths"].items()
            if shape(template) == shape(path)
            for verb, operation in by_method.items()
            if not method or verb == method.lower()
        ]
        assert operations, f"README names {span}, which the API does not have"
        for name in (pair.split("=")[0] for pair in query.split("&") if pair):
            assert any(
                name in {p["name"] for p in operation.get("parameters", [])}
                for operation in operations
            ), f"README names {span}, whose operation has no parameter {name!r}"
