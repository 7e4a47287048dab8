"""What an export records about the run it ships (the spec's ``training``), and the open-set run of
the same recipe whose numbers its card shows beside the model's own."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.checkpoint import Checkpoint
from training.config import TrainConfig
from training.data.summary import describe_data
from training.evaluation import torch_embedder
from training.models.pixel_fusion import with_pixel_pca
from training.tasks import load_task
from training.trainer import load_trained_model


class ExportError(RuntimeError):
    """The exported graph disagrees with PyTorch, or cannot be written."""


def recipe_differences(shipped: TrainConfig, open_set: TrainConfig) -> list[str]:
    """The settings in which an open-set run differs from the shipped model's recipe.

    Only the held-out classes, the data folder, the run's name and output folder and the
    measurement settings (``eval``) may differ: anything else would put another recipe's open-set
    numbers in the card.
    """
    ignored = {"name", "version", "output_dir", "eval", "data.holdout_classes", "data.data_dir"}

    def flat(config: TrainConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in config.model_dump().items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            out.update({f"{key}.{sub}" if sub else key: v for sub, v in items})
        return {k: v for k, v in out.items() if k not in ignored and k.split(".")[0] not in ignored}

    a, b = flat(shipped), flat(open_set)
    return [f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]


def load_open_set_run(checkpoint: str | Path, recipe: TrainConfig) -> tuple[nn.Module, Checkpoint, TrainConfig]:
    """The same recipe trained without some classes: model, saved checkpoint and config.

    Refused unless it held classes out and is ``recipe`` (the shipped model's config) otherwise.
    """
    model, saved = load_trained_model(checkpoint)
    config = saved.config
    if not config.data.holdout_classes:
        raise ExportError(f"{checkpoint} was trained on every class; an open-set checkpoint needs holdout_classes")
    if differences := recipe_differences(recipe, config):
        raise ExportError(f"{checkpoint} is not the shipped model's recipe without some classes; it differs in "
                          + "; ".join(differences))
    return model, saved, config


def open_set_recipe_metrics(model: nn.Module, saved: Checkpoint, config: TrainConfig,
                            data_dir: str | None = None,
                            pixel_pca: tuple[int, float, int] | None = None) -> dict[str, Any]:
    """The open-set run's seen- and unseen-class numbers, for the shipped model's card. With
    ``pixel_pca`` (dims, share, side) the run is served as the shipped model is, its pixel subspace fitted
    on the run's own training split (the seen classes), and the learned embedding alone is measured too."""
    from training.evaluation import embed_all, evaluate_embeddings
    from training.evaluation.embed import pixel_embedder
    from training.evaluation.task_metrics import (
        TEST_PAIR_SEED,
        evaluate_split,
        map_at_r_by_class_name,
        open_set_metrics,
    )

    if data_dir:
        config.data.data_dir = data_dir
    task = load_task(config)
    unseen = task.splits.test_unseen
    served = with_pixel_pca(model, task.splits.train.images, *pixel_pca) if pixel_pca else model
    embedder = torch_embedder(served)
    pixels, _ = embed_all(pixel_embedder(), unseen.images)
    metrics = {
        "holdout_classes": list(config.data.holdout_classes),
        "train_command": saved.command,
        "seen": evaluate_split(embedder, task.splits.test.images, task.splits.test.labels, config),
        "unseen": open_set_metrics(embedder, unseen, config),
        # The baseline a learned embedding must beat on classes it never saw, on the same images.
        "unseen_raw_pixels": {**evaluate_embeddings(pixels, unseen.labels, config.eval.pairs, TEST_PAIR_SEED),
                              "map_at_r_by_class": map_at_r_by_class_name(pixels, unseen)},
    }
    if pixel_pca:  # what the pixel subspace adds: the learned embedding alone on the same images
        learned, _ = embed_all(torch_embedder(model), unseen.images)
        metrics["unseen_learned_only"] = {
            **evaluate_embeddings(learned, unseen.labels, config.eval.pairs, TEST_PAIR_SEED),
            "map_at_r_by_class": map_at_r_by_class_name(learned, unseen)}
    return metrics


def earlier_stages(config: TrainConfig) -> list[dict[str, Any]]:
    """A fine-tuned run's earlier stages (``init_from``, followed back to a run from scratch), first
    stage first: the commands and epochs that made its starting weights, so the card gives the
    whole recipe and not only its last stage."""
    stages: list[dict[str, Any]] = []
    while config.init_from:
        path = Path(config.init_from)
        if not path.is_file():
            raise ExportError(f"{config.init_from}, a checkpoint this run was fine-tuned from, is missing; the card "
                              "needs its training command (export where the earlier stages' run directories are)")
        start = Checkpoint.load(path)
        history = start.state.history
        stages.insert(0, {"checkpoint": config.init_from, "train_command": start.command,
                          "epochs_trained": start.state.epoch,
                          "train_seconds": history[-1].get("train_seconds") if history else None})
        config = start.config
    return stages


def training_record(config: TrainConfig, saved: Checkpoint, checkpoint: str | Path,
                     command: list[str] | None, data_facts: dict[str, Any]) -> dict[str, Any]:
    best = saved.state.best or {}
    return {
        # The images really used (validation shrinks on a small catalogue), from the loaded data.
        "data": describe_data(data_facts),
        "data_summary": data_facts,
        "data_config": config.data.model_dump(),
        "classes": saved.classes,
        "objective": config.objective.model_dump(exclude_none=True),
        "backbone": config.model.model_dump(),
        "optim": config.optim.model_dump(),
        "augment": config.augment.model_dump(),
        "epochs_trained": saved.state.epoch,
        # The learning curve, so time-to-quality can be read off the shipped file.
        "curve": [{k: row[k] for k in ("epoch", "train_seconds", "val_precision_at_1", "val_map_at_r",
                                       "val_near_duplicate_r1", "val_near_duplicate_worst_r1",
                                       "val_triplet_accuracy", "train_images_per_s") if k in row}
                  for row in saved.state.history],
        "best_epoch": best.get("epoch"),
        "selected_on": best.get("metric"),
        "seed": config.seed,
        "train_command": saved.command,
        "earlier_stages": earlier_stages(config),
        # Where it was trained (device, GPU, precision); None for checkpoints from before it was recorded.
        "trained_on": saved.runtime,
        "export_command": shlex.join(command) if command else None,
        "exported_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
    }
