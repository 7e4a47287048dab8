"""Checkpoint -> ONNX file with its spec, checked against PyTorch, plus a model card.

The exported graph is the contract: uint8 [N, H, W, C] ``images`` in, L2-normalised ``embedding``
(and ``aspect_embeddings`` for conditional models) out, batch axis dynamic. Static NSL layers are
folded first, so the graph holds plain convolutions. Threshold and calibration are fitted on
validation pairs with the exported graph itself; the test split is only measured.

The graph is always traced, and checked against PyTorch, on the CPU; calibration and evaluation run
the exported graph in ONNX Runtime on the chosen device (``--device``), as the service would.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
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
from training.data.summary import data_summary
from training.evaluation import embed_all, onnx_embedder, torch_embedder
from training.evaluation.task_metrics import calibrate, evaluate_task, fit_near_duplicate
from training.export_options import ExportOptions, pixel_subspace
from training.export_record import (
    ExportError,
    load_open_set_run,
    open_set_recipe_metrics,
    recipe_differences,
    training_record,
)
from training.layers import fold_static_layers
from training.models.pixel_fusion import PCA_SAMPLE, layout_shape, with_pixel_pca
from training.quantize import CALIBRATION_SEED, agreement, calibration_sample, quantize_int8
from training.runtime import resolve_device
from training.tasks import Task, load_task
from training.trainer import load_trained_model

PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 7, 64)


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


@dataclass
class Loaded:
    """The checkpoint ready to trace: the model (with its pixel subspace), its run, the task's data."""

    model: nn.Module
    saved: Checkpoint
    config: TrainConfig
    task: Task
    folded: int
    trained_share: float
    open_set: tuple | None


def export_checkpoint(checkpoint: str | Path, output: str | Path, **flags: Any) -> dict[str, Any]:
    """Export, verify, calibrate, evaluate; write ``output`` and its card; return a summary.

    ``flags`` are :class:`ExportOptions`' fields. ``device`` (auto | cpu | cuda | cuda:N) is where
    calibration and evaluation run; the graph is traced and checked on the CPU whatever it is.
    ``quantize="int8"`` ships the graph quantized (training/quantize.py): thresholds and numbers are
    then fitted and measured on the int8 graph. ``pixel_pca`` > 0 appends that many principal
    components of the pixels (of side x side block means with ``pixel_side``), fitted on the training
    split, with ``pixel_share`` of the cosine (training/models/pixel_fusion.py); the open-set run gets its own, fitted on its seen classes.
    ``instance_share`` serves a split model's two halves with another weight than it was trained with
    (bench instance-share measures each); the card says so. ``notes`` are the publisher's own lines
    for the card (why this backbone, what data), kept in the spec.
    """
    options = ExportOptions(checkpoint, output, **flags)
    options.check()
    run_on = resolve_device(options.device)  # a device this machine lacks is refused before any work
    loaded = load_for_export(options)
    with tempfile.TemporaryDirectory() as tmp:
        graph, difference, quantization = trace_and_check(loaded, options, Path(tmp))
        # An explicit CUDA request that ONNX Runtime cannot honour is an error; auto falls back, saying so.
        embedder = onnx_embedder(graph, run_on, fallback_to_cpu=options.device == "auto")
        decisions, metrics = measure(embedder, loaded, options)
        metrics["export"] = {"onnx_max_abs_diff": difference, "parity_batches": list(PARITY_BATCHES),
                             "static_layers_folded": loaded.folded, **({"quantization": quantization}
                                                                         if quantization else {})}
        spec = describe(loaded, options, decisions, metrics)
        attach_spec(graph, spec, Path(output))
    card = write_model_card(Path(output), spec)
    return {"model": str(output), "card": str(card), "size_bytes": Path(output).stat().st_size,
            "onnx_max_abs_diff": difference, "metrics": metrics}


def load_for_export(options: ExportOptions) -> Loaded:
    """The checkpoint on the CPU (static NSL layers folded), its data, and the open-set run, checked."""
    model, saved = load_trained_model(options.checkpoint)  # on the CPU, where it is traced and checked
    folded = fold_static_layers(model)
    config = saved.config
    trained_share = config.model.instance_share
    if options.instance_share is not None and not model.instance_dims:
        raise ExportError(f"--instance-share: {options.checkpoint} has no instance subspace (model.instance_dims is 0)")
    # Loaded and checked before the long work, so a wrong one is refused at once.
    open_set = load_open_set_run(options.open_set_checkpoint, config) if options.open_set_checkpoint else None
    if options.instance_share is not None:  # after the recipe check: the open-set run is served alike
        model.instance_share = config.model.instance_share = options.instance_share
        if open_set:
            open_set[0].instance_share = options.instance_share
    if options.data_dir:
        config.data.data_dir = options.data_dir
    if options.pairs:
        config.eval.pairs = options.pairs
    spec = saved.input
    try:
        shape = layout_shape(spec.height, spec.width, spec.channels, options.pixel_side)
    except ValueError as error:
        raise ExportError(f"--pixel-side: {error}") from None
    pixels = int(np.prod(shape))
    if options.pixel_pca > pixels:
        raise ExportError(f"--pixel-pca {options.pixel_pca}: the model's {'x'.join(map(str, shape))} "
                          f"{'layout' if options.pixel_side else 'input'} has {pixels} pixel values")
    task = load_task(config)
    if options.pixel_pca:
        model = with_pixel_pca(model, task.splits.train.images, *pixel_subspace(options))
    return Loaded(model, saved, config, task, folded, trained_share, open_set)


