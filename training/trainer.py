"""The training loop: data, model, objective, loop, evaluate, save. Reads top to bottom.

Runs unchanged on one process or under ``torchrun`` (DistributedDataParallel over gloo or NCCL):
each rank trains on its shard of one seeded global batch order; only rank 0 logs and saves.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from contract import InputSpec
from training.config import TrainConfig, config_to_toml
from training.data.sources import Splits
from training.evaluation import torch_embedder
from training.models import EmbeddingModel, build_model
from training.objectives import Objective, build_objective
from training.tasks import load_task

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The mean of a per-rank number over all ranks (the number itself on one process)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    @classmethod
    def from_environment(cls) -> Distributed:
        """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())


class TrainingStep(nn.Module):
    """Model and objective as one module: ``(loss, stats) = step(batch)``."""

    def __init__(self, model: EmbeddingModel, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.objective(self.model, batch)
        return out.loss, out.stats


class MetricsLog:
    """Per-epoch metrics to ``metrics.jsonl``, per-step loss to ``steps.jsonl``, and TensorBoard when
    it is installed."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.steps_path = run_dir / "steps.jsonl"
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # TensorBoard is optional; the JSONL log is the record.
                self.writer = None

    def restart_from(self, history: list[dict[str, Any]], step: int) -> None:
        """After a resume, make the logs say exactly what the checkpoint holds (no epoch twice)."""
        if not self.enabled:
            return
        self.path.write_text("".join(json.dumps(row) + "\n" for row in history))
        if self.steps_path.is_file():
            kept = [line for line in self.steps_path.read_text().splitlines() if json.loads(line)["step"] <= step]
            self.steps_path.write_text("".join(line + "\n" for line in kept))

    def step(self, step: int, loss: float) -> None:
        if self.enabled:
            with self.steps_path.open("a") as handle:
                handle.write(json.dumps({"step": step, "loss": round(loss, 6)}) + "\n")

    def write(self, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({"epoch": epoch, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, epoch)
            self.writer.flush()


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 [N, H, W, C] images, in [0, 1] units."""
    sample = images[: 20_000].astype(np.float64) / 255.0
    mean = sample.mean(axis=(0, 1, 2))
    std = sample.std(axis=(0, 1, 2)).clip(min=1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def input_spec_for(images: np.ndarray) -> InputSpec:
    _, height, width, channels = images.shape
    return InputSpec(height=height, width=width, channels=channels, fit="pad", resample="bilinear", pad_value=0)


def build_optimizer(config: TrainConfig, params: list[nn.Parameter], total_steps: int):
    optim = config.optim
    if optim.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=0.9, weight_decay=optim.weight_decay, nesterov=True)
    elif optim.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optim.lr, total_steps=max(total_steps, 2),
                                                        pct_start=optim.warmup_fraction)
    elif optim.schedule == "cosine":
        warmup = max(1, int(total_steps * optim.warmup_fraction))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1))))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return optimizer, scheduler


