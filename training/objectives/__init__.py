"""Objectives by name: ``build_objective(config, ...)`` is the only door the training loop uses."""

from __future__ import annotations

from training.config import ObjectiveConfig
from training.objectives.base import LossOutput, Objective
from training.objectives.metric import METRIC_OBJECTIVES, build_metric_objective


def build_objective(config: ObjectiveConfig, num_classes: int, embedding_dim: int, aspects: int = 0) -> Objective:
    if config.name in METRIC_OBJECTIVES:
        return build_metric_objective(config, num_classes, embedding_dim)
    raise ValueError(f"unknown objective {config.name!r}; choose one of {', '.join(METRIC_OBJECTIVES)}")


__all__ = ["LossOutput", "Objective", "build_objective"]
