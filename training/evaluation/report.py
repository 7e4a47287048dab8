"""The standard evaluation of one labelled set: retrieval and pair verification together."""

from __future__ import annotations

import numpy as np

from training.evaluation.retrieval import retrieval_metrics
from training.evaluation.verification import cosine_scores, sample_pairs, verification_metrics


def pair_metrics(embeddings: np.ndarray, labels: np.ndarray, pairs: int, seed: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Verification metrics on ``pairs`` same + ``pairs`` different pairs; also returns (scores, same)."""
    i, j, same = sample_pairs(labels, pairs, seed)
    scores = cosine_scores(embeddings, i, j)
    return verification_metrics(scores, same), scores, same


def evaluate_embeddings(embeddings: np.ndarray, labels: np.ndarray, pairs: int = 100_000, seed: int = 0) -> dict[str, float]:
    metrics = retrieval_metrics(embeddings, labels)
    verification, _, _ = pair_metrics(embeddings, labels, pairs, seed)
    metrics.update(verification)
    metrics["items"] = int(len(labels))
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}
