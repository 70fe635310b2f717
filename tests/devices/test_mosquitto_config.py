"""The Mosquitto configuration `sesame broker config` writes, started as an operator
starts it: who may sign in on which listener, and devices over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gmqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gmqtt.mqtt.constants import MQTTv311

from sesame.devices import protocol
from tests.conftest import CI
from tests.device_fixtures import Fleet
from tests.support import free_port, run_cli


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@contextlib.contextmanager
def mosquitto(conf: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = conf.parent / "mosquitto.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=output, stderr=output)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


async def signs_in(
    port: int, username: str, password: str, *, tls: ssl.SSLContext | None = None
) -> bool:
    client = gmqtt.Client(username, clean_session=True)
    client.set_config({"reconnect_retries": 0})
    client.set_auth_credentials(username, password)
    try:
        await asyncio.wait_for(
            client.connect("127.0.0.1", port, keepalive=30, version=MQTTv311, ssl=tls or False),
            5,
        )
    except Exception:
        return False
    connected = bool(client.is_connected)
    if connected:
        await client.disconnect()
    return connected


async def until_listening(process: subprocess.Popen[bytes], *ports: int) -> None:
    for port in ports:
        for _ in range(200):
            assert process.poll() is None, "mosquitto exited"
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"nothing listens on {port}")


async def test_the_generated_configuration_starts_and_keeps_devices_and_gateway_apart(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Written without options beyond the listeners, as the README shows, Mosquitto starts
    with it (as root too: it switches to the user who wrote the 0600 password files); a
    device signs in on the devices' listeners, plain and TLS, and not on the gateway's;
    the gateway only on its own."""
    if shutil.which("mosquitto") is None:
        message = "mosquitto is not installed (Debian package mosquitto)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    device = await fleet.provision("door_lock")
    mqtt: dict[str, Any] = device["credentials"]["mqtt"]
    settings = fleet.runtime.settings
    cert, key = self_signed(tmp_path)
    ports = {"devices": free_port(), "gateway": free_port(), "tls": free_port()}
    output = tmp_path / "mosquitto"
    printed = run_cli(
        {
            "SESAME_ENV": "development",
            "SESAME_DATABASE_URL": settings.database_url,
            "SESAME_SECRET_KEY": settings.secret_key.get_secret_value(),
        },
        "broker",
        "config",
        "--output",
        str(output),
        "--listen",
        f"127.0.0.1:{ports['devices']}",
        "--gateway-listen",
        f"127.0.0.1:{ports['gateway']}",
        "--tls-listen",
        f"127.0.0.1:{ports['tls']}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    assert f"SESAME_MQTT_URL=mqtt://127.0.0.1:{ports['gateway']}" in printed
    assert (output / "passwords").stat().st_mode & 0o777 == 0o600
    gateway_password = fleet.runtime.keys.mqtt_gateway_password
    tls = ssl.create_default_context(cafile=str(cert))
    with mosquitto(output / "mosquitto.conf") as process:
        await until_listening(process, *ports.values())
        assert await signs_in(ports["devices"], mqtt["username"], mqtt["password"])
        assert await signs_in(ports["tls"], mqtt["username"], mqtt["password"], tls=tls)
        assert not await signs_in(ports["gateway"], mqtt["username"], mqtt["password"])
        assert await signs_in(ports["gateway"], protocol.GATEWAY_USERNAME, gateway_password)
        assert not await signs_in(ports["devices"], protocol.GATEWAY_USERNAME, gateway_password)
        assert not await signs_in(ports["devices"], mqtt["username"], "not-the-secret")
