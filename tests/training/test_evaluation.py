"""Pair sampling for verification and calibration: the pairs every published number was measured
with stay the same, and a small split gets distinct pairs, never one pair many times."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from training.evaluation import fit_calibration, sample_pairs
from training.evaluation.verification import describe_pairs, pair_counts


def fingerprint(labels: np.ndarray, pairs: int, seed: int) -> str:
    i, j, same = sample_pairs(labels, pairs, seed)
    return hashlib.sha256(np.stack([i, j, same]).astype(np.int64).tobytes()).hexdigest()[:16]


def shuffled_classes(per_class: int, seed: int, classes: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


@pytest.mark.parametrize(("per_class", "shuffle_seed", "pairs", "seed", "expected"), [
    (500, 0, 50_000, 101, "48f2cfacf493f6d3"),  # Fashion-MNIST validation: calibration
    (1000, 1, 100_000, 202, "cdc4eb171aac2784"),  # Fashion-MNIST test: pair metrics
    (200, 2, 5_000, 202, "b6c6d28fc07a39cb"),  # the tiny test runs' 2000 test images
])
def test_fashion_mnist_sized_splits_keep_the_pairs_they_were_measured_with(per_class, shuffle_seed, pairs, seed,
                                                                              expected):
    # Fingerprints of the sampler before distinct sampling existed: asked for a few percent of
    # the possible same-class pairs, pairs are still drawn independently, exactly as then.
    assert fingerprint(shuffled_classes(per_class, shuffle_seed), pairs, seed) == expected


def test_a_small_split_gives_each_same_class_pair_once():
    labels = shuffled_classes(60, 3)  # 600 images: 17,700 distinct same-class pairs
    assert pair_counts(labels) == (17_700, 162_000)
    i, j, same = sample_pairs(labels, 50_000, 101)
    assert same.sum() == (~same).sum() == 17_700  # all of them, and as many different pairs
    key = np.minimum(i, j) * len(labels) + np.maximum(i, j)
    assert len(np.unique(key)) == len(key) and (i != j).all()
    assert (labels[i[same]] == labels[j[same]]).all() and (labels[i[~same]] != labels[j[~same]]).all()
    assert describe_pairs(labels, 50_000, 101) == ("every same-class pair once, of the 17700 same-class and "
                                                   "162000 different-class pairs of 600 images")


def test_asked_for_a_large_share_it_draws_without_replacement_deterministically():
    labels = shuffled_classes(60, 3)
    i, j, same = sample_pairs(labels, 5_000, 7)  # 28 % of the same-class pairs
    assert same.sum() == (~same).sum() == 5_000
    key = np.minimum(i, j) * len(labels) + np.maximum(i, j)
    assert len(np.unique(key)) == 10_000
    again = sample_pairs(labels, 5_000, 7)
    assert all((a == b).all() for a, b in zip((i, j, same), again))
    assert describe_pairs(labels, 5_000, 7).startswith("each pair once, drawn without replacement from the 17700")


def test_calibration_says_how_many_distinct_pairs_it_had():
    labels = shuffled_classes(500, 0)
    note = describe_pairs(labels, 50_000, 101)
    assert note.startswith("4") and "distinct same" in note and "drawn with replacement from the 1247500" in note
    scores = np.concatenate([np.full(10, 0.9), np.full(10, 0.1)]) + np.linspace(0, 0.05, 20)
    same = np.arange(20) < 10
    calibration = fit_calibration(scores, same, "validation pairs", note)
    assert calibration.fitted_on == f"validation pairs (10 same, 10 different pairs: {note})"


def test_one_label_or_no_pairs_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="no class has two items"):
        sample_pairs(np.arange(5), 10, 0)
    with pytest.raises(ValueError, match="one label"):
        sample_pairs(np.zeros(5, int), 10, 0)
