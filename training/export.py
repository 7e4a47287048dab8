"""Checkpoint -> ONNX file with its spec, checked against PyTorch, plus a model card.

The exported graph is the contract: uint8 [N, H, W, C] ``images`` in, L2-normalised ``embedding``
(and ``aspect_embeddings`` for conditional models) out, batch axis dynamic. Static NSL layers are
folded first, so the graph holds plain convolutions. Threshold and calibration are fitted on
validation pairs with the exported graph itself; the test split is only measured.

The graph is always traced, and checked against PyTorch, on the CPU; calibration and evaluation run
the exported graph in ONNX Runtime on the chosen device (``--device``), as the service would.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from contract import (
    ASPECTS_OUTPUT,
    EMBEDDING_OUTPUT,
    IMAGES_INPUT,
    SPEC_METADATA_KEY,
    InputSpec,
    ModelSpec,
)
from training.cards import write_model_card
from training.checkpoint import Checkpoint
from training.config import TrainConfig
from training.data.summary import data_summary, describe_data
from training.evaluate import calibrate, evaluate_task, fit_near_duplicate, near_duplicate_quality
from training.evaluation import onnx_embedder, torch_embedder
from training.layers import fold_static_layers
from training.models.pixel_fusion import PCA_SAMPLE, with_pixel_pca
from training.quantize import CALIBRATION_SEED, agreement, calibration_sample, quantize_int8
from training.runtime import resolve_device
from training.tasks import load_task
from training.trainer import load_trained_model

PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 7, 64)
QUANTIZATIONS = ("int8",)


class ExportError(RuntimeError):
    """The exported graph disagrees with PyTorch, or cannot be written."""


class _Graph(nn.Module):
    """The exported callable: only the contract's input, only the contract's outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model(images)


def export_onnx(model: nn.Module, spec: InputSpec, path: str | Path, aspects: bool) -> None:
    """Write the bare graph (no spec yet) with a dynamic batch axis."""
    example = torch.zeros(2, spec.height, spec.width, spec.channels, dtype=torch.uint8)
    outputs = [EMBEDDING_OUTPUT, ASPECTS_OUTPUT] if aspects else [EMBEDDING_OUTPUT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not actionable here
        program = torch.onnx.export(
            _Graph(model).eval(), (example,), input_names=[IMAGES_INPUT], output_names=outputs,
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=65536)}},
            dynamo=True, verbose=False,
        )
    program.save(str(path), external_data=False)


def parity(model: nn.Module, onnx_path: str | Path, images: np.ndarray) -> float:
    """Largest |ONNX Runtime - PyTorch| over the outputs, at batch sizes 1, 7 and 64."""
    reference, candidate = torch_embedder(model), onnx_embedder(onnx_path)
    worst = 0.0
    for size in PARITY_BATCHES:
        batch = images[:size]
        for expected, got in zip(reference(batch), candidate(batch)):
            if expected is not None:
                worst = max(worst, float(np.abs(expected - got).max()))
    return worst


def attach_spec(onnx_path: str | Path, spec: ModelSpec, output: Path) -> None:
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_METADATA_KEY, spec.to_json()
    model.doc_string = f"likeness model {spec.name} {spec.version}"
    onnx.checker.check_model(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, output)


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
                            data_dir: str | None = None, pixel_pca: tuple[int, float] | None = None) -> dict[str, Any]:
    """The open-set run's seen- and unseen-class numbers, for the shipped model's card. With
    ``pixel_pca`` (dims, share) the run is served as the shipped model is, its pixel subspace fitted
    on the run's own training split (the seen classes), and the learned embedding alone is measured too."""
    from training.evaluate import TEST_PAIR_SEED, evaluate_split, map_at_r_by_class_name, open_set_metrics
    from training.evaluation import embed_all, evaluate_embeddings
    from training.evaluation.embed import pixel_embedder

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


