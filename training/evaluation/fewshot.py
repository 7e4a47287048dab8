"""N-way K-shot episodes with prototypes: the open-set use of a similarity model.

Each episode draws N classes, K support and ``queries`` query images per class (disjoint); a
class prototype is the normalised mean of its support embeddings, and each query goes to the
prototype with the highest cosine. Accuracy is averaged over seeded episodes, with a 95%
confidence interval (1.96 standard errors).
"""

from __future__ import annotations

import numpy as np


def few_shot_accuracy(embeddings: np.ndarray, labels: np.ndarray, ways: int, shots: int, queries: int = 15,
                      episodes: int = 1000, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if len(classes) < ways:
        raise ValueError(f"{ways}-way episodes need {ways} classes, found {len(classes)}")
    members = {c: np.flatnonzero(labels == c) for c in classes}
    short = [c for c, m in members.items() if len(m) < shots + queries]
    if short:
        raise ValueError(f"classes {short} have fewer than {shots + queries} items")
    accuracies = np.empty(episodes)
    for e in range(episodes):
        chosen = rng.choice(classes, ways, replace=False)
        prototypes, query_idx, query_lab = [], [], []
        for w, c in enumerate(chosen):
            picked = rng.choice(members[c], shots + queries, replace=False)
            proto = embeddings[picked[:shots]].mean(axis=0)
            prototypes.append(proto / max(np.linalg.norm(proto), 1e-12))
            query_idx.append(picked[shots:])
            query_lab.append(np.full(queries, w))
        scores = embeddings[np.concatenate(query_idx)] @ np.stack(prototypes).T
        accuracies[e] = np.mean(scores.argmax(axis=1) == np.concatenate(query_lab))
    mean = float(accuracies.mean())
    ci95 = float(1.96 * accuracies.std(ddof=1) / np.sqrt(episodes)) if episodes > 1 else 0.0
    return {"accuracy": mean, "ci95": ci95, "episodes": episodes, "ways": ways, "shots": shots, "queries": queries}
