"""The "same image" decision (the spec's ``near_duplicate``): is this image a copy of that one?

Retrieval ranks; this decides. The score is :func:`contract.same_image_scores` (the cosine over the
model's instance subspace), and its threshold is fitted for a target false-positive rate, not at
the equal-error point: a dedup job that merges look-alikes loses a user's data, so the error a user
can bear sets it.

- Copies: each measured edit (training.evaluation.near_duplicates.EDITS, the mirror included) of
  seeded originals, saved as a file and prepared as the service prepares an upload, against its
  original.
- Others: each original against its nearest other image in the split, by the same score: the
  hardest "not the same image" there is. Images that are themselves near-identical in the data set
  (:func:`dataset_near_duplicates`: pixel-level, counted and reported) are not "other images" and are
  left out, as exact copies are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract import Decision, InputSpec, SizedThreshold, same_image_scores
from training.evaluation.embed import Embedder, embed_all
from training.evaluation.near_duplicates import FAMILIES, QUERY_SEED, EditedCopies, embed_copies

# Two images of a data set are one image for this purpose when their pixels differ by at most this
# root-mean-square grey level (of 255). Fashion-MNIST's test split holds one such pair (RMS 1.5);
# the next nearest pixels of any two test images are 10 levels apart.
NEAR_IDENTICAL_RMS = 6.0
# The false-positive rates the curve reports.
CURVE_RATES = (0.001, 0.005, 0.01, 0.02, 0.05)
# The catalogue sizes (items in an index) a threshold is fitted for, up to the gallery's own size;
# the service interpolates between them for its index (contract.ModelSpec.same_image_threshold).
GALLERY_SIZES = (100, 300, 1_000, 3_000, 10_000, 30_000, 100_000)
# Random galleries of a size drawn per image: enough that 240 validation photos set a 1% point.
MAX_DRAWS = 10


@dataclass
class SameImageScores:
    copies: dict[str, np.ndarray]  # edit name -> each copy's score against its original
    others: np.ndarray  # each original's score against its nearest other image
    near_identical: int  # images of the split with a near-identical other, left out of ``others``
    originals: int


def dataset_near_duplicates(images: np.ndarray, rows: np.ndarray | None = None, chunk: int = 512) -> np.ndarray:
    """bool [len(rows), N]: which images of ``images`` are within NEAR_IDENTICAL_RMS of each of ``rows``
    (default: every image, [N, N]), exact copies included; an image is never its own twin."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    squared = (flat ** 2).sum(axis=1)
    limit = NEAR_IDENTICAL_RMS ** 2 * flat.shape[1]
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    near = np.zeros((len(rows), len(flat)), dtype=bool)
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk]
        distance = squared[block, None] + squared[None, :] - 2 * flat[block] @ flat.T
        near[start:start + chunk] = distance <= limit
        near[np.arange(start, start + len(block)), block] = False
    return near


def score_same_image(embedder: Embedder, gallery: np.ndarray, spec: InputSpec, dims: tuple[int, int] | None,
                     queries: int, batch_size: int = 1024, gallery_embeddings: np.ndarray | None = None,
                     seed: int = QUERY_SEED, copies: EditedCopies | None = None) -> SameImageScores:
    """Same-image scores of every measured edit's copies and of each original's nearest other image
    (pass ``gallery_embeddings`` and ``copies`` when they are already computed)."""
    if gallery_embeddings is None:
        gallery_embeddings, _ = embed_all(embedder, gallery, batch_size)
    if copies is None:
        copies = embed_copies(embedder, gallery, spec, queries, batch_size=batch_size, seed=seed)
    originals = copies.originals
    others, near_identical = nearest_other_scores(gallery, gallery_embeddings, dims, originals)
    scores = {name: same_image_scores(embedded, gallery_embeddings[originals], dims)
              for name, embedded in copies.embeddings.items()}
    return SameImageScores(scores, others, near_identical, len(originals))


def nearest_other_scores(gallery: np.ndarray, embeddings: np.ndarray, dims: tuple[int, int] | None,
                         rows: np.ndarray | None = None, chunk: int = 2048) -> tuple[np.ndarray, int]:
    """Each of ``rows`` (default: every image)'s same-image score against its nearest other image of
    ``gallery`` (near-identical images left out), and how many of ``rows`` have a near-identical other."""
    rows = np.arange(len(gallery)) if rows is None else np.asarray(rows)
    near = dataset_near_duplicates(gallery, rows)
    others = np.empty(len(rows), dtype=np.float32)
    for start, between in _scores_against_others(_part(embeddings, dims), rows, near, chunk):
        others[start:start + len(between)] = between.max(axis=1)
    return others, int(near.any(axis=1).sum())


def _scores_against_others(part: np.ndarray, rows: np.ndarray, near: np.ndarray, chunk: int):
    """(start, float [len(block), N]) for each block of ``rows``: their scores against every image of
    ``part``, -inf against themselves and their near-identical twins (``near``, one row per row)."""
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk]
        between = part[block] @ part.T
        between[np.arange(len(block)), block] = -np.inf
        between[near[start:start + chunk]] = -np.inf
        yield start, between


