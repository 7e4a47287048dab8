"""Retrieval metrics with leave-one-out over one labelled set (Musgrave et al., 2020)."""

from __future__ import annotations

import numpy as np
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

RETRIEVAL_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def retrieval_metrics(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision@1, R-Precision and MAP@R; every item queries all the others (itself excluded).

    Embeddings are expected L2-normalised, so the L2 neighbours are the cosine neighbours.
    """
    calculator = AccuracyCalculator(include=RETRIEVAL_METRICS, k="max_bin_count", device=_cpu())
    result = calculator.get_accuracy(np.ascontiguousarray(embeddings, dtype=np.float32), labels)
    return {
        "precision_at_1": float(result["precision_at_1"]),
        "r_precision": float(result["r_precision"]),
        "map_at_r": float(result["mean_average_precision_at_r"]),
    }


def map_at_r_by_class(embeddings: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """MAP@R of each class's queries (against all items, leave-one-out): where an average hides
    one class the embedding handles worse than another."""
    calculator = AccuracyCalculator(include=("mean_average_precision_at_r",), k="max_bin_count",
                                    return_per_class=True, device=_cpu())
    values = calculator.get_accuracy(np.ascontiguousarray(embeddings, dtype=np.float32), labels)
    # One value per label, in sorted label order (the calculator's torch.unique).
    return {int(label): float(value) for label, value in zip(np.unique(labels), values["mean_average_precision_at_r"])}


def _cpu():
    import torch

    return torch.device("cpu")
