"""What `make run` and `make test` install: the lock files, and which one each target uses."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "requirements" / "serve.txt"
DEV = ROOT / "requirements" / "dev.txt"
TOOLS = {"pytest", "pytest-xdist", "mypy", "ruff", "schemathesis", "hypothesis", "uv"}


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every requirement in a lock file; each must be pinned, hashed."""
    text = lock.read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        line = block.split("\n", 1)[0]
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9._-]+)(?:\[[A-Za-z0-9._,-]+\])?==(\S+)", line)
        assert match, f"{lock.name}: not pinned: {line}"
        assert "--hash=sha256:" in block, f"{lock.name}: no hash for {line}"
        found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def declared() -> tuple[list[Requirement], list[Requirement], list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return (
        [Requirement(r) for r in project["project"]["dependencies"]],
        [Requirement(r) for r in project["project"]["optional-dependencies"]["dev"]],
        [Requirement(r) for r in project["build-system"]["requires"]],
    )


def test_the_lock_files_pin_every_declared_dependency_within_its_range() -> None:
    serve, dev = pins(SERVE), pins(DEV)
    runtime, tools, build = declared()
    for requirement in [*runtime, *build]:
        name = canonicalize_name(requirement.name)
        assert name in serve, f"{name} is not in serve.txt"
        assert requirement.specifier.contains(serve[name], prereleases=True), name
    for requirement in [*runtime, *tools, *build]:
        name = canonicalize_name(requirement.name)
        assert name in dev, f"{name} is not in dev.txt"
        assert requirement.specifier.contains(dev[name], prereleases=True), name
    # One set of versions: what serving runs is what the tests ran.
    assert {name: dev[name] for name in serve} == serve
    assert not TOOLS & set(serve), "serve.txt holds test or lint tools"
    assert set(dev) >= TOOLS


def make_dry_run(target: str, tmp_path: Path) -> str:
    """What `make <target>` would run on a fresh clone (a venv not made yet)."""
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_installs_the_serve_lock_and_make_test_the_dev_lock(tmp_path: Path) -> None:
    run = make_dry_run("run", tmp_path)
    assert "--require-hashes -r requirements/serve.txt" in run
    assert "requirements/dev.txt" not in run
    assert "[dev]" not in run
    # The package itself adds nothing the lock does not pin.
    assert re.search(r"--no-deps --no-build-isolation -e \.", run)
    test = make_dry_run("test", tmp_path)
    assert "--require-hashes -r requirements/dev.txt" in test
    assert "pytest" in test
