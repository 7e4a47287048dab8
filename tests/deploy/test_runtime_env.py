"""Build the service's runtime environment the way docker/service.Dockerfile does (same pins, same
install steps, same entry command and environment) in a fresh virtualenv, and run in it every command
docker-compose.yml runs in the service image: the server, its health checks and the index job; then
the other index jobs and the installed `likeness` command. The training image's commands are checked
in the suite's own environment (see test_training_image_commands)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from bench.server import free_port
from likeness.cli import COMMANDS
from tests.conftest import GALLERY, REPO, wait_until_ready

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

SERVICE_DOCKERFILE = REPO / "docker" / "service.Dockerfile"
TRAIN_DOCKERFILE = REPO / "docker" / "train.Dockerfile"
API_KEY = "runtime-env-test-key"


def dockerfile_stage(name: str) -> str:
    text = SERVICE_DOCKERFILE.read_text()
    start = text.index(f"AS {name}\n")
    return text[start:text.index("FROM", start)]


def dockerfile_cpu_stage() -> str:
    return dockerfile_stage("cpu")


def build_context(stage: str, workdir: Path) -> Path:
    """What the build stage's COPY lines put in its WORKDIR, and nothing else."""
    for line in re.findall(r"^COPY (?!--)(.+)$", stage, re.M):
        *sources, target = line.split()
        for source in sources:
            destination = workdir / target / Path(source).name if target.endswith("/") else workdir / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(REPO / source, destination)
    return workdir


def dockerfile_env(stage: str) -> dict[str, str]:
    block = re.search(r"^ENV (.*?)(?=^\S)", stage, re.S | re.M).group(1)
    return dict(re.findall(r"(LIKENESS_\w+)=(\S+)", block))


def dockerfile_instruction(stage: str, instruction: str) -> list[str]:
    return json.loads(re.search(rf"^{instruction} (\[.*\])", stage, re.M).group(1))


def dockerfile_healthcheck(stage: str) -> list[str]:
    return json.loads(re.search(r"^HEALTHCHECK [^\n]*\n\s+CMD (\[[^\n]*\])", stage, re.M).group(1))


MILVUS_PROFILE = {"milvus-etcd", "milvus-minio", "milvus-standalone", "service-milvus", "copy-to-milvus"}


def compose_services() -> dict[str, dict]:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    # A new service means new commands to run here.
    assert set(services) == {"service", "index", "train", *MILVUS_PROFILE}, (
        f"run the commands of {sorted(services)} in this test")
    return services


def rendered_compose(*profiles: str) -> dict[str, dict]:
    """The services as docker-compose renders them (variables substituted with their defaults)."""
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    done = subprocess.run(["docker-compose", *args, "config"], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)})
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


@pytest.fixture(scope="module")
def service_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("service-env")
    venv = root / "venv"
    stage = dockerfile_stage("build-cpu")
    source = build_context(stage, root / "src")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # The image's two install steps: the pinned requirements, then the project without dependencies.
    assert "pip install --no-cache-dir -r requirements-service.txt" in stage
    assert "pip install --no-cache-dir --no-deps ." in stage
    subprocess.run([*pip, "-r", "requirements-service.txt"], cwd=source, check=True, timeout=1200)
    subprocess.run([*pip, "--no-deps", "."], cwd=source, check=True, timeout=600)
    python = str(venv / "bin" / "python")
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0, "torch must not be installed in the service environment"
    return venv