def trace_and_check(loaded: Loaded, options: ExportOptions, folder: Path) -> tuple[Path, float, dict | None]:
    """The graph in ``folder`` (quantized if asked), its largest difference from PyTorch, and the
    quantization's record."""
    bare = folder / "bare.onnx"
    test_images = loaded.task.splits.test.images
    export_onnx(loaded.model, loaded.saved.input, bare, aspects=bool(loaded.saved.aspects))
    difference = parity(loaded.model, bare, test_images[: max(PARITY_BATCHES)])
    if difference > PARITY_TOLERANCE:
        raise ExportError(f"ONNX Runtime and PyTorch disagree by {difference:.2e} (> {PARITY_TOLERANCE:g})")
    if options.quantize != "int8":
        return bare, difference, None
    graph = folder / "int8.onnx"
    quantization = {**quantize_int8(bare, graph, calibration_sample(loaded.task.splits.train.images)),
                    "calibration_split": "train", "calibration_seed": CALIBRATION_SEED}
    quantization["agreement"] = agreement(onnx_embedder(bare), onnx_embedder(graph), test_images[:1000])
    return graph, difference, quantization


def measure(embedder, loaded: Loaded, options: ExportOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """The decisions fitted on validation and the test numbers, both with the exported graph."""
    task, config, spec = loaded.task, loaded.config, loaded.saved.input
    # The validation images are embedded once, for both decisions fitted on them.
    val_embedded = embed_all(embedder, task.splits.val.images, config.eval.batch_size)
    decision, calibration, aspect_decisions, aspect_calibrations = calibrate(val_embedded, task, config)
    dims = instance_dims(loaded.model)
    train_embeddings, _ = embed_all(embedder, task.splits.train.images, config.eval.batch_size)
    near_duplicate, by_items = fit_near_duplicate(val_embedded[0], task, config, dims, train_embeddings)
    metrics = evaluate_task(embedder, task, config, calibration, decision, spec, (dims, near_duplicate, by_items))
    if loaded.open_set:
        pixels = pixel_subspace(options) if options.pixel_pca else None
        metrics["open_set_recipe"] = open_set_recipe_metrics(*loaded.open_set, options.data_dir, pixels)
    return {"decision": decision, "calibration": calibration, "aspect_decisions": aspect_decisions,
            "aspect_calibrations": aspect_calibrations, "near_duplicate": near_duplicate,
            "near_duplicate_dims": dims, "near_duplicate_by_items": by_items}, metrics


def describe(loaded: Loaded, options: ExportOptions, decisions: dict[str, Any], metrics: dict[str, Any]) -> ModelSpec:
    """The spec the file carries."""
    config, task, spec = loaded.config, loaded.task, loaded.saved.input
    record = training_record(config, loaded.saved, options.checkpoint, options.command_line(),
                             data_summary(task, config, spec))
    pixel_pca = ({"dims": options.pixel_pca, "share": options.pixel_share, "side": options.pixel_side,
                  "fitted_on": "train",
                  "images": min(len(task.splits.train.images), PCA_SAMPLE)} if options.pixel_pca else None)
    return ModelSpec(name=options.name or config.name, version=options.version or config.version, input=spec,
                     embedding_dim=loaded.model.embedding_dim, aspects=list(loaded.saved.aspects), **decisions,
                     training={**record, "pixel_pca": pixel_pca, "instance_share_trained": loaded.trained_share,
                               "notes": options.notes},
                     metrics=metrics)


def instance_dims(model: nn.Module) -> tuple[int, int] | None:
    """Where the instance subspace sits in the exported embedding, [start, stop): the last
    ``instance_dims`` of the learned part, which a pixel subspace (PixelFusion) follows. None for a
    model without one, whose "same image" score is then the whole cosine."""
    learned = getattr(model, "model", model)  # PixelFusion wraps the trained model
    k = getattr(learned, "instance_dims", 0)
    if not k:
        return None
    return learned.embedding_dim - k, learned.embedding_dim




__all__ = ["ExportError", "ExportOptions", "export_checkpoint", "export_onnx", "instance_dims", "recipe_differences"]
