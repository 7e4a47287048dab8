"""Shared fixtures: real data, the real shipped model, real temporary directories."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

# Idle OpenMP threads sleep instead of spinning. `make test` runs two workers, each with training
# runs and their processes, on two cores: spinning threads took the cores from each other's work.
# Measured with two `python -m training train --config default --set data.train_limit=4000 --set
# optim.epochs=2 --set 'model.widths=[16, 32, 64]' --set model.depth=1 --set optim.threads=2` (and
# 500 validation and test images, small evaluations) side by side: 55 to 69 s (103 to 132 s of CPU)
# spinning, 31 s (55 s of CPU) sleeping; one alone: 26 to 31 s either way. Set before torch loads;
# the processes the tests start inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "default.onnx"
CSN_MODEL = REPO / "models" / "csn.onnx"  # the shipped conditional (per-aspect) model
GALLERY = REPO / "service" / "gallery"


def wait_until_ready(process: subprocess.Popen, port: int, timeout: float = 90) -> httpx.Response:
    """Poll ``/readyz`` of a service started as ``process`` (stdout piped) until it answers 200;
    fail with the process's output if it exits first, or when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if ready.status_code == 200:
                return ready
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.2)


def refused_by_training_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """``python -m training ARGV`` run in this process, for a command that must be refused before
    any work (a process of its own spends 7 s importing torch first): it exits 2 without a
    traceback. Returns the lines it wrote to stderr."""
    from training.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's errors exit; the CLI's own errors return
        code = exited.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-3000:]
    return err.strip().splitlines()


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 [H, W] or [H, W, 3] -> PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def fashion_test():
    """The real Fashion-MNIST test split (from the Debian package in CI)."""
    from training.data.sources import load_raw

    _, test = load_raw("fashion-mnist")
    return test


# The modules that take longest (measured with `pytest --durations`: each trains models or runs
# the documented commands for minutes), started first: with `-n` (pytest-xdist, which `make test`
# uses) each module runs whole on one worker, and a long one handed out last would run alone at
# the end while the other worker idles.
LONGEST_FIRST = ("tests/training/test_training_run.py", "tests/test_documented_commands.py",
                 "tests/bench/test_smoke.py", "tests/service/test_crash.py", "tests/service/test_migration.py",
                 "tests/deploy/test_runtime_env.py", "tests/service/test_fuzz.py", "tests/training/test_own_data.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def order(item: pytest.Item) -> int:
        return rank.get(Path(item.path).relative_to(REPO).as_posix(), len(LONGEST_FIRST))

    items.sort(key=order)  # stable: the order within a module, and of the rest, is kept
