"""The checkpoint a training run writes (``best.pt``, ``last.pt``), written and read only here.

On disk it stays the plain dict ``torch.save`` has always written, key for key, so checkpoints of
earlier runs load, resume and export unchanged; in memory it is :class:`Checkpoint`, with the
config and input spec validated once, on loading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contract import InputSpec
from training.config import TrainConfig
from training.models import EmbeddingModel, build_model


class CheckpointError(ValueError):
    """The file is not a checkpoint written by ``likeness train``; the message says which and why."""


@dataclass
class RunState:
    """How far a run has got: what resuming continues from, and what the card reports."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken
    best: dict[str, Any] | None = None  # {"epoch", "score", "metric"} of the best validation so far
    history: list[dict[str, Any]] = field(default_factory=list)  # one row of metrics per epoch
    train_seconds: float = 0.0  # training time so far, validation excluded

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best": self.best, "history": self.history,
                "train_seconds": self.train_seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(epoch=int(data.get("epoch", 0)), step=int(data.get("step", 0)), best=data.get("best"),
                   history=list(data.get("history") or []), train_seconds=float(data.get("train_seconds", 0.0)))


@dataclass
class Checkpoint:
    """Everything needed to rebuild, resume or export a model."""

    config: TrainConfig
    input: InputSpec  # the contract's input the model was trained on
    mean: list[float]  # per-channel normalisation baked into the graph, in [0, 1] units
    std: list[float]
    # State dicts: the network's weights (saved under "model"), the objective's (proxies, heads),
    # the optimiser's and the scheduler's.
    weights: dict[str, torch.Tensor]
    objective: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    state: RunState = field(default_factory=RunState)
    command: str = ""  # the command line that trained it
    classes: list[str] = field(default_factory=list)  # training class names, in label order
    aspects: list[str] = field(default_factory=list)  # aspect names of a conditional model
    world_size: int = 1
    scaler: dict[str, Any] | None = None  # the fp16 gradient scaler's state (fp16 runs only)
    runtime: dict[str, Any] | None = None  # where it trained: device, GPU, precision (absent before it was recorded)
    extras: dict[str, Any] = field(default_factory=dict)  # any other keys, kept as they are

    # The on-disk dict ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The dict ``torch.save`` writes: the keys and layout checkpoints have always had, plus
        ``scaler`` and ``runtime`` when there is something to say."""
        out = {
            "config": self.config.model_dump(), "command": self.command, "input": self.input.model_dump(),
            "classes": self.classes, "aspects": self.aspects, "mean": self.mean, "std": self.std,
            "world_size": self.world_size, "model": self.weights, "objective": self.objective,
            "optimizer": self.optimizer, "scheduler": self.scheduler, "state": self.state.to_dict(),
        }
        if self.scaler is not None:
            out["scaler"] = self.scaler
        if self.runtime is not None:
            out["runtime"] = self.runtime
        out.update((key, value) for key, value in self.extras.items() if key not in out)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "checkpoint") -> Checkpoint:
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: not a likeness checkpoint (holds a {type(data).__name__}, not a dict)")
        missing = [key for key in ("config", "input", "mean", "std", "model") if key not in data]
        if missing:
            raise CheckpointError(f"{source}: not a likeness checkpoint (no {', '.join(missing)})")
        return cls(
            config=TrainConfig.model_validate(data["config"]), input=InputSpec.model_validate(data["input"]),
            mean=list(data["mean"]), std=list(data["std"]), weights=data["model"],
            objective=data.get("objective") or {}, optimizer=data.get("optimizer") or {},
            scheduler=data.get("scheduler") or {}, state=RunState.from_dict(data.get("state") or {}),
            command=data.get("command") or "", classes=list(data.get("classes") or []),
            aspects=list(data.get("aspects") or []), world_size=int(data.get("world_size", 1)),
            scaler=data.get("scaler"), runtime=data.get("runtime"),
            extras={key: value for key, value in data.items() if key not in _FIELDS},
        )

    def save(self, path: str | Path) -> None:
        """Write then rename, so a crash mid-save never leaves a half-written checkpoint."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.to_dict(), tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a checkpoint onto the CPU, whatever device wrote it."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - pickle and zip errors of every kind mean the same here
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'})") from None
        return cls.from_dict(data, str(path))

    # The dict view, for code written against the dict (``saved["state"]["history"]``) ----------
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    # The model -----------------------------------------------------------------------------------
    def build_model(self) -> EmbeddingModel:
        """The trained model, on the CPU, in eval mode."""
        model = build_model(self.config.model, self.input.channels, self.mean, self.std, aspects=len(self.aspects),
                            trunk_weights=False)
        model.load_state_dict(self.weights)
        return model.eval()


_FIELDS = {name for name in Checkpoint.__dataclass_fields__ if name != "extras"}