def train(config: TrainConfig, resume: bool = False, command: list[str] | None = None,
          progress: bool = True) -> Path:
    """Train one model; return the run directory holding ``best.pt``, ``last.pt`` and the logs."""
    ddp = Distributed.from_environment()
    seed_everything(config.seed)
    if config.optim.threads:
        torch.set_num_threads(config.optim.threads)
    run_dir = config.run_dir
    if ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(config_to_toml(config))

    # Data
    task = load_task(config)
    splits: Splits = task.splits
    spec = input_spec_for(splits.train.images)
    mean, std = channel_stats(splits.train.images)

    # Model and objective
    model = build_model(config.model, spec.channels, mean, std, aspects=len(task.aspects))
    objective: Objective = build_objective(config.objective, len(splits.train.classes), config.model.embedding_dim,
                                           aspect_classes=task.aspect_classes, instance_dims=config.model.instance_dims)
    total_steps = task.steps_per_epoch(objective.batch_kind) * config.optim.epochs
    if config.optim.max_steps:
        total_steps = min(total_steps, config.optim.max_steps)
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    optimizer, scheduler = build_optimizer(config, params, total_steps)

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best": None, "history": []}
    last = run_dir / CHECKPOINT_LAST
    if resume and last.is_file():
        saved = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        objective.load_state_dict(saved["objective"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        if ddp.is_main:
            print(f"resumed from {last} at epoch {state['epoch']}, step {state['step']}", file=sys.stderr)
    step_module: nn.Module = TrainingStep(model, objective)
    if ddp.world_size > 1:
        # One DDP wrapper around model *and* objective, so trainable proxies (ArcFace) sync too.
        step_module = nn.parallel.DistributedDataParallel(step_module)

    log = MetricsLog(run_dir, enabled=ddp.is_main)
    if resume:
        log.restart_from(state["history"], state["step"])
    meta = {
        "config": config.model_dump(),
        # Called as a library there is no command line; the saved config replays the run exactly.
        "command": shlex.join(command or ["python", "-m", "training", "train", "--config",
                                          str(run_dir / "config.toml")]),
        "input": spec.model_dump(),
        "classes": splits.train.classes,
        "aspects": task.aspects,
        "mean": mean,
        "std": std,
        "world_size": ddp.world_size,
    }

    # Loop
    for epoch in range(state["epoch"], config.optim.epochs):
        if config.optim.max_steps and state["step"] >= config.optim.max_steps:
            break
        # Reseed per epoch: the batch order and augmentation of epoch e are the same on every rank
        # and after a resume.
        seed_everything(config.seed * 1000 + epoch)
        loader = task.train_loader(objective.batch_kind, epoch, ddp.rank, ddp.world_size)
        model.train()
        started, seen, totals = time.perf_counter(), 0, {"loss": 0.0}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.optim.epochs}", disable=not (progress and ddp.is_main),
                   leave=False, dynamic_ncols=True)
        batches = 0
        for batch in bar:
            loss, stats = step_module(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            batches += 1
            seen += sum(len(v) for k, v in batch.items() if k.startswith("images"))
            loss_value = ddp.mean(float(loss.detach()))
            totals["loss"] += loss_value
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
            log.step(state["step"], loss_value)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if config.optim.max_steps and state["step"] >= config.optim.max_steps:
                break
        elapsed = time.perf_counter() - started
        values = {f"train_{k}": v / max(batches, 1) for k, v in totals.items()}
        values["train_images_per_s"] = seen * ddp.world_size / max(elapsed, 1e-9)
        values["lr"] = float(scheduler.get_last_lr()[0])
        # Cumulative training time (validation excluded), so "time to reach P@1 = x" can be read off.
        state["train_seconds"] = state.get("train_seconds", 0.0) + elapsed
        values["train_seconds"] = state["train_seconds"]
        state["epoch"] = epoch + 1
        if ddp.is_main:
            values.update(task.validate(torch_embedder(model)))
            score = values[task.selection_metric]
            state["history"].append({"epoch": epoch + 1, **values})
            log.write(epoch + 1, values)
            summary = ", ".join(f"{k}={v:.4f}" for k, v in values.items() if k.startswith("val_") or k == "train_loss")
            print(f"epoch {epoch + 1}: {summary}", file=sys.stderr, flush=True)
            checkpoint = {**meta, "model": model.state_dict(), "objective": objective.state_dict(),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state}
            if state["best"] is None or score > state["best"]["score"]:
                state["best"] = {"epoch": epoch + 1, "score": score, "metric": task.selection_metric}
                _atomic_save(checkpoint, run_dir / CHECKPOINT_BEST)
            _atomic_save(checkpoint, last)
        if ddp.world_size > 1:
            dist.barrier()
    if ddp.is_main:
        (run_dir / "summary.json").write_text(json.dumps({"best": state["best"], "history": state["history"]}, indent=2))
    if ddp.world_size > 1:
        dist.barrier()
    return run_dir


def _atomic_save(obj: dict, path: Path) -> None:
    """Write then rename, so a crash mid-save never leaves a half-written checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_trained_model(path: str | Path) -> tuple[EmbeddingModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`train`; returns (model in eval mode, checkpoint)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    config = TrainConfig.model_validate(checkpoint["config"])
    spec = InputSpec.model_validate(checkpoint["input"])
    model = build_model(config.model, spec.channels, checkpoint["mean"], checkpoint["std"],
                        aspects=len(checkpoint.get("aspects") or []))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint
