"""The edits a copy meets (training/evaluation/edits.py) and the same-image decision fitted on them
(training/evaluation/same_image.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from contract import InputSpec, decode_image, same_image_scores
from training.data.random_edits import random_user_edit
from training.evaluation.edits import LIGHT_EDITS, MIRROR, USER_EDITS, blurred
from training.evaluation.near_duplicates import EDITS, FAMILIES, families_of
from training.evaluation.same_image import (
    SameImageScores,
    dataset_near_duplicates,
    fit_by_items,
    fit_same_image,
    nearest_other_scores,
    nearest_others_by_gallery_size,
    same_image_quality,
)

SPEC = InputSpec(height=28, width=28, channels=1, fit="content")


def test_the_measured_edits_cover_what_users_do_and_keep_the_light_ones():
    assert set(USER_EDITS) == {"border", "rotation", "cut side", "overlay", "sharpen and blur", "strong jpeg", "pairs"}
    assert len(LIGHT_EDITS) == 16 and set(EDITS) == set(LIGHT_EDITS).union(*USER_EDITS.values(), MIRROR)
    assert list(FAMILIES) == ["light", *USER_EDITS, "mirror"]
    assert families_of({"jpeg q30": 0.5, "jpeg q90": 0.9}) == {"light": 0.9, "strong jpeg": 0.5}


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_every_edit_gives_a_file_the_service_reads(mode):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)).convert(mode)
    for name, edit in EDITS.items():
        decoded = decode_image(edit(image), max_pixels=10**7)
        assert decoded.width >= 14 and decoded.height >= 14, name


def test_random_user_edits_follow_their_seed_and_vary():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8))
    first = [np.asarray(random_user_edit(image, random.Random(seed))) for seed in range(30)]
    again = [np.asarray(random_user_edit(image, random.Random(seed))) for seed in range(30)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len({a.tobytes() for a in first}) >= 25 and len({a.shape for a in first}) >= 5


@pytest.mark.parametrize("side", [28, 128])
def test_the_views_blur_spans_the_measured_blur_at_any_size(side):
    """augment.edit_blur draws sigma in [0.3, 1.2] x side / 28: the measured blur (0.8) lies inside,
    on a 128-pixel photo as on a 28-pixel garment."""
    import torch

    from training.config import AugmentConfig
    from training.data.torch_data import make_edit_augment, size_relative_blur

    image = np.random.default_rng(2).integers(0, 256, (side, side), dtype=np.uint8)
    measured = np.asarray(blurred(Image.fromarray(image), 0.8), dtype=float).std()
    blur = size_relative_blur(side, side)
    torch.manual_seed(0)
    spread = [blur(torch.from_numpy(image)[None]).float().std().item() for _ in range(40)]
    assert min(spread) < measured < max(spread) < image.std()
    spec = InputSpec(height=side, width=side, channels=1)
    with_blur = make_edit_augment(AugmentConfig(edit_blur=0.5), spec)
    assert sum("GaussianBlur" in repr(step) for step in with_blur.transforms) == 1
    assert "GaussianBlur" not in repr(make_edit_augment(AugmentConfig(), spec))


def test_a_copy_view_made_from_the_anchor_keeps_its_colours():
    """augment.view_from_anchor: the instance term's copy view is the anchor view edited, so it shares
    the anchor's colour jitter and greyscale (a copy keeps its colours); made from the image, it draws
    its own."""
    import torch

    from training.config import AugmentConfig
    from training.data.arrays import LabeledImages
    from training.data.torch_data import ImageDataset, make_augment, make_edit_augment

    photo = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    photo[0, :, :16] = (200, 40, 40)
    photo[0, :, 16:] = (40, 160, 60)
    data = LabeledImages(photo, np.zeros(1, dtype=np.int64), ["x"])
    spec = InputSpec(height=32, width=32, channels=3)
    gaps = {}
    for from_anchor in (False, True):
        config = AugmentConfig(color_jitter=0.5, grayscale=0.3, hflip=False, crop_padding=0, edit_color=0.0,
                               edit_zoom=0.0, edit_jpeg_min_quality=95, view_from_anchor=from_anchor)
        dataset = ImageDataset(data, make_augment(config, 32, 32), make_edit_augment(config, spec),
                               view_from_anchor=from_anchor)
        torch.manual_seed(0)
        items = [dataset[0] for _ in range(30)]
        gaps[from_anchor] = np.mean([(item["images"].float().mean((0, 1)) - item["images_view"].float().mean((0, 1)))
                                     .abs().max().item() for item in items])
    assert gaps[True] < 4 and gaps[False] > 4 * gaps[True], gaps  # grey levels of the channel means


def test_the_threshold_holds_the_false_positive_rate_it_was_fitted_for():
    rng = np.random.default_rng(3)
    scores = SameImageScores({"copy": rng.normal(0.97, 0.02, 2000)}, rng.normal(0.7, 0.08, 1000), near_identical=4,
                             originals=1000)
    for rate in (0.01, 0.02, 0.05):
        decision = fit_same_image(scores, rate, "validation")
        assert (scores.others >= decision.threshold).mean() <= rate
        assert (scores.others >= decision.threshold - 0.002).mean() > rate - 0.002  # and not far above it
        assert "4 validation images with a near-identical other left out" in decision.rule
    quality = same_image_quality(scores, fit_same_image(scores, 0.01, "validation").threshold)
    assert quality["nearest_others_accepted"] <= 0.01 and 0.9 < quality["copies_accepted"] <= 1
    assert [p["nearest_others_accepted"] for p in quality["curve"]] == sorted(p["nearest_others_accepted"]
                                                                              for p in quality["curve"])


def test_a_model_that_scores_many_other_images_1_gets_threshold_1_and_says_why():
    # The README's quick export (a model trained a few hundred steps) gave 1.000001, which the spec
    # refused: more originals than the rate allows had a nearest other image scoring 1.
    others = np.concatenate([np.ones(30, dtype=np.float32), np.linspace(0.5, 0.9, 970, dtype=np.float32)])
    decision = fit_same_image(SameImageScores({"copy": np.ones(10)}, others, 0, 1000), 0.01, "validation")
    assert decision.threshold == 1.0 and decision.rule.startswith("unreachable: 3.0% of validation's originals")


def test_near_identical_images_of_a_data_set_are_found(fashion_test):
    images = fashion_test.images[:300].copy()
    images[7] = np.clip(images[3].astype(int) + 2, 0, 255).astype(np.uint8)  # a twin, 2 grey levels off
    near = dataset_near_duplicates(images)
    assert near[3, 7] and near[7, 3] and not near.diagonal().any()
    assert near.sum() == 2


def test_the_same_image_score_is_the_cosine_of_the_part_named():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    part = same_image_scores(a, b, (4, 8))
    expected = [x[4:] @ y[4:] / np.linalg.norm(x[4:]) / np.linalg.norm(y[4:]) for x, y in zip(a, b)]
    assert np.allclose(part, expected)
    assert np.allclose(same_image_scores(a, b[:1], (4, 8)), [same_image_scores(x, b[0], (4, 8))[0] for x in a])
    assert np.allclose(same_image_scores(a, b, None), (a * b).sum(axis=1))


def test_the_threshold_is_fitted_on_every_image_of_the_split_and_leaves_near_identical_ones_out(fashion_test):
    images = fashion_test.images[:500].copy()
    images[9] = images[4]  # a twin: not "another image" of 4, so not its nearest other
    flat = images.reshape(len(images), -1).astype(np.float32)
    embeddings = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    others, near_identical = nearest_other_scores(images, embeddings, None, chunk=64)
    assert others.shape == (500,) and near_identical == 2
    between = embeddings @ embeddings.T
    np.fill_diagonal(between, -np.inf)
    between[4, 9] = between[9, 4] = -np.inf
    assert np.allclose(others, between.max(axis=1), atol=1e-6)  # chunked as one block would give
    rows = np.array([4, 100, 499])
    assert np.allclose(nearest_other_scores(images, embeddings, None, rows)[0], others[rows])


def test_the_nearest_others_are_sought_among_the_training_images_too(fashion_test):
    """A larger gallery holds nearer look-alikes: the fit seeks each validation image's nearest other
    among the training images as well, still leaving near-identical ones (here a training twin) out."""
    images = fashion_test.images[:600].copy()
    val, train = images[:200], images[200:].copy()
    train[5] = np.clip(val[0].astype(int) + 3, 0, 255).astype(np.uint8)  # a training twin of val[0]
    flat = np.concatenate([val, train]).reshape(600, -1).astype(np.float32)
    embeddings = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    alone = nearest_others_by_gallery_size(val, embeddings[:200], None)[200]
    among = nearest_others_by_gallery_size(val, embeddings[:200], None, (train, embeddings[200:]))[600]
    assert among.originals == alone.originals == 200 and among.near_identical == 1 and alone.near_identical == 0
    assert (among.others >= alone.others - 1e-6).all() and (among.others > alone.others + 1e-3).mean() > 0.5
    between = embeddings[:200] @ embeddings.T
    between[np.arange(200), np.arange(200)] = -np.inf
    between[0, 205] = -np.inf  # the twin
    assert np.allclose(among.others, between.max(axis=1), atol=1e-6)
    rate = 0.02
    fitted = fit_same_image(among, rate, "validation", " among the 600 validation and training images")
    assert (alone.others >= fitted.threshold).mean() <= rate  # stricter than the split alone asks
    assert fitted.rule.startswith("at most 2.0% of validation's originals have their nearest other image among the 600")


def test_a_smaller_catalogue_gets_a_lower_threshold_that_holds_its_rate(fashion_test):
    """Thresholds by catalogue size: fitted on 500 validation images among random galleries of 100
    and 300 of the 2,000 images, and among all 2,000, they rise with the size; and each holds the
    rate asked on images it never saw (500 other test images, among galleries of that size)."""
    images = fashion_test.images[:4000]
    flat = images.reshape(len(images), -1).astype(np.float32)
    flat -= flat.mean(axis=0)
    embeddings = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    val, more = slice(0, 500), (images[500:2000], embeddings[500:2000])
    by_size = nearest_others_by_gallery_size(images[val], embeddings[val], None, more, sizes=(100, 300, 5000))
    assert sorted(by_size) == [100, 300, 2000]  # sizes above the gallery's are not drawn; the whole one is
    assert len(by_size[100].others) == 500 * 10 and len(by_size[2000].others) == 500
    table = fit_by_items(by_size, 0.02)
    thresholds = [point.threshold for point in table]
    assert [point.items for point in table] == [100, 300, 2000]
    assert thresholds[0] < thresholds[1] < thresholds[2]  # raw pixels: a larger gallery, a nearer other
    unseen = np.arange(2000, 4000)
    for point in table[:2]:
        rng = np.random.default_rng(point.items)
        accepted = []
        for _ in range(20):
            gallery = rng.choice(unseen, point.items, replace=False)
            accepted.append((nearest_other_scores(images[gallery], embeddings[gallery], None)[0] >= point.threshold).mean())
        # Within the rate (draws are noisy), and not far below it: the whole gallery's threshold
        # would be stricter than this catalogue needs, and miss copies for nothing.
        assert 0.02 / 4 < np.mean(accepted) <= 0.02 * 1.6, (point, np.mean(accepted))
