"""The house rules that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy.orm import RelationshipProperty

from sesame.models import Base

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sesame"
SQL_NAMES = {"select", "insert", "update", "delete", "text", "func"}
# Modules allowed to speak SQL besides the repositories.
SQL_ALLOWED = {"kit/db.py", "kit/repository.py"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations/versions" not in p.as_posix())


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_sql_lives_in_repositories() -> None:
    offenders = []
    for path in modules():
        name = relative(path)
        if name.endswith("repository.py") or name in SQL_ALLOWED or name.startswith("migrations"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                bad = SQL_NAMES & {alias.name for alias in node.names}
                if bad:
                    offenders.append(f"{name}: imports {sorted(bad)}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in {"execute", "scalars", "scalar"}
                and "session" in ast.unparse(node.value).lower()
            ):
                offenders.append(f"{name}:{node.lineno}: {ast.unparse(node)}(...)")
    assert offenders == []


def test_kit_imports_no_domain() -> None:
    offenders = []
    for path in (PACKAGE / "kit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            module = None
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            if module and module.startswith("sesame") and not module.startswith("sesame.kit"):
                offenders.append(f"{relative(path)} imports {module}")
    assert offenders == []


def test_no_module_grows_past_800_lines() -> None:
    long = [relative(p) for p in modules() if len(p.read_text().splitlines()) > 800]
    assert long == []


def test_relationships_never_lazy_load() -> None:
    lazy = [
        f"{mapper.class_.__name__}.{prop.key}"
        for mapper in Base.registry.mappers
        for prop in mapper.iterate_properties
        if isinstance(prop, RelationshipProperty) and prop.lazy != "raise"
    ]
    assert lazy == []
