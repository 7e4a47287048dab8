"""Every command in README.md and docs/own-data.md is run by this module, or, where a command cannot
run in the suite, checked another real way and listed with the reason, so a documented command
cannot drift from the code again.

- docs/own-data.md: every command of its ```bash blocks, in order, in one shell in an empty folder,
  with the quick sizes the guide itself offers (PHOTOS, EPOCHS, TRIPLETS) and a free LIKENESS_PORT.
- README.md: `make serve` (its install step marked done with `make -o`, the suite's environment
  having the extras already) on a free LIKENESS_PORT, then every curl of the page against it, as
  written but for the port; each training command as written plus ``TINY`` (a few hundred images,
  one step) in a temporary folder of its own, but `--resume`, which continues the run it names,
  where the export and evaluate commands then run as written.
- The rest (``NOT_RUN``): the argument parser that would run them accepts exactly the documented
  arguments, or `make -n` expands the target, and the reason they cannot run here.

A fenced block without a language fails, and so does a command in a ```bash block that no test
runs and ``NOT_RUN`` does not list: a new documented command is run or explained, never skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GALLERY, REPO

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

DOCUMENTS = {"README.md": REPO / "README.md", "docs/training.md": REPO / "docs" / "training.md",
             "docs/api.md": REPO / "docs" / "api.md", "docs/deploy.md": REPO / "docs" / "deploy.md",
             "docs/own-data.md": REPO / "docs" / "own-data.md"}
# The front door and the pages it sends readers to: their commands run as the README's always did
# (requests against `make serve`, training commands with TINY); docs/own-data.md runs whole.
FRONT = ("README.md", "docs/training.md", "docs/api.md", "docs/deploy.md")
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
VENV_BIN = Path(sys.executable).parent
VENV = VENV_BIN.parent

# Appended to each README training command: a few hundred Fashion-MNIST images, one step, small
# evaluations. The documented arguments stay as written before them (a later --set wins).
TINY = ["--no-progress", "--set", "data.train_limit=320", "--set", "data.val_size=64", "--set", "data.test_limit=100",
        "--set", "optim.epochs=1", "--set", "optim.max_steps=1", "--set", "optim.batch_size=64",
        "--set", "optim.m_per_class=8", "--set", "eval.pairs=100", "--set", "eval.near_duplicates=20",
        "--set", "eval.val_near_duplicates=0", "--set", "data.train_triplets=64", "--set", "data.eval_triplets=100"]

PROVISIONING = "installs into the environment from PyPI; the suite's environment was made by `make test`, " \
               "which installs the same extras"
NO_DOCKER = "needs a Docker engine, which CI machines lack; tests/deploy/ lints the Dockerfiles, validates " \
            "docker-compose.yml and builds the service image's environment from its pins"
MILVUS_PROFILE = "; tests/deploy/test_runtime_env.py runs the copy job's and the API's commands in the service " \
                 "image's environment against a Milvus Lite server standing in for Milvus Standalone"
# Documented commands the suite does not run, and why. Each is still checked: a make target with
# `make -n`, a training image's arguments with the training parser (test_not_run_commands_parse).
NOT_RUN = {
    "docs/own-data.md": {
        "pip install -e '.[train,service,pretrained]'": PROVISIONING,
    },
    "README.md": {
        "make test": "runs the whole suite, this module included (`make -n test` expands)",
        "likeness train --config photos --data-dir shop": "needs the shop folder docs/own-data.md makes; that "
                                                           "guide runs this command whole, on its demo catalogue",
    },
    "docs/training.md": {},
    "docs/api.md": {},
    "docs/deploy.md": {
        "cp .env.example .env": "the first step of the Docker deployment below: it writes .env in the checkout, "
                                "which `make serve` would then read; the file it copies must exist",
        "docker compose up -d": NO_DOCKER,
        "docker compose ps": NO_DOCKER,
        "docker compose --profile train run --rm train train --config default":
            NO_DOCKER + "; the training image runs `python -m training`, whose parser must accept the arguments",
        "docker compose --profile train run --rm train export --checkpoint /work/runs/fmnist-default/best.pt "
        "--output /models/default.onnx":
            NO_DOCKER + "; the training image runs `python -m training`, whose parser must accept the arguments",
        "docker compose restart service": NO_DOCKER,
        "docker compose --profile index run --rm index": NO_DOCKER,
        "docker compose stop service": NO_DOCKER,
        "docker compose --profile milvus run --rm copy-to-milvus": NO_DOCKER + MILVUS_PROFILE,
        "docker compose --profile milvus up -d service-milvus": NO_DOCKER + MILVUS_PROFILE,
        "for gpu in 0 1 2 3; do LIKENESS_GPU=$gpu LIKENESS_PORT=$((8000 + gpu)) docker compose -p "
        "likeness-gpu$gpu up -d service done": NO_DOCKER + ", and GPUs",
        "docker build -f docker/service.Dockerfile --target cpu -t likeness:cpu .": NO_DOCKER,
        "docker run -d -p 8000:8000 -v likeness-data:/app/data likeness:cpu": NO_DOCKER,
    },
}


# Reading the documents ---------------------------------------------------------------------------


def guide_quick_sizes() -> dict[str, str]:
    """The quick sizes the guide itself offers ("`export PHOTOS=20 EPOCHS=1 ...`" in its text)."""
    found = re.search(r"`export ((?:[A-Z]+=\d+ ?)+)`", DOCUMENTS["docs/own-data.md"].read_text())
    assert found, "docs/own-data.md no longer offers quick sizes to export"
    return dict(item.split("=") for item in found[1].split())


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block; the language is "" when the fence names none."""
    return [(match[1].strip(), match[2]) for match in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.M | re.S)]


