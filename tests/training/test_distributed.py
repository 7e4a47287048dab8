"""The training CLI unchanged under torchrun: 2 processes, gloo, CPU, against a single process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

STEPS = 24
OVERRIDES = ["data.train_limit=4000", "data.val_size=500", "data.test_limit=500", "optim.epochs=2",
             f"optim.max_steps={STEPS}", "optim.batch_size=64", 'objective.name="arcface"',
             "model.widths=[8, 16]", "model.depth=1", "optim.threads=1", "augment.crop_padding=0",
             "augment.hflip=false",
             # The class loss alone: the instance term's negatives are each rank's own half-batch
             # (not gathered across ranks), so with it the two curves are not meant to agree.
             "objective.instance_weight=0", "model.instance_dims=0", "model.antialias=false", "model.embedding_dim=64"]


def train(out, launcher: list[str]) -> list[float]:
    command = [*launcher, "-m", "training", "train", "--config", "default", "--no-progress"]
    for item in [*OVERRIDES, f'output_dir="{out}"']:
        command += ["--set", item]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line)["loss"] for line in (out / "steps.jsonl").read_text().splitlines()]


def test_two_process_ddp_follows_the_single_process_loss_curve(tmp_path):
    single = train(tmp_path / "single", [sys.executable])
    ddp = train(tmp_path / "ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   "--nproc-per-node", "2"])
    assert len(single) == len(ddp) == STEPS
    single, ddp = np.array(single), np.array(ddp)
    # Both learn...
    assert ddp[-6:].mean() < 0.8 * ddp[:6].mean() and single[-6:].mean() < 0.8 * single[:6].mean()
    # ...along the same curve: the same global batches and averaged gradients; only BatchNorm
    # statistics differ (each rank normalises its half of the batch).
    assert np.corrcoef(single, ddp)[0, 1] > 0.95
    assert np.mean(np.abs(ddp - single) / single) < 0.1
    # Rank 0 alone writes logs and checkpoints: one line per epoch, not one per rank.
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs)) and (tmp_path / "ddp" / "last.pt").is_file()
