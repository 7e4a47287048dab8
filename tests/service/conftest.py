from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL, GALLERY


def make_settings(tmp_path: Path, **overrides) -> Settings:
    # Starlette's TestClient sends "Host: testserver"; servers on a port get the default names.
    values = {"model_path": DEFAULT_MODEL, "data_dir": tmp_path / "data", "gallery_dir": GALLERY,
              "seed_gallery": True, "allowed_hosts": "testserver,localhost,127.0.0.1", **overrides}
    return Settings(**values)


@pytest.fixture
def client(tmp_path):
    """The real app (lifespan and all) over httpx, with the shipped model and a fresh index."""
    with TestClient(create_app(make_settings(tmp_path))) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def gallery_manifest() -> list[dict]:
    return json.loads((GALLERY / "manifest.json").read_text())["items"]