def _without_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line).rstrip()


def split_commands(body: str) -> list[str]:
    """The commands of a shell block, each as written: continuation lines, a here-document's body
    and a multi-line loop stay with their command; blank and comment lines are dropped."""
    lines, commands, at = body.splitlines(), [], 0
    while at < len(lines):
        line = lines[at]
        at += 1
        if not _without_comment(line).strip():
            continue
        command = [line]
        while _without_comment(command[-1]).endswith("\\"):
            command.append(lines[at])
            at += 1
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)", command[0])
        if heredoc:
            while at < len(lines) and lines[at - 1].strip() != heredoc[1]:
                command.append(lines[at])
                at += 1
        elif re.match(r"\s*(for|while|until)\b", line) and not re.search(r"\bdone$", _without_comment(line)):
            while _without_comment(command[-1]).strip() != "done":
                command.append(lines[at])
                at += 1
        commands.append("\n".join(command))
    return commands


def command_key(command: str) -> str:
    """A command as one line: its first line for a here-document, comments dropped, spaces collapsed."""
    lines = command.splitlines()
    if re.search(r"<<-?\s*'?\"?\w+", lines[0]):
        lines = lines[:1]
    text = " ".join(_without_comment(line) for line in lines)
    return " ".join(text.replace("\\ ", " ").split())


def documented_commands(name: str) -> list[str]:
    text = DOCUMENTS[name].read_text()
    return [command for language, body in fenced_blocks(text) if language in SHELL_LANGUAGES
            for command in split_commands(_console_input(body) if language == "console" else body)]


def _console_input(body: str) -> str:
    """A console block's commands: its `$ ` lines (and their continuations), not the output."""
    kept, continued = [], False
    for line in body.splitlines():
        if line.startswith("$ ") or continued:
            kept.append(line.removeprefix("$ "))
            continued = line.rstrip().endswith("\\")
    return "\n".join(kept)


