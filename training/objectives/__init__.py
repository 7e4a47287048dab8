"""Objectives by name: ``build_objective(config, ...)`` is the only door the training loop uses."""

from __future__ import annotations

from training.config import ObjectiveConfig
from training.objectives.base import LossOutput, Objective
from training.objectives.csn import build_csn_objective
from training.objectives.metric import METRIC_OBJECTIVES, build_metric_objective


def build_objective(config: ObjectiveConfig, num_classes: int, embedding_dim: int,
                    aspect_classes: list[int] | None = None) -> Objective:
    if config.name in METRIC_OBJECTIVES:
        return build_metric_objective(config, num_classes, embedding_dim)
    if config.name == "csn":
        return build_csn_objective(config, num_classes, embedding_dim, aspect_classes or [])
    choices = ", ".join([*METRIC_OBJECTIVES, "csn"])
    raise ValueError(f"unknown objective {config.name!r}; choose one of {choices}")


__all__ = ["LossOutput", "Objective", "build_objective"]
