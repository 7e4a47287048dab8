"""scripts/gpu-check, the one check for a machine with a GPU, runs its CPU-only dry run end to end:
train, export, embed, serve and load the service, then its JSON and table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Trains, exports and starts the service: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

SCRIPT = REPO / "scripts" / "gpu-check"


def test_the_gpu_check_dry_run_trains_exports_serves_and_reports(tmp_path):
    assert os.access(SCRIPT, os.X_OK)
    out = tmp_path / "out"
    # Its own process group, so a timeout ends the training or server it started too.
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--dry-run", "--work", str(tmp_path / "work")],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stdout[-4000:] + stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "gpu-check.log", "gpu-check.md"]
    results = json.loads((out / "gpu-check.json").read_text())
    assert results["dry_run"] is True and results["machine"]["torch"]
    steps = results["steps"]
    assert not [name for name, step in steps.items() if "error" in step], steps
    assert steps["train"]["epochs"] == 1 and steps["train"]["runtime"]["device"] == "cpu"
    assert "--device cpu" in steps["train"]["command"]
    assert steps["train_ddp"] == {"skipped": "dry run"}
    assert steps["export"]["onnx_max_abs_diff"] < 1e-4
    rates = steps["embedding"]["cpu"]
    assert rates["provider"] == "CPUExecutionProvider" and set(rates["images_per_s"]) == {"1", "8", "64"}
    assert all(rate > 0 for rate in rates["images_per_s"].values())
    http = steps["http"]
    for name in ("batching on", "batching off"):
        assert http[name]["device"] == "cpu" and http[name]["requests"] > 0 and http[name]["errors"] == 0
    assert http["mean_batch_size"] >= 1 and http["batching_speedup"] > 0
    table = (out / "gpu-check.md").read_text()
    assert table.startswith("# gpu-check (dry run, CPU only: no GPU numbers)")
    assert "| batching on | cpu |" in table and "embedding images/s" in table
