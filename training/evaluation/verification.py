"""Pair verification: is this pair the same class? ROC-AUC, EER, TAR at a fixed FAR."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def sample_pairs(labels: np.ndarray, pairs_per_side: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced pairs: ``pairs_per_side`` same-label and as many different-label pairs, no self-pairs.

    Returns (i, j, same) index arrays. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    ends = np.searchsorted(sorted_labels, sorted_labels, side="right")
    # Positives: an anchor whose class has another member, and a different member of that class.
    eligible = np.flatnonzero(ends - starts > 1)
    if len(eligible) == 0:
        raise ValueError("no class has two items; cannot form positive pairs")
    anchor_pos = rng.choice(eligible, pairs_per_side)
    span = ends[anchor_pos] - starts[anchor_pos]
    offset = rng.integers(0, span - 1)  # skip the anchor itself
    partner_pos = starts[anchor_pos] + offset
    partner_pos = np.where(partner_pos >= anchor_pos, partner_pos + 1, partner_pos)
    pos_i, pos_j = order[anchor_pos], order[partner_pos]
    # Negatives: draw uniformly and redraw the rare same-label collisions.
    neg_i = rng.integers(0, len(labels), pairs_per_side)
    neg_j = rng.integers(0, len(labels), pairs_per_side)
    clash = labels[neg_i] == labels[neg_j]
    while clash.any():
        neg_j[clash] = rng.integers(0, len(labels), int(clash.sum()))
        clash = labels[neg_i] == labels[neg_j]
    i = np.concatenate([pos_i, neg_i])
    j = np.concatenate([pos_j, neg_j])
    same = np.concatenate([np.ones(pairs_per_side, bool), np.zeros(pairs_per_side, bool)])
    return i, j, same


def cosine_scores(embeddings: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", embeddings[i], embeddings[j]).astype(np.float64)


def verification_metrics(scores: np.ndarray, same: np.ndarray, far: float = 1e-3) -> dict[str, float]:
    """ROC-AUC, equal error rate (and its threshold) and TAR at ``far``; higher score = more alike."""
    fpr, tpr, thresholds = roc_curve(same, scores)
    fnr = 1 - tpr
    k = int(np.nanargmin(np.abs(fnr - fpr)))
    # The ROC curve is piecewise; take the EER as the midpoint where the two error rates cross.
    eer = float((fpr[k] + fnr[k]) / 2)
    within = np.flatnonzero(fpr <= far)
    tar = float(tpr[within[-1]]) if len(within) else 0.0
    return {
        "roc_auc": float(roc_auc_score(same, scores)),
        "eer": eer,
        "eer_threshold": float(np.clip(thresholds[k], -1.0, 1.0)),
        f"tar_at_far_{far:g}": tar,
    }
