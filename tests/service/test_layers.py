"""The service is built in floors, and imports only go down: a route knows the store; the store knows
nothing of routes. A module not listed here fails the test until its floor is chosen."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

FLOORS = [
    ["contract"],
    ["service.settings", "service.errors", "service.item_fields", "service.metrics"],
    ["service.index_store", "service.model_runner", "service.batching", "service.originals", "service.inference",
     "service.generations", "service.copies", "service.ingest", "service.gallery", "service.migration",
     "service.limits", "service.security", "service.observability", "service.http_server", "service.store_calls",
     "service.migrate_client", "service.upload_client", "service.milvus_lite_server", "service.web"],
    ["service.state"],
    ["service.api"],
    ["service.app"],
    ["service.__main__", "service.jobs"],
]


def floor_of(module: str) -> int:
    for level, names in enumerate(FLOORS):
        if any(module == name or module.startswith(name + ".") for name in names):
            return level
    raise AssertionError(f"{module}: no floor chosen for it in tests/service/test_layers.py")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("service", "contract")}


def test_imports_in_the_service_only_go_down():
    upward = []
    for path in sorted((REPO / "service").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        if module == "service":
            continue
        own = floor_of(module)
        upward += [f"{module} (floor {own}) imports {name} (floor {floor_of(name)})" for name in sorted(imports(path))
                   if name != "service" and floor_of(name) > own]
    assert not upward, upward
