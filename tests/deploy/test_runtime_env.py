"""Build the service's runtime environment the way docker/service.Dockerfile does (same pins, same
install steps, same entry command and environment), in a fresh virtualenv, start it and probe it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx

from bench.server import free_port
from tests.conftest import REPO

DOCKERFILE = REPO / "docker" / "service.Dockerfile"


def dockerfile_cpu_stage() -> str:
    text = DOCKERFILE.read_text()
    start = text.index("AS cpu")
    return text[start:text.index("FROM", start)]


def dockerfile_env(stage: str) -> dict[str, str]:
    block = re.search(r"^ENV (.*?)(?=^\S)", stage, re.S | re.M).group(1)
    return dict(re.findall(r"(LIKENESS_\w+)=(\S+)", block))


def dockerfile_cmd(stage: str) -> list[str]:
    return json.loads(re.search(r'^CMD (\[.*\])', stage, re.M).group(1))


def test_service_environment_built_like_the_image_serves(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # The image's two install steps: the pinned requirements, then the project without dependencies.
    subprocess.run([*pip, "-r", str(REPO / "docker/requirements-service.txt")], check=True, timeout=1200)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, timeout=600)
    python = str(venv / "bin" / "python")
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0, "torch must not be installed in the service environment"

    stage = dockerfile_cpu_stage()
    env = dockerfile_env(stage)
    assert env["LIKENESS_DEVICE"] == "cpu" and env["LIKENESS_HOST"] == "0.0.0.0"
    # The image's paths, mapped onto this checkout: /app/models -> models/, /app/gallery -> the gallery.
    port = free_port()
    env.update({"LIKENESS_MODEL_PATH": str(REPO / "models" / "default.onnx"), "LIKENESS_DATA_DIR": str(tmp_path / "data"),
                "LIKENESS_GALLERY_DIR": str(REPO / "service" / "gallery"), "LIKENESS_HOST": "127.0.0.1",
                "LIKENESS_PORT": str(port), "PATH": f"{venv / 'bin'}:/usr/bin:/bin"})
    command = dockerfile_cmd(stage)
    assert command == ["python", "-m", "service"]
    # Run from a directory without the source tree, as in the image: only the installed package counts.
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "service did not become ready"
            time.sleep(0.2)
        body = ready.json()
        assert body["provider"] == "CPUExecutionProvider" and body["index_items"] == 300
        health = subprocess.run([python, "-c", "import urllib.request; urllib.request.urlopen("
                                 f"'http://127.0.0.1:{port}/readyz', timeout=4)"], timeout=30)
        assert health.returncode == 0  # the image's HEALTHCHECK command
    finally:
        process.terminate()
        process.wait(timeout=30)