def _serve_and_curl(command: str) -> bool:
    """README commands run against `make serve`: the server itself and every request to it."""
    key = command_key(command)
    return key in ("make serve", "make serve &") or (key.startswith(("curl ", "until curl ")) and "localhost:8000" in key)


def _training(command: str) -> bool:
    return command_key(command).startswith(("likeness train ", "torchrun "))


def _export_or_evaluate(command: str) -> bool:
    return command_key(command).startswith(("likeness export ", "likeness evaluate "))


def readme_runs(select) -> list[str]:
    """The front door's commands that ``select`` picks, page by page in FRONT order, but those NOT_RUN lists."""
    return [command for name in FRONT for command in documented_commands(name)
            if select(command) and command_key(command) not in NOT_RUN[name]]


# What runs where ---------------------------------------------------------------------------------

def test_every_fenced_block_names_its_language():
    # An unlabelled block could hold commands nobody runs; say `bash` for commands, `text` for output.
    for name, path in DOCUMENTS.items():
        unlabelled = [body.splitlines()[0] for language, body in fenced_blocks(path.read_text()) if not language]
        assert not unlabelled, f"{name}: fenced blocks without a language, starting: {unlabelled}"


def test_the_block_reader_keeps_each_command_whole():
    body = ("# a comment\nmake serve &   # in the background\ncat > x.toml <<'EOF'\n[a]\nb = 1   # one\nEOF\n"
            "likeness train --config x.toml\nA=1 B=2 \\\n    likeness serve &\nfor g in 0 1; do\n  echo $g\ndone\n"
            "for a in 1; do echo && break; done\n")
    commands = split_commands(body)
    assert [command_key(c) for c in commands] == [
        "make serve &", "cat > x.toml <<'EOF'", "likeness train --config x.toml", "A=1 B=2 likeness serve &",
        "for g in 0 1; do echo $g done", "for a in 1; do echo && break; done"]
    assert commands[1].endswith("b = 1   # one\nEOF")
    console = "$ likeness index load shop \\\n    --url $URL\n{\"added\": 2}\n$ curl -s $URL/readyz\n"
    assert [command_key(c) for c in split_commands(_console_input(console))] == [
        "likeness index load shop --url $URL", "curl -s $URL/readyz"]


def test_every_documented_command_is_run_or_listed_with_a_reason():
    run_in_readme = {command_key(c) for select in (_serve_and_curl, _training, _export_or_evaluate)
                     for c in readme_runs(select)}
    for name in DOCUMENTS:
        keys = [command_key(c) for c in documented_commands(name)]
        listed = NOT_RUN[name]
        assert set(listed) <= set(keys), f"{name}: NOT_RUN lists commands it no longer has: {set(listed) - set(keys)}"
        if name in FRONT:
            neither = [key for key in keys if key not in run_in_readme and key not in listed]
            assert not neither, f"{name} commands no test runs and NOT_RUN does not explain: {neither}"
    # The guide runs whole but for installing likeness.
    assert all(key.startswith("pip install ") for key in NOT_RUN["docs/own-data.md"])


def test_not_run_commands_parse():
    from training.cli import build_parser, config_overrides
    from training.config import load_config

    make = shutil.which("make")
    for key in (key for name in FRONT for key in NOT_RUN[name]):
        if key.startswith("for "):
            assert " docker " in key, key
            continue
        words = shlex.split(key)
        if words[:1] == ["make"]:
            done = subprocess.run([make, "-n", f"VENV={VENV}", *words[1:]], cwd=REPO, capture_output=True, text=True)
            assert done.returncode == 0 and "pytest" in done.stdout, done.stderr
        elif words[:2] == ["likeness", "train"]:
            args = build_parser().parse_args(words[1:])
            load_config(args.config, config_overrides(args))
        elif words[:1] == ["cp"]:
            assert (REPO / words[1]).is_file(), words[1]
        elif words[:7] == ["docker", "compose", "--profile", "train", "run", "--rm", "train"]:
            # The training image's entry point is `python -m training` (docker/train.Dockerfile).
            assert 'ENTRYPOINT ["python", "-m", "training"]' in (REPO / "docker" / "train.Dockerfile").read_text()
            args = build_parser().parse_args(words[7:])
            if args.command == "train":
                load_config(args.config, config_overrides(args))
        else:
            assert words[0] == "docker", key
    assert NOT_RUN["docs/own-data.md"]  # pip install: its extras exist in pyproject.toml
    extras = (REPO / "pyproject.toml").read_text()
    assert all(f"\n{extra} = [" in extras for extra in ("train", "service"))


