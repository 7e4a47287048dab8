"""Evaluation of a model on its task: what `export` writes into the spec and `evaluate` prints.

- retrieval on the test split, leave-one-out (P@1, R-Precision, MAP@R);
- pair verification on seeded balanced test pairs (ROC-AUC, EER, TAR@FAR=1e-3);
- the calibrated probability's quality on those test pairs (ECE, Brier, accuracy at the threshold);
- near-duplicate R@1: edited copies of seeded test images, prepared as the service prepares an
  upload, searched against the whole test split (training.evaluation.near_duplicates);
- open-set numbers on held-out classes, and per-aspect numbers for conditional models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from contract import Calibration, Decision, InputSpec, ModelSpec, SizedThreshold, threshold_for_items
from training.config import DataConfig, EvalConfig, TrainConfig
from training.data.arrays import LabeledImages
from training.evaluation import (
    Embedder,
    embed_all,
    evaluate_embeddings,
    expected_calibration_error,
    fit_calibration,
    fit_decision,
    onnx_embedder,
    pair_metrics,
    torch_embedder,
)
from training.evaluation.fewshot import few_shot_accuracy
from training.evaluation.near_duplicates import embed_copies, near_duplicate_metrics
from training.evaluation.retrieval import map_at_r_by_class
from training.evaluation.same_image import (
    fit_by_items,
    fit_same_image,
    nearest_others_by_gallery_size,
    same_image_quality,
    score_same_image,
)
from training.evaluation.verification import describe_pairs
from training.tasks import Task, load_task

VALIDATION_PAIR_SEED = 101
TEST_PAIR_SEED = 202
FEW_SHOT_SEED = 303


def calibrate(embedded: tuple[np.ndarray, np.ndarray], task: Task, config: TrainConfig
              ) -> tuple[Decision, Calibration, dict[str, Decision], dict[str, Calibration]]:
    """Fit the decision threshold and Platt calibration on validation pairs (overall and per aspect),
    from the validation images' ``embedded`` (embeddings, aspect embeddings).

    Up to 50,000 same and as many different pairs; a small validation split has fewer distinct
    same-class pairs than that, and then each is used once (training.evaluation.verification).
    The calibration's ``fitted_on`` says how many pairs there were and how many were distinct.
    """
    val = task.splits.val
    embeddings, aspect_embeddings = embedded
    pairs = min(config.eval.pairs, 50_000)
    source = "validation pairs"
    _, scores, same = pair_metrics(embeddings, val.labels, pairs, VALIDATION_PAIR_SEED)
    decision = fit_decision(scores, same, source)
    calibration = fit_calibration(scores, same, source, describe_pairs(val.labels, pairs, VALIDATION_PAIR_SEED))
    decisions: dict[str, Decision] = {}
    calibrations: dict[str, Calibration] = {}
    for a, (name, labels) in enumerate(task.aspect_labels("val").items()):
        _, scores, same = pair_metrics(aspect_embeddings[:, a], labels, pairs, VALIDATION_PAIR_SEED + a + 1)
        aspect_source = f"validation pairs of aspect '{name}'"
        decisions[name] = fit_decision(scores, same, aspect_source)
        calibrations[name] = fit_calibration(scores, same, aspect_source,
                                             describe_pairs(labels, pairs, VALIDATION_PAIR_SEED + a + 1))
    return decision, calibration, decisions, calibrations


def fit_near_duplicate(embeddings: np.ndarray, task: Task, config: TrainConfig, dims: tuple[int, int] | None,
                       train_embeddings: np.ndarray) -> tuple[Decision, list[SizedThreshold]]:
    """The "same image" threshold, fitted for the target false-positive rate against every validation
    image's nearest other image among the validation and training images (``embeddings``: the
    validation images', ``train_embeddings`` the training images'; training.evaluation.same_image),
    and the same for catalogues of fewer images (the spec's ``near_duplicate_by_items``)."""
    train = task.splits.train.images
    by_size = nearest_others_by_gallery_size(task.splits.val.images, embeddings, dims, (train, train_embeddings))
    rate, gallery = config.eval.near_duplicate_false_positives, max(by_size)
    by_items = fit_by_items(by_size, rate)
    decision = fit_same_image(by_size[gallery], rate, "validation",
                              f" among the {gallery:,} validation and training images")
    # A smaller catalogue's noisy draw can ask more than the whole gallery: the table never falls,
    # and the decision is its last point (still within the rate: a higher threshold admits fewer).
    return decision.model_copy(update={"threshold": by_items[-1].threshold}), by_items


def calibration_quality(scores: np.ndarray, same: np.ndarray, calibration: Calibration,
                        threshold: float) -> dict[str, float]:
    probabilities = 1.0 / (1.0 + np.exp(-(calibration.a * scores + calibration.b)))
    return {
        "ece": round(expected_calibration_error(probabilities, same), 6),
        "brier": round(float(np.mean((probabilities - same) ** 2)), 6),
        "accuracy_at_threshold": round(float(np.mean((scores >= threshold) == same)), 6),
    }


# The "same image" decision a split is measured at: the instance part's dims, the threshold fitted
# among every image training had, and the thresholds for smaller catalogues (empty: that one at any size).
SameImage = tuple[tuple[int, int] | None, Decision, list[SizedThreshold]]


def evaluate_split(embedder: Embedder, images: np.ndarray, labels: np.ndarray, config: TrainConfig,
                   decision: Decision | None = None, calibration: Calibration | None = None,
                   input_spec: InputSpec | None = None, same_image: SameImage | None = None) -> dict[str, Any]:
    """Retrieval and pair metrics of one split; with ``input_spec``, near-duplicate R@1 too, and with
    ``same_image`` the share of copies and of nearest others the decision calls the same image."""
    embeddings, _ = embed_all(embedder, images, config.eval.batch_size)
    metrics: dict[str, Any] = evaluate_embeddings(embeddings, labels, config.eval.pairs, TEST_PAIR_SEED)
    if calibration is not None and decision is not None:
        _, scores, same = pair_metrics(embeddings, labels, config.eval.pairs, TEST_PAIR_SEED)
        metrics["calibration"] = calibration_quality(scores, same, calibration, decision.threshold)
    if input_spec is not None:
        metrics["near_duplicates"] = near_duplicate_split(embedder, images, embeddings, config, input_spec, same_image)
    return metrics


def near_duplicate_split(embedder: Embedder, images: np.ndarray, embeddings: np.ndarray, config: TrainConfig,
                         input_spec: InputSpec, same_image: SameImage | None) -> dict[str, Any]:
    """Near-duplicate R@1 per edit and, with ``same_image``, the decision's quality (its "decision"
    entry), both from one pass of edited copies."""
    batch = config.eval.batch_size
    copies = embed_copies(embedder, images, input_spec, config.eval.near_duplicates, batch_size=batch)
    metrics = near_duplicate_metrics(embedder, images, input_spec, gallery_embeddings=embeddings, copies=copies)
    if same_image is not None:
        dims, fitted, by_items = same_image
        scores = score_same_image(embedder, images, input_spec, dims, config.eval.near_duplicates, batch,
                                  gallery_embeddings=embeddings, copies=copies)
        # Measured as the service decides for a catalogue of this split's size.
        threshold = threshold_for_items(by_items, len(images), fitted.threshold)
        sized = {"catalogue_items": len(images)} if by_items else {}
        metrics["decision"] = {**sized, **same_image_quality(scores, threshold)}
    return metrics


def open_set_metrics(embedder: Embedder, unseen: LabeledImages, config: TrainConfig,
                     episodes: int = 1000) -> dict[str, Any]:
    """Retrieval and pair metrics on classes never trained on, MAP@R per class, plus N-way 1- and
    5-shot episodes."""
    embeddings, _ = embed_all(embedder, unseen.images, config.eval.batch_size)
    labels = unseen.labels
    metrics: dict[str, Any] = evaluate_embeddings(embeddings, labels, config.eval.pairs, TEST_PAIR_SEED)
    metrics["map_at_r_by_class"] = map_at_r_by_class_name(embeddings, unseen)
    ways = min(4, len(np.unique(labels)))
    metrics["few_shot"] = {f"{ways}-way {shots}-shot": few_shot_accuracy(embeddings, labels, ways, shots,
                                                                          episodes=episodes, seed=FEW_SHOT_SEED)
                           for shots in (1, 5)}
    return metrics


def map_at_r_by_class_name(embeddings: np.ndarray, images: LabeledImages) -> dict[str, float]:
    return {images.classes[label]: value for label, value in map_at_r_by_class(embeddings, images.labels).items()}


def evaluate_task(embedder: Embedder, task: Task, config: TrainConfig, calibration: Calibration | None = None,
                  decision: Decision | None = None, input_spec: InputSpec | None = None,
                  same_image: SameImage | None = None) -> dict[str, Any]:
    """All test-side numbers for a model, keyed by split (near-duplicates need the ``input_spec``)."""
    splits = task.splits
    if decision is None and calibration is not None:
        raise ValueError("calibration quality needs the decision threshold too")
    metrics: dict[str, Any] = {
        "test": evaluate_split(embedder, splits.test.images, splits.test.labels, config, decision, calibration,
                               input_spec, same_image),
    }
    if splits.test_unseen is not None:
        metrics["test_unseen"] = open_set_metrics(embedder, splits.test_unseen, config)
        metrics["test_unseen"]["classes"] = list(splits.holdout_classes)
    metrics.update(task.test_metrics(embedder))
    return metrics


def evaluate_model(path: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                   split: str = "test", holdout_classes: list[str] | None = None,
                   pairs: int = 100_000, near_duplicates: int = 1000, device: str = "auto") -> dict[str, Any]:
    """Evaluate an exported ``.onnx`` (through ONNX Runtime) or a ``.pt`` checkpoint on its dataset,
    on ``device`` (auto | cpu | cuda | cuda:N). ``near_duplicates`` originals are edited for
    near-duplicate R@1: the card's 1,000 by default, up to the whole split for a tighter estimate."""
    from training.runtime import resolve_device

    path = Path(path)
    run_on = resolve_device(device)
    if path.suffix == ".onnx":
        import onnx

        spec = ModelSpec.from_metadata({p.key: p.value for p in onnx.load(str(path)).metadata_props}, str(path))
        data = DataConfig.model_validate(spec.training.data_config)
        embedder = onnx_embedder(path, run_on, fallback_to_cpu=device == "auto")
        decision, calibration = spec.decision, spec.calibration
        same_image = ((spec.near_duplicate_dims, spec.near_duplicate, spec.near_duplicate_by_items)
                      if spec.near_duplicate else None)
        seed = spec.training.seed
        input_spec = spec.input
    else:
        from training.trainer import load_trained_model

        model, saved = load_trained_model(path)
        data, seed = saved.config.data, saved.config.seed
        embedder = torch_embedder(model.to(run_on))
        decision = calibration = same_image = None
        input_spec = saved.input
    if dataset:
        data.dataset = dataset
    if data_dir:
        data.data_dir = data_dir
    if holdout_classes is not None:
        data.holdout_classes = holdout_classes
    config = TrainConfig(seed=seed, data=data, eval=EvalConfig(pairs=pairs, near_duplicates=near_duplicates))
    task = load_task(config)
    if split == "val":
        return {"val": evaluate_split(embedder, task.splits.val.images, task.splits.val.labels, config,
                                      decision, calibration, input_spec, same_image)}
    return evaluate_task(embedder, task, config, calibration, decision, input_spec, same_image)
