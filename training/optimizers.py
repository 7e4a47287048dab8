"""The optimiser and its schedule, and which parameters learn at which rate."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig


def parameter_groups(config: TrainConfig, model: nn.Module, objective: nn.Module) -> list[dict[str, Any]]:
    """The optimiser's groups: a pretrained trunk's weights at ``optim.trunk_lr_factor`` of the rate
    (they start near where they should end), everything else (head, NSL block, proxies) at the rate."""
    trunk = set(pretrained_trunk_parameters(model))
    rest = [p for p in list(model.parameters()) + list(objective.parameters()) if p not in trunk]
    groups = [{"params": rest, "lr": config.optim.lr}]
    if trunk:
        groups.append({"params": list(trunk), "lr": config.optim.lr * config.optim.trunk_lr_factor})
    return groups


def pretrained_trunk_parameters(model: nn.Module) -> list[nn.Parameter]:
    body = getattr(getattr(model, "backbone", None), "body", None)
    return list(body.parameters()) if getattr(model.backbone, "name", None) and body is not None else []


def build_optimizer(config: TrainConfig, groups: list[dict[str, Any]], total_steps: int):
    optim = config.optim
    if optim.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=optim.lr, momentum=0.9, weight_decay=optim.weight_decay, nesterov=True)
    elif optim.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, lr=optim.lr, weight_decay=optim.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[group["lr"] for group in groups],
                                                        total_steps=max(total_steps, 2), pct_start=optim.warmup_fraction)
    elif optim.schedule == "cosine":
        warmup = max(1, int(total_steps * optim.warmup_fraction))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1))))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return optimizer, scheduler


