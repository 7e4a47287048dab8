"""Decision threshold and probability calibration, fitted on validation pairs only."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from contract import Calibration, Decision
from training.evaluation.verification import verification_metrics


def fit_decision(scores: np.ndarray, same: np.ndarray, source: str) -> Decision:
    """The equal-error-rate threshold: false accepts and false rejects balance on validation."""
    threshold = verification_metrics(scores, same)["eer_threshold"]
    return Decision(threshold=round(threshold, 6), rule=f"equal error rate on {source}")


def fit_calibration(scores: np.ndarray, same: np.ndarray, source: str, pairs_note: str = "") -> Calibration:
    """Platt scaling: a one-feature logistic regression from cosine to P(same).

    Pairs are balanced, so the probability assumes a 50/50 prior of same and different.
    ``pairs_note`` (e.g. from ``describe_pairs``) says how distinct the pairs were.
    """
    model = LogisticRegression(C=1e4, max_iter=1000)
    model.fit(scores.reshape(-1, 1), same.astype(int))
    positives = int(same.sum())
    note = f": {pairs_note}" if pairs_note else ""
    return Calibration(a=float(model.coef_[0, 0]), b=float(model.intercept_[0]),
                       fitted_on=f"{source} ({positives} same, {len(same) - positives} different pairs{note})")


def expected_calibration_error(probabilities: np.ndarray, same: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probabilities, edges) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(same[members].mean() - probabilities[members].mean())
    return float(error)