def nearest_others_by_gallery_size(images: np.ndarray, embeddings: np.ndarray, dims: tuple[int, int] | None,
                                   more: tuple[np.ndarray, np.ndarray] | None = None,
                                   sizes: tuple[int, ...] = GALLERY_SIZES, seed: int = QUERY_SEED,
                                   chunk: int = 1024) -> dict[int, SameImageScores]:
    """The negatives a threshold is fitted on, for each catalogue size n (those of ``sizes`` below the
    gallery's, and the whole gallery): every image of the split (``embeddings`` its own) against its
    nearest other image among n images drawn at random from the split and ``more`` (images,
    embeddings: the training split), several draws where n is small, pooled. No copies are needed
    for that, so the whole split counts (5,000 validation images put 50 of them above a 1% threshold,
    where the 1,000 edited originals put 10).

    The nearest other image of a larger gallery scores higher: on the photo model's 600 test photos,
    the 1% point of the nearest-other scores was 0.849 (+/- 0.041 over 20 draws) among 100 of them,
    0.887 among 300 and 0.897 among all 600 (docs/near-duplicates.md). A threshold fitted in a small gallery calls more
    look-alikes copies in a larger catalogue (6.8% of the test photos' nearest others, fitted among
    240 for 1%), and one fitted in a large gallery misses copies in a small one: each size gets its own."""
    gallery = images if more is None else np.concatenate([images, more[0]])
    gallery_embeddings = embeddings if more is None else np.concatenate([embeddings, more[1]])
    total, rows = len(gallery), np.arange(len(images))
    near = dataset_near_duplicates(gallery, rows)
    drawn = [n for n in sizes if n < total - 1]
    draws = {n: min(MAX_DRAWS, max(1, total // n)) for n in drawn}
    rng = np.random.default_rng(seed)
    pooled: dict[int, list[np.ndarray]] = {n: [] for n in [*drawn, total]}
    for _, between in _scores_against_others(_part(gallery_embeddings, dims), rows, near, chunk):
        pooled[total].append(between.max(axis=1))
        for n in drawn:
            for _ in range(draws[n]):
                pooled[n].append(between[:, rng.choice(total, n, replace=False)].max(axis=1))
    near_identical = int(near.any(axis=1).sum())
    # A draw may hold no other image for a row (only itself or its twins): that row sits it out.
    return {n: SameImageScores({}, (s := np.concatenate(parts))[np.isfinite(s)], near_identical, len(rows))
            for n, parts in pooled.items()}


def _part(embeddings: np.ndarray, dims: tuple[int, int] | None) -> np.ndarray:
    if dims is None:
        return embeddings
    part = embeddings[:, dims[0]:dims[1]]
    return part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)


def fit_same_image(scores: SameImageScores, false_positive_rate: float, source: str, among: str = "") -> Decision:
    """The lowest threshold at which at most ``false_positive_rate`` of the originals' nearest other
    images score at or above it (on validation); ``among`` says where the nearest others were sought
    (" among N images ...") when not in the originals' own split."""
    others = np.sort(scores.others)[::-1]
    allowed = int(np.floor(false_positive_rate * len(others)))
    threshold = float(np.nextafter(np.float32(others[allowed]), np.float32(np.inf))) if allowed < len(others) else -1.0
    threshold = round(threshold + 5e-7, 6)
    left_out = f"{scores.near_identical} {source} images with a near-identical other left out"
    if threshold > 1.0:
        # More originals than the rate allows have a nearest other image scoring 1 (a model that
        # cannot tell them apart): no score separates them, so only a perfect score is called a copy.
        share = float((scores.others >= 1.0 - 1e-6).mean())
        return Decision(threshold=1.0, rule=f"unreachable: {share:.1%} of {source}'s originals have a nearest other "
                                            f"image{among} scoring 1, above the {false_positive_rate:.1%} asked ({left_out})")
    return Decision(threshold=threshold,
                    rule=f"at most {false_positive_rate:.1%} of {source}'s originals have their nearest other image{among} "
                         f"at or above it ({left_out})")


def fit_by_items(by_size: dict[int, SameImageScores], false_positive_rate: float) -> list[SizedThreshold]:
    """The threshold for each catalogue size (:func:`nearest_others_by_gallery_size`), never lower for a
    larger catalogue than for a smaller one (draws are noisy; a nearest other only gets nearer)."""
    sizes = sorted(by_size)
    fitted = [fit_same_image(by_size[n], false_positive_rate, "validation").threshold for n in sizes]
    return [SizedThreshold(items=n, threshold=float(t)) for n, t in zip(sizes, np.maximum.accumulate(fitted))]


def same_image_quality(scores: SameImageScores, threshold: float) -> dict:
    """At ``threshold``: the share of copies called copies (over every edit, per family, per edit)
    and of the originals' nearest other images called copies; and the curve of both."""
    called = {name: float((s >= threshold).mean()) for name, s in scores.copies.items()}
    every = np.concatenate(list(scores.copies.values()))
    families = {family: round(float(np.mean([called[n] for n in edits if n in called])), 6)
                for family, edits in FAMILIES.items() if any(n in called for n in edits)}
    curve = []
    for rate in CURVE_RATES:
        others = np.sort(scores.others)[::-1]
        at = float(others[min(int(rate * len(others)), len(others) - 1)]) + 1e-6
        curve.append({"threshold": round(at, 6), "nearest_others_accepted": round(float((scores.others >= at).mean()), 6),
                      "copies_accepted": round(float((every >= at).mean()), 6)})
    return {
        "threshold": threshold,
        "copies_accepted": round(float((every >= threshold).mean()), 6),
        "nearest_others_accepted": round(float((scores.others >= threshold).mean()), 6),
        "copies_accepted_by_family": families,
        "copies_accepted_by_edit": {name: round(value, 6) for name, value in called.items()},
        "near_identical_left_out": scores.near_identical,
        "originals": scores.originals,
        "curve": curve,
    }