# README: the server and every request to it ------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def json_values(text: str) -> list:
    """Every JSON object printed in ``text`` (curl prints them without a newline), in order."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at += 1
            continue
        found.append(value)
        at = end
    return found


def _shell_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "LIKENESS_PORT": str(port),
           **extra}
    for name in ("LIKENESS_FASHION_MNIST_DIR",):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@pytest.fixture(scope="module")
def readme_service(tmp_path_factory):
    """`make serve` as the README starts it, on a free port and with its index in a temporary folder;
    yields (port, a folder holding the a.png and b.png the README's requests upload)."""
    work = tmp_path_factory.mktemp("readme-serve")
    port = free_port()
    env = _shell_env(work, port, LIKENESS_DATA_DIR=str(work / "data"))
    started = [c for c in readme_runs(_serve_and_curl) if command_key(c).startswith("make serve")]
    assert len(started) == 2  # the top of the page, and "Try it"
    # -o: the suite's environment has the service extra; never reinstall into it from here.
    server = subprocess.Popen([shutil.which("make"), "-o", f"{VENV}/.service", f"VENV={VENV}", "serve"], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    shutil.copy(GALLERY / "fmnist-test-00035.png", work / "a.png")
    shutil.copy(GALLERY / "fmnist-test-00000.png", work / "b.png")
    try:
        # The page's own `until curl .../readyz` waits in "Try it"; a test run alone waits here.
        subprocess.run(["bash", "-c", f"until curl -sf localhost:{port}/readyz >/dev/null; do sleep 1; done"],
                       env=env, timeout=240, check=True)
        yield port, work, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def run_readme_requests(port: int, cwd: Path, env: dict[str, str], commands: list[str]) -> list:
    script = "set -e\n" + "\n".join(c.replace("localhost:8000", f"localhost:{port}") for c in commands)
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{script}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return json_values(done.stdout)


def test_readme_try_it_runs(readme_service):
    port, _, env = readme_service
    try_it = [c for c in documented_commands("README.md") if _serve_and_curl(c) and not
              command_key(c).startswith("make serve")]
    ready, search, similarity, duplicates = run_readme_requests(port, REPO, env, try_it)
    assert ready["status"] == "ready" and ready["index_items"] == len(list(GALLERY.glob("*.png")))
    # "the nearest gallery items to a gallery image: itself first, with score 1.0"
    assert len(search["results"]) == 5 and search["results"][0]["id"] == "fmnist-test-00000"
    assert search["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert search["results"][0]["near_duplicate"] is True  # itself: the same image
    assert {"score", "probability", "same", "threshold", "near_duplicate", "near_duplicate_score"} <= set(similarity)
    assert -1 <= similarity["score"] <= 1 and 0 <= similarity["probability"] <= 1
    assert set(duplicates) == {"groups", "next", "min_score"}


def test_readme_api_examples_run(readme_service):
    port, work, env = readme_service
    requests = [c for name in FRONT[1:] for c in documented_commands(name)
                if _serve_and_curl(c) and command_key(c) not in NOT_RUN[name]]
    printed = run_readme_requests(port, work, env, requests)
    added, item, filtered, deleted, embedded, page, model, by_image, by_id, batch, model_again = printed
    assert added == {"added": 2, "ids": ["sku-1", "sku-2"]}
    assert item["id"] == "sku-1" and item["metadata"] == {"label": "dress"}
    assert filtered["results"][0]["id"] == "sku-1" and filtered["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(hit["metadata"] == {"label": "dress"} for hit in filtered["results"])
    assert deleted == {"deleted": "sku-2"}
    assert len(embedded["embeddings"]) == 2 and embedded["dim"] == len(embedded["embeddings"][0])
    assert len(page["items"]) == 2 and page["next"]
    assert model["spec"]["embedding_dim"] == embedded["dim"] and model_again == model
    assert by_image["results"][0]["id"] == "sku-1"
    assert "sku-1" in [hit["id"] for hit in by_id["results"]]
    assert len(batch["results"]) == 2 and all(len(hits) == 3 for hits in batch["results"])


# README: training, export and evaluate ------------------------------------------------------------

# The run that `--resume` continues, and that the export and evaluate commands take.
CONTINUED = ("likeness train --config default", "likeness train --config default --resume",
             "likeness train --config default --set 'init_from=\"runs/fmnist-default/best.pt\"' --set name=tuned")


@pytest.fixture(scope="module")
def readme_training(tmp_path_factory):
    """Each README training command as written plus TINY, in README order, each in a folder of its
    own but `--resume`, which continues `likeness train --config default` in its folder; there the
    export and evaluate commands then run as written. Returns (that folder, {command: process})."""
    root = tmp_path_factory.mktemp("readme-train")
    work = root / "default"
    env = _shell_env(root, free_port())
    done = {}
    for number, command in enumerate(readme_runs(_training)):
        key = command_key(command)
        if key in done:  # written on two pages: it ran as written once, the same in both places
            continue
        folder = work if key in CONTINUED else root / str(number)
        folder.mkdir(exist_ok=True)
        argv = shlex.split(command, comments=True) + TINY
        done[key] = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    for command in readme_runs(_export_or_evaluate):
        if command_key(command) in done:
            continue
        done[command_key(command)] = subprocess.run(shlex.split(command, comments=True), cwd=work, env=env,
                                                    capture_output=True, text=True, timeout=300)
    return work, done


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count()


def test_readme_training_commands_run(readme_training):
    work, done = readme_training
    trained = [key for key in done if key.startswith(("likeness train", "torchrun"))]
    assert len(trained) == 8, trained
    for key in trained:
        result = done[key]
        if "--device cuda:1" in key and _cuda_devices() < 2:
            # "asking for CUDA where there is none is a one-line error (exit 2), never a quiet CPU run"
            assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
            assert "cuda:1" in result.stderr
            continue
        assert result.returncode == 0, f"{key}\n{result.stderr[-3000:]}"
        assert result.stdout.strip().splitlines()[-1] in ("runs/fmnist-default", "runs/fmnist-csn", "runs/tuned")
    assert "resumed from runs/fmnist-default/last.pt" in done["likeness train --config default --resume"].stderr
    assert "fine-tuning from runs/fmnist-default/best.pt" in done[CONTINUED[2]].stderr
    holdout = done['likeness train --config default --holdout-classes "coat,shirt,sneaker,ankle boot"'].stderr
    assert "coat" in holdout.split("held out of training:")[1].splitlines()[0]
    # The conditional model ends with its test triplet accuracy per aspect of its config.
    accuracy = done["likeness train --config csn"].stderr.split("test triplet accuracy: ")[1].splitlines()[0]
    assert [part.split()[0] for part in accuracy.split(", ")] == ["category", "group", "color", "overall"]


def test_readme_export_and_evaluate_run(readme_training):
    work, done = readme_training
    export = done["likeness export --checkpoint runs/fmnist-default/best.pt --output models/my-model.onnx"]
    assert export.returncode == 0, export.stderr[-3000:]
    exported = json.loads(export.stdout)
    assert (work / "models" / "my-model.onnx").is_file() and (work / "models" / "my-model.md").is_file()
    assert exported["onnx_max_abs_diff"] < 1e-4
    evaluate = done["likeness evaluate models/my-model.onnx"]
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    # evaluate re-measures what export measured, on the same file and split.
    assert json.loads(evaluate.stdout)["test"]["precision_at_1"] == pytest.approx(
        exported["metrics"]["test"]["precision_at_1"], abs=1e-6)


def test_readme_index_load_takes_the_url_before_or_after_the_folder(tmp_path):
    # docs/api.md writes `load --url URL DIR`, the guide `load DIR --url URL`: both parse. An empty
    # folder sends nothing, so no service is needed.
    from service.jobs import main

    (tmp_path / "empty").mkdir()
    api = DOCUMENTS["docs/api.md"].read_text()
    assert "`load --url URL DIR`" in api
    for argv in (["load", "--url", "http://127.0.0.1:9", str(tmp_path / "empty")],
                 ["load", str(tmp_path / "empty"), "--url", "http://127.0.0.1:9"]):
        assert main(argv) == 0


# docs/own-data.md, whole ------------------------------------------------------------------------

def guide_script_commands() -> list[str]:
    listed = NOT_RUN["docs/own-data.md"]
    return [c for c in documented_commands("docs/own-data.md") if command_key(c) not in listed]


def test_the_guide_covers_the_whole_path():
    commands = "\n".join(guide_script_commands())
    for needed in ("likeness demo-data", "likeness train", "--data-dir", 'dataset = "folder"', "image_size =",
                   "channels =", "fit =", "pad_value =", "likeness export", "likeness serve", "likeness index load",
                   "/search", 'dataset = "aspects-csv"', "aspects = [", "aspect=colour"):
        assert needed in commands, needed
    # The README sends new users there, before anything else.
    assert "docs/own-data.md" in DOCUMENTS["README.md"].read_text().split("## Try it")[0]


@pytest.fixture(scope="module")
def guide_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("guide")
    # -e: the first failing command fails the run; the trap stops a server a failure left running.
    script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "\n".join(guide_script_commands())
    done = subprocess.run(["bash", "-c", script], cwd=work, env=_shell_env(work, free_port(), **guide_quick_sizes()),
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    return work, done


def test_every_command_in_the_guide_runs(guide_run):
    work, done = guide_run
    assert (work / "models" / "shop.onnx").is_file() and (work / "models" / "shop-csn.onnx").is_file()
    printed = json_values(done.stdout)
    loads = [value for value in printed if set(value) == {"added", "failed"}]
    assert guide_quick_sizes()["PHOTOS"] == "20"
    assert loads == [{"added": 160, "failed": 0}] * 2  # PHOTOS=20: 16 training photos in each of 10 folders
    searches = [value for value in printed if "results" in value]
    assert len(searches) == 3 and all(len(s["results"]) == 5 for s in searches)
    assert all(r["id"].startswith(r["metadata"]["label"] + "/") for s in searches for r in s["results"])
    assert all(r["metadata"]["label"] == "coat" for r in searches[1]["results"])  # the filtered search
    assert searches[2]["aspect"] == "colour"


def test_the_cards_describe_the_catalogue_not_fashion_mnist(guide_run):
    work, _ = guide_run
    card = (work / "models" / "shop.md").read_text()
    assert "Trained and evaluated on image folder `shop`: 128 training images of 10 classes, 32 held out" in card
    assert "Licence: not recorded by likeness" in card and "Fashion-MNIST" not in card
    assert "likeness evaluate models/shop.onnx\n" in card
    csn = (work / "models" / "shop-csn.md").read_text()
    assert "aspect CSVs in `shop` (train.csv, test.csv)" in csn
    assert ("Aspect `colour` (8 values): " in csn and "navy" in csn and "mustard" in csn)
    assert "palette" not in csn and "Fashion-MNIST" not in csn