def export_checkpoint(checkpoint: str | Path, output: str | Path, *, name: str | None = None,
                      version: str | None = None, data_dir: str | None = None,
                      command: list[str] | None = None, pairs: int | None = None,
                      open_set_checkpoint: str | Path | None = None, device: str = "auto",
                      quantize: str | None = None, pixel_pca: int = 0, pixel_share: float = 0.0,
                      instance_share: float | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """Export, verify, calibrate, evaluate; write ``output`` and its card; return a summary.

    ``device`` (auto | cpu | cuda | cuda:N) is where calibration and evaluation run; the graph is
    traced and checked on the CPU whatever it is. ``quantize="int8"`` ships the graph quantized
    (training/quantize.py): thresholds and numbers are then fitted and measured on the int8 graph.
    ``pixel_pca`` > 0 appends that many principal components of the pixels, fitted on the training
    split, with ``pixel_share`` of the cosine (training/models/pixel_fusion.py); the open-set run gets
    its own, fitted on its seen classes. ``instance_share`` serves a split model's two halves with
    another weight than it was trained with (bench instance-share measures each); the card says so.
    ``notes`` are the publisher's own lines for the card (why this backbone, what data), kept in the spec.
    """
    notes = [note.strip() for note in notes or []]
    if not all(notes):
        raise ExportError("--note: a card note needs some text")
    if (pixel_pca or pixel_share) and not (pixel_pca > 0 and 0 < pixel_share < 1):
        raise ExportError(f"--pixel-pca {pixel_pca} --pixel-share {pixel_share}: the pixel subspace needs both, "
                          "dimensions > 0 and a share in (0, 1)")
    output = Path(output)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZATIONS)}")
    run_on = resolve_device(device)  # a device this machine lacks is refused before any work
    if command is None:  # called as a library: record the equivalent command line
        command = ["python", "-m", "training", "export", "--checkpoint", str(checkpoint), "--output", str(output)]
        for flag, value in (("--name", name), ("--version", version), ("--data-dir", data_dir),
                            ("--open-set-checkpoint", open_set_checkpoint),
                            ("--device", device if device != "auto" else None), ("--quantize", quantize),
                            ("--pixel-pca", pixel_pca), ("--pixel-share", pixel_share),
                            ("--instance-share", instance_share)):
            if value or (flag == "--instance-share" and value is not None):
                command += [flag, str(value)]
        for note in notes:
            command += ["--note", note]
    model, saved = load_trained_model(checkpoint)  # on the CPU, where it is traced and checked
    folded = fold_static_layers(model)
    config = saved.config
    trained_share = config.model.instance_share
    if instance_share is not None:
        if not model.instance_dims:
            raise ExportError(f"--instance-share: {checkpoint} has no instance subspace (model.instance_dims is 0)")
        if not 0 <= instance_share <= 1:
            raise ExportError(f"--instance-share {instance_share}: a share is in [0, 1]")
    # Loaded and checked before the long work, so a wrong one is refused at once.
    open_set = load_open_set_run(open_set_checkpoint, config) if open_set_checkpoint else None
    if instance_share is not None:  # after the recipe check: the open-set run is served alike
        model.instance_share = config.model.instance_share = instance_share
        if open_set:
            open_set[0].instance_share = instance_share
    if data_dir:
        config.data.data_dir = data_dir
    if pairs:
        config.eval.pairs = pairs
    if open_set:
        open_set[0].to(run_on)
    input_spec = saved.input
    pixels = input_spec.height * input_spec.width * input_spec.channels
    if pixel_pca > pixels:
        raise ExportError(f"--pixel-pca {pixel_pca}: the model's {input_spec.height}x{input_spec.width}x"
                          f"{input_spec.channels} input has {pixels} pixel values")
    aspects: list[str] = list(saved.aspects)
    task = load_task(config)
    if pixel_pca:
        model = with_pixel_pca(model, task.splits.train.images, pixel_pca, pixel_share)

    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.onnx"
        export_onnx(model, input_spec, bare, aspects=bool(aspects))
        difference = parity(model, bare, task.splits.test.images[: max(PARITY_BATCHES)])
        if difference > PARITY_TOLERANCE:
            raise ExportError(f"ONNX Runtime and PyTorch disagree by {difference:.2e} (> {PARITY_TOLERANCE:g})")
        graph, quantization = bare, None
        if quantize == "int8":
            graph = Path(tmp) / "int8.onnx"
            quantization = {**quantize_int8(bare, graph, calibration_sample(task.splits.train.images)),
                            "calibration_split": "train", "calibration_seed": CALIBRATION_SEED}
            quantization["agreement"] = agreement(onnx_embedder(bare), onnx_embedder(graph),
                                                  task.splits.test.images[:1000])
        # An explicit CUDA request that ONNX Runtime cannot honour is an error; auto falls back, saying so.
        embedder = onnx_embedder(graph, run_on, fallback_to_cpu=device == "auto")
        decision, calibration, aspect_decisions, aspect_calibrations = calibrate(embedder, task, config)
        near_duplicate_dims = instance_dims(model)
        near_duplicate = fit_near_duplicate(embedder, task, config, input_spec, near_duplicate_dims)
        metrics = evaluate_task(embedder, task, config, calibration, decision, input_spec)
        metrics["test"]["near_duplicates"]["decision"] = near_duplicate_quality(
            embedder, task.splits.test.images, config, input_spec, near_duplicate_dims, near_duplicate)
        metrics["export"] = {"onnx_max_abs_diff": difference, "parity_batches": list(PARITY_BATCHES),
                             "static_layers_folded": folded}
        if quantization:
            metrics["export"]["quantization"] = quantization
        if open_set:
            metrics["open_set_recipe"] = open_set_recipe_metrics(*open_set, data_dir,
                                                                 (pixel_pca, pixel_share) if pixel_pca else None)
        spec = ModelSpec(
            name=name or config.name,
            version=version or config.version,
            input=input_spec,
            embedding_dim=model.embedding_dim,
            aspects=aspects,
            decision=decision,
            calibration=calibration,
            aspect_decisions=aspect_decisions,
            aspect_calibrations=aspect_calibrations,
            near_duplicate=near_duplicate,
            near_duplicate_dims=near_duplicate_dims,
            training={**_training_record(config, saved, checkpoint, command, data_summary(task, config, input_spec)),
                      "pixel_pca": ({"dims": pixel_pca, "share": pixel_share, "fitted_on": "train",
                                     "images": min(len(task.splits.train.images), PCA_SAMPLE)} if pixel_pca else None),
                      "instance_share_trained": trained_share, "notes": notes},
            metrics=metrics,
        )
        attach_spec(graph, spec, output)
    card = write_model_card(output, spec)
    return {"model": str(output), "card": str(card), "size_bytes": output.stat().st_size,
            "onnx_max_abs_diff": difference, "metrics": metrics}


def instance_dims(model: nn.Module) -> tuple[int, int] | None:
    """Where the instance subspace sits in the exported embedding, [start, stop): the last
    ``instance_dims`` of the learned part, which a pixel subspace (PixelFusion) follows. None for a
    model without one, whose "same image" score is then the whole cosine."""
    learned = getattr(model, "model", model)  # PixelFusion wraps the trained model
    k = getattr(learned, "instance_dims", 0)
    if not k:
        return None
    return learned.embedding_dim - k, learned.embedding_dim


def _earlier_stages(config: TrainConfig) -> list[dict[str, Any]]:
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


def _training_record(config: TrainConfig, saved: Checkpoint, checkpoint: str | Path,
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
        "earlier_stages": _earlier_stages(config),
        # Where it was trained (device, GPU, precision); None for checkpoints from before it was recorded.
        "trained_on": saved.runtime,
        "export_command": shlex.join(command) if command else None,
        "exported_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
    }
