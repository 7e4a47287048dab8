"""Pair verification: is this pair the same class? ROC-AUC, EER, TAR at a fixed FAR."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

# Asked for at most this share of the distinct same-class pairs, pairs are drawn independently
# (with replacement): repeats are rare (about n / (2 * possible) of them) and every published number
# was measured that way (Fashion-MNIST's splits ask for 2-4 %). Asked for more, every pair is distinct.
INDEPENDENT_SHARE = 0.05


def pair_counts(labels: np.ndarray) -> tuple[int, int]:
    """The distinct unordered (same-class, different-class) pairs among ``labels``."""
    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    same = int((counts.astype(np.int64) * (counts - 1) // 2).sum())
    return same, len(labels) * (len(labels) - 1) // 2 - same


def sample_pairs(labels: np.ndarray, pairs_per_side: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced pairs: ``pairs_per_side`` same-label and as many different-label pairs, no self-pairs.

    When ``pairs_per_side`` is at most :data:`INDEPENDENT_SHARE` of the distinct same-label pairs,
    each pair is drawn independently (a few repeat). Otherwise no pair repeats; and where fewer
    distinct same-label (or different-label) pairs exist than asked, each side gets that many, so
    fewer than ``pairs_per_side`` come back (``same.sum()`` says how many).

    Returns (i, j, same) index arrays. Deterministic in ``seed``.
    """
    labels = np.asarray(labels)
    possible_same, possible_different = pair_counts(labels)
    if possible_same == 0:
        raise ValueError("no class has two items; cannot form positive pairs")
    if possible_different == 0:
        raise ValueError("all items have one label; cannot form negative pairs")
    if pairs_per_side <= INDEPENDENT_SHARE * possible_same:
        return _independent_pairs(labels, pairs_per_side, seed)
    return _distinct_pairs(labels, min(pairs_per_side, possible_same, possible_different), seed)


def describe_pairs(labels: np.ndarray, pairs_per_side: int, seed: int) -> str:
    """How many distinct pairs :func:`sample_pairs` gives, of how many possible, in words."""
    labels = np.asarray(labels)
    i, j, same = sample_pairs(labels, pairs_per_side, seed)
    possible_same, possible_different = pair_counts(labels)
    key = np.minimum(i, j).astype(np.int64) * len(labels) + np.maximum(i, j)
    distinct_same, distinct_different = len(np.unique(key[same])), len(np.unique(key[~same]))
    of = (f"the {possible_same} same-class and {possible_different} different-class pairs of "
          f"{len(labels)} images")
    if distinct_same < same.sum() or distinct_different < (~same).sum():
        return f"{distinct_same} distinct same and {distinct_different} distinct different, drawn with replacement from {of}"
    if same.sum() == possible_same:
        return f"every same-class pair once, of {of}"
    return f"each pair once, drawn without replacement from {of}"


def _independent_pairs(labels: np.ndarray, pairs_per_side: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    ends = np.searchsorted(sorted_labels, sorted_labels, side="right")
    # Positives: an anchor whose class has another member, and a different member of that class.
    eligible = np.flatnonzero(ends - starts > 1)
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
    return _balanced(pos_i, pos_j, neg_i, neg_j)


def _distinct_pairs(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` distinct same-label and ``n`` distinct different-label pairs (both must exist)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    # Number the same-label pairs class after class; pick n numbers, then find each pair.
    offsets = np.concatenate([[0], np.cumsum(counts.astype(np.int64) * (counts - 1) // 2)])
    picks = rng.choice(offsets[-1], n, replace=False)
    cls = np.searchsorted(offsets, picks, side="right") - 1
    a, b = _unrank(picks - offsets[cls])
    pos_i, pos_j = order[starts[cls] + a], order[starts[cls] + b]
    # Different-label pairs: distinct pairs of all items, the same-label ones dropped, in draw order.
    total = len(labels) * (len(labels) - 1) // 2
    share = 1 - (offsets[-1] / total)
    draw = min(total, int(n / share * 1.1) + 64)
    while True:
        a, b = _unrank(rng.choice(total, draw, replace=False))
        kept = np.flatnonzero(labels[a] != labels[b])
        if len(kept) >= n or draw == total:
            break
        draw = min(total, draw * 2)
    kept = kept[:n]
    return _balanced(pos_i, pos_j, a[kept], b[kept])


def _unrank(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair number k -> (a, b), a < b, numbering (0,1), (0,2), (1,2), (0,3)...: k = b(b-1)/2 + a."""
    index = np.asarray(index, dtype=np.int64)
    b = np.floor((1 + np.sqrt(1 + 8 * index.astype(np.float64))) / 2).astype(np.int64)
    b -= b * (b - 1) // 2 > index  # float rounding, either way
    b += (b + 1) * b // 2 <= index
    return index - b * (b - 1) // 2, b


def _balanced(pos_i, pos_j, neg_i, neg_j) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = np.concatenate([pos_i, neg_i])
    j = np.concatenate([pos_j, neg_j])
    same = np.concatenate([np.ones(len(pos_i), bool), np.zeros(len(neg_i), bool)])
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
