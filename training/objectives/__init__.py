"""Objectives by name: ``build_objective(config, ...)`` is the only door the training loop uses."""

from __future__ import annotations

from training.config import ObjectiveConfig
from training.objectives.base import LossOutput, Objective
from training.objectives.csn import build_csn_objective
from training.objectives.instance import InstanceAwareObjective, build_instance_loss
from training.objectives.metric import METRIC_OBJECTIVES, build_metric_objective


def build_objective(config: ObjectiveConfig, num_classes: int, embedding_dim: int,
                    aspect_classes: list[int] | None = None, instance_dims: int = 0) -> Objective:
    """The objective ``config`` names, with the instance term added when ``instance_weight`` > 0
    (on the last ``instance_dims`` dimensions when the embedding is split, the class loss on the rest)."""
    if instance_dims and not (config.instance_weight > 0 and config.name in [*METRIC_OBJECTIVES, "csn"]):
        raise ValueError("model.instance_dims splits the embedding for the instance term: it needs "
                         "objective.instance_weight > 0 and a class-label objective or csn")
    if config.name in METRIC_OBJECTIVES:
        objective = build_metric_objective(config, num_classes, embedding_dim - instance_dims)
    elif config.name == "csn":
        objective = build_csn_objective(config, num_classes, embedding_dim, aspect_classes or [], instance_dims)
    else:
        choices = ", ".join([*METRIC_OBJECTIVES, "csn"])
        raise ValueError(f"unknown objective {config.name!r}; choose one of {choices}")
    if config.instance_weight > 0 and config.name != "csn":  # CSN adds its own on the anchors
        instance = build_instance_loss(config.instance_loss, config.instance_temperature, config.instance_margin)
        objective = InstanceAwareObjective(objective, instance, config.instance_weight, instance_dims)
    return objective


__all__ = ["LossOutput", "Objective", "build_objective"]
