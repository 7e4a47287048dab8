"""The training loop: data, model, objective, loop, evaluate, save. Reads top to bottom.

Runs unchanged on one process or under ``torchrun`` (DistributedDataParallel over NCCL with one GPU
per rank, or gloo on CPU): each rank trains on its shard of one seeded global batch order; only rank
0 logs and saves. Where it computes (device, precision, ranks) is one :class:`Runtime`; what it saves
is one :class:`Checkpoint`; one epoch is :func:`train_one_epoch`.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import Checkpoint, CheckpointError, RunState
from training.config import TrainConfig, config_to_toml
from training.data.sources import Splits, input_spec_for
from training.data.summary import data_summary, format_data_summary
from training.evaluation import torch_embedder
from training.metrics_log import MetricsLog
from training.models import EmbeddingModel, build_model
from training.objectives import Objective, build_objective
from training.optimizers import build_optimizer, parameter_groups, pretrained_trunk_parameters
from training.runtime import Runtime
from training.tasks import Task, load_task

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"


class TrainingStep(nn.Module):
    """Model and objective as one module: ``(loss, stats) = step(batch)``. Under mixed precision the
    model runs in autocast and the objective gets its outputs in float32."""

    def __init__(self, model: EmbeddingModel, objective: Objective, runtime: Runtime | None = None) -> None:
        super().__init__()
        self.model, self.objective = model, objective
        self.runtime = runtime or Runtime()

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.objective(self.runtime.forward_model(self.model), batch)
        return out.loss, out.stats


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 [N, H, W, C] images, in [0, 1] units."""
    sample = images[: 20_000].astype(np.float64) / 255.0
    mean = sample.mean(axis=(0, 1, 2))
    std = sample.std(axis=(0, 1, 2)).clip(min=1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def train_one_epoch(step: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, loader: DataLoader,
                    runtime: Runtime, state: RunState, log: MetricsLog, max_steps: int = 0,
                    description: str = "", progress: bool = True) -> dict[str, float]:
    """One pass over ``loader`` (or until ``state.step`` reaches ``max_steps``): every batch to the
    device, forward, backward, optimiser and scheduler step, the loss logged per step.

    Advances ``state.step`` and ``state.train_seconds``; returns the epoch's mean ``train_*`` numbers
    (loss averaged over ranks), ``train_images_per_s`` over all ranks, the last ``lr`` and the
    cumulative ``train_seconds``.
    """
    step.train()
    started, seen, batches, totals = time.perf_counter(), 0, 0, {"loss": 0.0}
    bar = tqdm(loader, desc=description, disable=not (progress and runtime.is_main), leave=False, dynamic_ncols=True)
    for batch in bar:
        batch = runtime.to_device(batch)
        loss, stats = step(batch)
        if runtime.step(loss, optimizer):
            scheduler.step()  # not after a step fp16 skipped: the schedule follows the optimiser's steps
        state.step += 1
        batches += 1
        seen += sum(len(v) for k, v in batch.items() if k.startswith("images"))
        loss_value = runtime.mean(float(loss.detach()))
        totals["loss"] += loss_value
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value
        log.step(state.step, loss_value)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if max_steps and state.step >= max_steps:
            break
    elapsed = time.perf_counter() - started
    values = {f"train_{k}": v / max(batches, 1) for k, v in totals.items()}
    values["train_images_per_s"] = seen * runtime.world_size / max(elapsed, 1e-9)
    values["lr"] = float(scheduler.get_last_lr()[0])
    # Cumulative training time (validation excluded), so "time to reach P@1 = x" can be read off.
    state.train_seconds += elapsed
    values["train_seconds"] = state.train_seconds
    return values


def _refuse_another_network(last: Path, saved: TrainConfig, config: TrainConfig, *,
                            fields: tuple[str, ...] | None = None, verb: str = "resume",
                            remedy: str = "resume with the settings it was trained with, or train without --resume"
                            ) -> None:
    """A checkpoint's weights fit only the network and objective they were trained as: say which
    setting differs, in one line, rather than fail deep in ``load_state_dict``. ``fields`` limits
    the objective's settings compared (a fine-tune may change loss weights, not the proxies' shape)."""
    differences = [f"{section}.{key}: {value!r} vs {getattr(getattr(config, section), key)!r}"
                   for section in ("model", "objective")
                   for key, value in getattr(saved, section).model_dump().items()
                   if (section == "model" or fields is None or key in fields)
                   and value != getattr(getattr(config, section), key)]
    if differences:
        raise CheckpointError(f"cannot {verb} {last}: it was trained with other settings ({'; '.join(differences)}, "
                              f"saved vs now); {remedy}")


def _load_weights(module: nn.Module, weights: dict[str, Any], source: Path, what: str) -> None:
    """``load_state_dict`` with a one-line error: the settings compared above can agree while the
    data do not (another number of classes gives the proxies another shape)."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line or "Missing" in line),
                     str(error).splitlines()[0])
        raise CheckpointError(f"{source}: its {what} does not fit this run ({first}); was it trained on other "
                              "data (channels, classes, aspects)?") from None


# The objective settings that shape its parameters (proxies); the rest only weigh or tune losses.
_OBJECTIVE_SHAPE = ("name", "overall_loss")


@dataclass
class Run:
    """Everything one training run holds: its task and network, its objective and optimiser, where
    it stands, and what every checkpoint it writes records."""

    config: TrainConfig
    runtime: Runtime
    task: Task
    model: EmbeddingModel
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any
    record: Checkpoint
    state: RunState = field(default_factory=RunState)


def train(config: TrainConfig, resume: bool = False, command: list[str] | None = None,
          progress: bool = True, runtime: Runtime | None = None) -> Path:
    """Train one model; return the run directory holding ``best.pt``, ``last.pt`` and the logs.

    ``runtime`` says where (``Runtime.start(device, precision)``); by default CUDA when present,
    with mixed precision there, and the CPU in fp32 otherwise. In the torchvision references' shape:
    set up, restore (fine-tune or resume), then one epoch at a time, each ending in validation and a
    checkpoint.
    """
    runtime = runtime or Runtime.start()
    seed_everything(config.seed)
    if config.optim.threads:
        torch.set_num_threads(config.optim.threads)
    run = set_up(config, runtime, command)
    restore(run, resume)
    # One DDP wrapper around model *and* objective, so trainable proxies (ArcFace) sync too.
    step_module = runtime.wrap(TrainingStep(run.model, run.objective, runtime))
    log = MetricsLog(config.run_dir, enabled=runtime.is_main)
    if resume:
        log.restart_from(run.state.history, run.state.step)
    for epoch in range(run.state.epoch, config.optim.epochs):
        if config.optim.max_steps and run.state.step >= config.optim.max_steps:
            break
        values = train_epoch(run, step_module, log, epoch, progress)
        if runtime.is_main:
            end_of_epoch(run, log, epoch, values)
        runtime.barrier()
    if runtime.is_main:
        (config.run_dir / "summary.json").write_text(json.dumps({"best": run.state.best,
                                                                 "history": run.state.history}, indent=2))
    runtime.barrier()
    return config.run_dir


def set_up(config: TrainConfig, runtime: Runtime, command: list[str] | None) -> Run:
    """The run's folder, data (described on stderr and in data.json), network, objective and optimiser."""
    run_dir = config.run_dir
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(config_to_toml(config))
    task = load_task(config)
    splits: Splits = task.splits
    spec = input_spec_for(splits.train.images, config.data)
    mean, std = channel_stats(splits.train.images)
    data_facts = data_summary(task, config, spec)
    if runtime.is_main:
        print(format_data_summary(data_facts), file=sys.stderr, flush=True)
        (run_dir / "data.json").write_text(json.dumps(data_facts, indent=2) + "\n")
    # Model and objective, on the device before the optimiser sees their parameters
    model = runtime.place(build_model(config.model, spec.channels, mean, std, aspects=len(task.aspects)))
    objective: Objective = build_objective(config.objective, len(splits.train.classes), config.model.embedding_dim,
                                           aspect_classes=task.aspect_classes,
                                           instance_dims=config.model.instance_dims).to(runtime.device)
    total_steps = task.steps_per_epoch(objective.batch_kind) * config.optim.epochs
    if config.optim.max_steps:
        total_steps = min(total_steps, config.optim.max_steps)
    optimizer, scheduler = build_optimizer(config, parameter_groups(config, model, objective), total_steps)
    record = Checkpoint(
        config=config, input=spec, mean=mean, std=std, weights={},
        # Called as a library there is no command line; the saved config replays the run exactly.
        command=shlex.join(command or ["python", "-m", "training", "train", "--config", str(run_dir / "config.toml")]),
        classes=splits.train.classes, aspects=task.aspects, world_size=runtime.world_size,
        runtime=runtime.describe(), extras={"data_summary": data_facts},
    )
    return Run(config, runtime, task, model, objective, optimizer, scheduler, record)


def restore(run: Run, resume: bool) -> None:
    """Start from another run's weights (``init_from``), or continue this run's ``last.pt``."""
    config, last = run.config, run.config.run_dir / CHECKPOINT_LAST
    resuming = resume and last.is_file()
    if config.init_from and not resuming:  # a resumed fine-tune continues from its own last.pt
        start = Checkpoint.load(config.init_from)
        _refuse_another_network(Path(config.init_from), start.config, config, fields=_OBJECTIVE_SHAPE,
                                verb="fine-tune from", remedy="fine-tune a network of the same shape")
        _load_weights(run.model, start.weights, Path(config.init_from), "network")
        _load_weights(run.objective, start.objective, Path(config.init_from), "objective (proxies)")
        if run.runtime.is_main:
            print(f"fine-tuning from {config.init_from} (its epoch {start.state.epoch})", file=sys.stderr)
    if resuming:
        saved = Checkpoint.load(last)  # onto the CPU; load_state_dict copies onto the device
        _refuse_another_network(last, saved.config, config)
        _load_weights(run.model, saved.weights, last, "network")
        _load_weights(run.objective, saved.objective, last, "objective (proxies)")
        run.optimizer.load_state_dict(saved.optimizer)
        run.scheduler.load_state_dict(saved.scheduler)
        if run.runtime.scaler is not None and saved.scaler is not None:
            run.runtime.scaler.load_state_dict(saved.scaler)
        run.state = saved.state
        if run.runtime.is_main:
            print(f"resumed from {last} at epoch {run.state.epoch}, step {run.state.step}", file=sys.stderr)


def train_epoch(run: Run, step_module: nn.Module, log: MetricsLog, epoch: int, progress: bool) -> dict[str, float]:
    config, runtime = run.config, run.runtime
    # Reseed per epoch: the batch order and augmentation of epoch e are the same on every rank
    # and after a resume.
    seed_everything(config.seed * 1000 + epoch)
    for parameter in pretrained_trunk_parameters(run.model):  # the head learns alone first
        parameter.requires_grad_(epoch >= config.optim.head_only_epochs)
    loader = runtime.loader(run.task.train_loader(run.objective.batch_kind, epoch, runtime.rank, runtime.world_size))
    values = train_one_epoch(step_module, run.optimizer, run.scheduler, loader, runtime, run.state, log,
                             max_steps=config.optim.max_steps, progress=progress,
                             description=f"epoch {epoch + 1}/{config.optim.epochs}")
    run.state.epoch = epoch + 1
    return values


def end_of_epoch(run: Run, log: MetricsLog, epoch: int, values: dict[str, float]) -> None:
    """Validate, log, and write last.pt (and best.pt when validation improved)."""
    state, task = run.state, run.task
    values.update(task.validate(torch_embedder(run.model)))
    score = values[task.selection_metric]
    state.history.append({"epoch": epoch + 1, **values})
    log.write(epoch + 1, values)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in values.items() if k.startswith("val_") or k == "train_loss")
    print(f"epoch {epoch + 1}: {summary}", file=sys.stderr, flush=True)
    improved = state.best is None or score > state.best["score"]
    if improved:
        state.best = {"epoch": epoch + 1, "score": score, "metric": task.selection_metric}
    scaler = run.runtime.scaler
    checkpoint = replace(run.record, weights=run.model.state_dict(), objective=run.objective.state_dict(),
                         optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(), state=state,
                         scaler=scaler.state_dict() if scaler is not None else None)
    if improved:
        checkpoint.save(run.config.run_dir / CHECKPOINT_BEST)
    checkpoint.save(run.config.run_dir / CHECKPOINT_LAST)


def load_trained_model(path: str | Path) -> tuple[EmbeddingModel, Checkpoint]:
    """Rebuild a model from a checkpoint written by :func:`train`: (model on the CPU in eval mode,
    the checkpoint). ``checkpoint["state"]`` and the like still read as the saved dict does."""
    checkpoint = Checkpoint.load(path)
    return checkpoint.build_model(), checkpoint