def run(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


def test_service_image_runs_every_compose_command(service_venv, tmp_path):
    stage = dockerfile_cpu_stage()
    env = dockerfile_env(stage)
    assert env["LIKENESS_DEVICE"] == "cpu" and env["LIKENESS_HOST"] == "0.0.0.0"
    # The image's paths, mapped onto this checkout: /app/models -> models/, /app/gallery -> the gallery.
    port = free_port()
    env.update({"LIKENESS_MODEL_PATH": str(REPO / "models" / "default.onnx"), "LIKENESS_DATA_DIR": str(tmp_path / "data"),
                "LIKENESS_GALLERY_DIR": str(GALLERY), "LIKENESS_HOST": "127.0.0.1",
                "LIKENESS_PORT": str(port), "PATH": f"{service_venv / 'bin'}:/usr/bin:/bin"})
    # A folder for the index job (compose mounts LIKENESS_IMAGES_DIR at /images): one sub-folder per label.
    images = tmp_path / "images"
    for n, source in enumerate(sorted(GALLERY.glob("*.png"))[:6]):
        (images / ("odd" if n % 2 else "even")).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, images / ("odd" if n % 2 else "even") / source.name)
    container = {"http://service:8000": f"http://127.0.0.1:{port}", "/images": str(images),
                 "127.0.0.1:8000": f"127.0.0.1:{port}"}

    def on_this_machine(command: list[str]) -> list[str]:
        for inside, outside in container.items():
            command = [arg.replace(inside, outside) for arg in command]
        return command

    services = compose_services()
    assert "command" not in services["service"]  # the image's CMD, below
    command = dockerfile_instruction(stage, "CMD")
    assert command == ["python", "-m", "service"]
    # Compose passes the API key through; the index job sends it (tests the pass-through's meaning too).
    assert "LIKENESS_API_KEY" in services["service"]["environment"]
    assert "LIKENESS_API_KEY" in services["index"]["environment"]
    # Run from a directory without the source tree, as in the image: only the installed package counts.
    process = subprocess.Popen(command, cwd=tmp_path, env={**env, "LIKENESS_API_KEY": API_KEY},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ready = wait_until_ready(process, port, timeout=90)
        body = ready.json()
        assert body["provider"] == "CPUExecutionProvider" and body["index_items"] == 300

        # The health checks: the image's HEALTHCHECK and compose's, which replaces it.
        run(dockerfile_healthcheck(stage), env, tmp_path, timeout=30)
        health = services["service"]["healthcheck"]["test"]
        assert health[0] == "CMD"
        run(on_this_machine(health[1:]), env, tmp_path, timeout=30)

        # The index job, as compose runs it: the service image, LIKENESS_API_KEY from the environment.
        assert services["index"]["image"] == services["service"]["image"]
        loaded = run(on_this_machine(services["index"]["command"]), {**env, "LIKENESS_API_KEY": API_KEY}, tmp_path)
        assert json.loads(loaded.stdout) == {"added": 6, "failed": 0}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["index_items"] == 306
    finally:
        process.terminate()
        process.wait(timeout=30)

    # The offline index jobs (README "Index batch jobs"), through the installed command, once the
    # service has stopped (the index lock admits one process).
    likeness = ["likeness", "index"]
    stats = json.loads(run([*likeness, "stats"], env, tmp_path).stdout)
    assert stats["items"] == 306
    rebuilt = json.loads(run([*likeness, "rebuild"], env, tmp_path).stdout)
    assert rebuilt["items"] == 306 and rebuilt["tombstones"] == 0
    more = tmp_path / "more"
    (more / "new").mkdir(parents=True)
    for source in sorted(GALLERY.glob("*.png"))[6:9]:
        shutil.copy(source, more / "new" / source.name)
    added = json.loads(run([*likeness, "add-folder", str(more)], env, tmp_path).stdout)
    assert added["added"] == 3 and added["items"] == 309


def test_milvus_profile_declares_milvus_standalone_and_a_scaled_api():
    """The milvus profile as compose renders it. There is no Docker engine here, so Milvus Standalone
    itself does not run; its images are pinned and each part has a health check and a volume."""
    services = compose_services()
    assert {name for name, service in services.items() if service.get("profiles") == ["milvus"]} == MILVUS_PROFILE
    rendered = rendered_compose("milvus")
    for name in ("milvus-etcd", "milvus-minio", "milvus-standalone"):
        assert re.search(r":(v\d+\.\d+\.\d+|RELEASE\.[0-9T-]+Z)$", rendered[name]["image"]), rendered[name]["image"]
        assert rendered[name]["healthcheck"]["test"][0] == "CMD" and rendered[name]["volumes"]
    # A Milvus 2.5 server, for the pymilvus 2.5 client the service pins.
    assert rendered["milvus-standalone"]["image"].startswith("milvusdb/milvus:v2.5.")
    assert re.search(r"^pymilvus==2\.5\.", (REPO / "docker" / "requirements-service.txt").read_text(), re.M)
    standalone = rendered["milvus-standalone"]
    assert standalone["environment"]["ETCD_ENDPOINTS"] == "milvus-etcd:2379"
    assert standalone["environment"]["MINIO_ADDRESS"] == "milvus-minio:9000"
    assert {dependency: how["condition"] for dependency, how in standalone["depends_on"].items()} == {
        "milvus-etcd": "service_healthy", "milvus-minio": "service_healthy"}
    # MinIO and etcd stay on the compose network; Milvus on the host's loopback only.
    assert "ports" not in rendered["milvus-etcd"] and "ports" not in rendered["milvus-minio"]
    assert standalone["ports"] == ["127.0.0.1:19530:19530/tcp"]

    api = rendered["service-milvus"]
    assert api["image"] == rendered["service"]["image"] and "command" not in api  # the image's CMD, as `service`
    assert api["environment"]["LIKENESS_INDEX_BACKEND"] == "milvus"
    assert api["environment"]["LIKENESS_MILVUS_URI"] == "http://milvus-standalone:19530"
    assert int(api["environment"]["LIKENESS_WORKERS"]) > 1 and int(api["deploy"]["replicas"]) > 1
    assert api["depends_on"]["milvus-standalone"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert not any(volume.endswith(":/app/data") for volume in services["service-milvus"]["volumes"])  # stateless
    # One host port per replica.
    first, last = (int(port) for port in api["ports"][0]["published"].split("-"))
    assert last - first + 1 >= int(api["deploy"]["replicas"]) and api["ports"][0]["target"] == 8000
    # The copy job reads the embedded index of `service` (its volume) into the collection the API serves.
    assert "data:/app/data" in services["copy-to-milvus"]["volumes"]
    assert "data:/app/data" in services["service"]["volumes"]
    assert rendered["copy-to-milvus"]["command"][:3] == ["likeness", "index", "copy-to-milvus"]
    assert "LIKENESS_MILVUS_COLLECTION" not in api["environment"]  # both use the default collection


def test_milvus_profile_commands_run_in_the_service_image(service_venv, tmp_path):
    """The milvus profile's commands in the service image's environment, with a Milvus Lite server on
    loopback standing in for milvus-standalone (the same gRPC API): the copy job moves an embedded
    index into Milvus, then the API, with the profile's backend and workers, serves it."""
    stage = dockerfile_cpu_stage()
    services = rendered_compose("milvus")
    python = str(service_venv / "bin" / "python")
    env = {**dockerfile_env(stage), "LIKENESS_MODEL_PATH": str(REPO / "models" / "default.onnx"),
           "LIKENESS_DATA_DIR": str(tmp_path / "data"), "LIKENESS_GALLERY_DIR": str(GALLERY),
           "LIKENESS_HOST": "127.0.0.1", "PATH": f"{service_venv / 'bin'}:/usr/bin:/bin"}
    milvus_address = f"127.0.0.1:{free_port()}"
    port = free_port()
    container = {"http://milvus-standalone:19530": f"http://{milvus_address}", "127.0.0.1:8000": f"127.0.0.1:{port}"}

    def on_this_machine(command: list[str]) -> list[str]:
        for inside, outside in container.items():
            command = [arg.replace(inside, outside) for arg in command]
        return command

    # The embedded index that `service` would have built: 6 images, one sub-folder per label.
    images = tmp_path / "images"
    sources = sorted(GALLERY.glob("*.png"))[:6]
    for n, source in enumerate(sources):
        (images / ("odd" if n % 2 else "even")).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, images / ("odd" if n % 2 else "even") / source.name)
    assert json.loads(run(["likeness", "index", "add-folder", str(images)], env, tmp_path).stdout)["items"] == 6

    milvus = subprocess.Popen([python, "-m", "service.milvus_lite_server", str(tmp_path / "milvus.db"), "--address",
                               milvus_address], cwd=tmp_path, env={**env, "HOME": str(tmp_path)},  # its engine needs one
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = None
    try:
        said = b""
        while b"serving" not in said and (line := milvus.stdout.readline()):  # after import warnings, if any
            said += line
        assert b"serving" in said, said.decode()[-3000:]
        job = services["copy-to-milvus"]
        copied = run(on_this_machine(job["command"]), {**env, **job["environment"]}, tmp_path)
        assert json.loads(copied.stdout)["copied"] == 6

        api = services["service-milvus"]["environment"]
        milvus_env = {key: on_this_machine([api[key]])[0] for key in
                      ("LIKENESS_INDEX_BACKEND", "LIKENESS_MILVUS_URI", "LIKENESS_WORKERS", "LIKENESS_SEED_GALLERY")}
        server = subprocess.Popen(dockerfile_instruction(stage, "CMD"), cwd=tmp_path,
                                  env={**env, **milvus_env, "LIKENESS_PORT": str(port)},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ready = wait_until_ready(server, port, timeout=180)
        assert ready.json()["index_items"] == 6  # the copied index, not a freshly seeded gallery
        run(on_this_machine(services["service-milvus"]["healthcheck"]["test"][1:]), env, tmp_path, timeout=30)
        hits = httpx.post(f"http://127.0.0.1:{port}/search", files={"image": ("q.png", sources[3].read_bytes())},
                          data={"k": "3"}, timeout=30).json()["results"]
        assert hits[0]["id"] == f"odd/{sources[3].stem}" and hits[0]["metadata"] == {"label": "odd"}
    finally:
        for process in (server, milvus):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=60)


def test_service_image_has_the_likeness_command(service_venv, tmp_path):
    env = {"PATH": f"{service_venv / 'bin'}:/usr/bin:/bin"}
    listed = run(["likeness", "--help"], env, tmp_path, timeout=60).stdout
    for name in COMMANDS:
        assert name in listed
    for name in ("serve", "index"):
        assert run(["likeness", name, "--help"], env, tmp_path, timeout=60).stdout.startswith(f"usage: likeness {name}")
    # The image holds no training code: the command says which extra, in one line.
    refused = subprocess.run(["likeness", "train", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == ("likeness train: needs the 'train' extra (training, torch, onnx not installed): "
                                      "pip install 'likeness[train]'")


def test_training_image_commands(tmp_path):
    """The training image's entry point with its default CMD and with each training command's --help.

    Building that environment from docker/requirements-train.txt means torch and the CUDA libraries,
    about 5 GB, on every run; so these commands run in the suite's own environment, which has the
    train extra (tests/deploy/test_dependencies.py checks that those pins are compiled from the
    same pyproject.toml)."""
    text = TRAIN_DOCKERFILE.read_text()
    entrypoint = dockerfile_instruction(text, "ENTRYPOINT")
    assert entrypoint == ["python", "-m", "training"] and "command" not in compose_services()["train"]
    python = [sys.executable, *entrypoint[1:]]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    assert "train" in run([*python, *dockerfile_instruction(text, "CMD")], env, tmp_path, timeout=120).stdout
    for name, (_, (extra, _)) in COMMANDS.items():
        if extra == "train":
            assert "usage:" in run([*python, name, "--help"], env, tmp_path, timeout=120).stdout


def test_the_cpu_image_serves_the_int8_graph_of_the_model_the_gpu_image_serves():
    """Both images serve the shipped default model: the GPU image its float graph, the CPU image its
    int8 graph (same version, same measured bars on its own card), and both files exist in models/."""
    import onnx

    from contract import SPEC_METADATA_KEY, ModelSpec

    text = SERVICE_DOCKERFILE.read_text()
    specs = {}
    for stage in ("cpu", "gpu"):
        block = text[text.index(f"AS {stage}\n"):]
        path = REPO / "models" / Path(dockerfile_env(block)["LIKENESS_MODEL_PATH"]).name
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        specs[stage] = ModelSpec.from_metadata({SPEC_METADATA_KEY: meta[SPEC_METADATA_KEY]})
        assert path.with_suffix(".md").is_file()
    cpu, gpu = specs["cpu"], specs["gpu"]
    assert cpu.metrics.export.quantization and gpu.metrics.export.quantization is None
    assert (cpu.name, cpu.version) == (f"{gpu.name}-int8", gpu.version)
    assert cpu.training.train_command == gpu.training.train_command  # one checkpoint, two graphs
    # Its own numbers meet the bars the float graph's card reports for the default model.
    near = cpu.metrics.test.near_duplicates
    assert near.mean_recall_at_1 >= 0.99 and near.worst_recall_at_1 >= 0.97
    assert cpu.metrics.test.precision_at_1 >= 0.92 and cpu.metrics.test.roc_auc >= 0.98
