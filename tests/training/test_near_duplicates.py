"""Near-duplicate R@1 on real Fashion-MNIST images, with embedders whose behaviour is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.losses import NTXentLoss

from contract import InputSpec
from training.evaluation.edits import USER_EDITS
from training.evaluation.near_duplicates import EDITS, edited_queries, near_duplicate_metrics, recall_at_1
from training.objectives.instance import InstanceContrastiveLoss

SPEC = InputSpec(height=28, width=28, channels=1)


def pixels(images: np.ndarray) -> tuple[np.ndarray, None]:
    x = images.reshape(len(images), -1).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), None


@pytest.fixture(scope="module")
def gallery(fashion_test):
    return fashion_test.images[:1000]


def test_raw_pixels_find_re_encodes_and_lose_shifted_copies(gallery):
    """Raw pixels are the known case: photometric edits keep the original first, a shift of a pixel
    or two does not. The metric must see both."""
    result = near_duplicate_metrics(pixels, gallery, SPEC, queries=200)
    r1 = result["recall_at_1"]
    assert r1["jpeg q90"] == 1.0 and r1["RGB"] == 1.0 and r1["brightness x0.85"] == 1.0
    assert r1["shift 2px"] < 0.5
    assert result["worst_recall_at_1"] == min(r1.values()) and result["worst_edit"] in USER_EDITS["border"]
    # Per family, the worst of its edits: pixels keep overlays and JPEG, and lose borders and crops.
    families = result["family_worst_recall_at_1"]
    assert families["overlay"] >= 0.95 and families["strong jpeg"] == 1.0
    assert families["border"] < 0.1 and families["cut side"] < 0.5
    assert result["queries"] == 200 and result["gallery"] == 1000


def test_edited_queries_are_prepared_as_the_service_prepares_an_upload(gallery):
    """An upscaled RGB JPEG comes back to the model's 28x28x1 uint8 layout, close to the original."""
    out = edited_queries(gallery[:5], SPEC, EDITS["upscale 4x, RGB, jpeg q95"])
    assert out.shape == (5, 28, 28, 1) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - gallery[:5].astype(int)).mean() < 12
    assert not np.array_equal(out, gallery[:5])


def test_ties_are_misses_and_exact_copies_count_as_the_original():
    gallery = np.eye(4, dtype=np.float32)
    constant = np.ones((2, 4), dtype=np.float32) / 2
    originals = np.array([0, 1])
    same = np.zeros((2, 4), bool)
    same[0, 0] = same[1, 1] = True
    assert recall_at_1(constant, gallery, originals, same) == 0.0  # all four tie
    assert recall_at_1(gallery[:2], gallery, originals, same) == 1.0
    # Item 2 a pixel copy of item 0: a tie with it is no miss.
    same[0, 2] = True
    tied = np.array([[0.7, 0.0, 0.7, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=np.float32)
    assert recall_at_1(tied, np.eye(4, dtype=np.float32), originals, same) == 1.0


def test_the_instance_loss_is_ntxent_with_the_image_index_as_label():
    torch.manual_seed(0)
    a, b = torch.randn(12, 8), torch.randn(12, 8)
    ours = InstanceContrastiveLoss(temperature=0.1)(a, b)
    labels = torch.arange(12).repeat(2)
    reference = NTXentLoss(temperature=0.1)(torch.cat([a, b]), labels)
    assert float(ours) == pytest.approx(float(reference), abs=1e-5)
    # Aligned views score lower than shuffled ones.
    assert float(InstanceContrastiveLoss(0.1)(a, a + 0.01 * b)) < float(ours)


def test_the_instance_margin_loss_is_the_library_triplet_margin_loss_with_all_triplets():
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.losses import TripletMarginLoss

    from training.objectives.instance import InstanceMarginLoss

    torch.manual_seed(1)
    a, b = torch.randn(10, 6), torch.randn(10, 6)
    ours = InstanceMarginLoss(margin=0.1)(a, b)
    reference = TripletMarginLoss(margin=0.1, distance=CosineSimilarity())(torch.cat([a, b]), torch.arange(10).repeat(2))
    assert float(ours) == pytest.approx(float(reference), abs=1e-5)
    # Views already nearer each other than anything else by the margin cost nothing.
    assert float(InstanceMarginLoss(0.1)(torch.eye(6)[:3], torch.eye(6)[:3])) == 0.0


def test_a_split_embedding_serves_a_weighted_cosine_and_trains_each_part_with_its_own_loss():
    """model.instance_dims: the class loss sees the first D - k dimensions, the instance term the last
    k, and the served cosine is (1 - share) x class cosine + share x instance cosine."""
    from training.config import ModelConfig, ObjectiveConfig
    from training.models import build_model
    from training.objectives import build_objective

    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=[8, 16], depth=1, embedding_dim=12, instance_dims=4, instance_share=0.3),
                        1, [0.3], [0.3]).eval()
    images = torch.randint(0, 256, (6, 28, 28, 1), dtype=torch.uint8)
    with torch.no_grad():
        served = model(images)
        raw = model(images, raw=True)
    assert torch.allclose(served.norm(dim=1), torch.ones(6), atol=1e-5)
    cos = torch.nn.functional.cosine_similarity
    expected = 0.7 * cos(raw[0, :8], raw[1, :8], dim=0) + 0.3 * cos(raw[0, 8:], raw[1, 8:], dim=0)
    assert float(served[0] @ served[1]) == pytest.approx(float(expected), abs=1e-5)

    objective = build_objective(ObjectiveConfig(name="arcface", instance_weight=1.0), 3, 12, instance_dims=4)
    assert objective.inner.loss.W.shape[0] == 8  # ArcFace's proxies live in the class part only
    embeddings = raw.detach().requires_grad_(True)

    class Fixed(torch.nn.Module):
        def forward(self, x, raw=False):
            return embeddings

    labels = torch.tensor([0, 1, 2])
    objective.weight = 0.0  # the class loss alone touches only the class dimensions
    objective(Fixed(), {"images": images[:3], "images_view": images[3:], "labels": labels}).loss.backward()
    assert embeddings.grad[:, 8:].abs().max() == 0 and embeddings.grad[:, :8].abs().max() > 0


# Labels of two CSN triplets over two aspects (3 and 2 values): each triplet's aspect, the joint
# labels of its three members, and each member's value on every aspect.
TWO_TRIPLETS_LABELS = {"aspect": torch.tensor([0, 1]), "labels": torch.tensor([[0, 0, 1], [2, 2, 0]]),
                       "aspect_labels": torch.tensor([[[0, 1], [0, 1], [1, 0]], [[2, 0], [2, 1], [0, 0]]])}


class NoTriplet(torch.nn.Module):
    """Stands in for the triplet loss, so that a gradient shows what the instance term touches."""

    def forward(self, *args, **kwargs):
        return torch.zeros(())


def test_a_conditional_model_keeps_its_masks_and_aspect_losses_off_the_instance_dimensions():
    """CSN with a split embedding: masks are zero on the last k dimensions, so aspect embeddings
    ignore them; the triplet, overall and aspect losses touch only the class part and the instance
    term (on every triplet member's edited view with instance_views="all") only the instance part."""
    from training.config import ModelConfig, ObjectiveConfig
    from training.models import build_model
    from training.objectives import build_objective

    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=[8, 16], depth=1, embedding_dim=12, instance_dims=4, instance_share=0.3,
                                    masks="learned"), 1, [0.3], [0.3], aspects=2).eval()
    images = torch.randint(0, 256, (6, 28, 28, 1), dtype=torch.uint8)
    with torch.no_grad():
        overall, aspects = model(images)
        raw, masks = model(images, raw=True)
    assert masks.shape == (2, 12) and masks[:, 8:].abs().max() == 0 and masks[:, :8].min() >= 0
    assert aspects.shape == (6, 2, 12) and aspects[:, :, 8:].abs().max() == 0
    cos = torch.nn.functional.cosine_similarity
    expected = 0.7 * cos(raw[0, :8], raw[1, :8], dim=0) + 0.3 * cos(raw[0, 8:], raw[1, 8:], dim=0)
    assert float(overall[0] @ overall[1]) == pytest.approx(float(expected), abs=1e-5)

    config = ObjectiveConfig(name="csn", instance_weight=1.0, overall_weight=0.2, aspect_weight=1.0)
    objective = build_objective(config, 3, 12, aspect_classes=[3, 2], instance_dims=4)
    assert objective.overall_loss.W.shape[0] == 8  # ArcFace's proxies live in the class part only
    n = 2
    embeddings = torch.randn(5 * n, 12, requires_grad=True)  # anchors, closes, fars, then 2 of 3 views
    fixed_masks = masks.detach()

    class Fixed(torch.nn.Module):
        def forward(self, x, raw=False):
            assert len(x) in (3 * n, 5 * n)  # the views go in only when the instance term is on
            return embeddings[:len(x)], fixed_masks

    batch = {"images_anchor": images[:n], "images_close": images[n:2 * n], "images_far": images[2 * n:3 * n],
             "images_anchor_view": images[:n], "images_close_view": images[n:2 * n],
             **TWO_TRIPLETS_LABELS}
    objective.instance_weight = 0.0  # everything but the instance term: the class part only
    objective.embed_norm_weight = 0.0  # (the norm penalty is on the whole raw embedding by design)
    objective(Fixed(), batch).loss.backward()
    assert embeddings.grad[:, 8:].abs().max() == 0 and embeddings.grad[:3 * n, :8].abs().max() > 0
    embeddings.grad = None
    objective.instance_weight, objective.overall_weight, objective.aspect_weight = 1.0, 0.0, 0.0
    objective.triplet = NoTriplet()
    objective(Fixed(), batch).loss.backward()
    # The instance term pairs anchors and closes with their views, on the instance part only.
    assert embeddings.grad[:, :8].abs().max() == 0
    assert embeddings.grad[:2 * n, 8:].abs().min() > 0 and embeddings.grad[2 * n:3 * n].abs().max() == 0


def test_plain_images_join_the_csn_instance_term_and_nothing_else():
    """objective.instance_plain: untinted images and their edited views enter the batch after the
    members' views; the instance term pairs each with its view (gradient on the instance part of
    those rows), and no triplet, overall or aspect loss sees them."""
    from training.config import ObjectiveConfig
    from training.objectives import build_objective

    torch.manual_seed(0)
    n, k = 2, 4
    config = ObjectiveConfig(name="csn", instance_weight=1.0, overall_weight=0.2, aspect_weight=1.0)
    objective = build_objective(config, 3, 12, aspect_classes=[3, 2], instance_dims=k)
    embeddings = torch.randn(6 * n, 12, requires_grad=True)  # members, anchors' views, plain, plain views
    masks = torch.cat([torch.rand(2, 12 - k), torch.zeros(2, k)], dim=1)

    seen: list[int] = []

    class Fixed(torch.nn.Module):
        def forward(self, x, raw=False):
            seen.append(len(x))
            return embeddings[:len(x)], masks

    images = torch.randint(0, 256, (n, 28, 28, 1), dtype=torch.uint8)
    batch = {"images_anchor": images, "images_close": images, "images_far": images, "images_anchor_view": images,
             "images_plain": images, "images_plain_view": images,
             **TWO_TRIPLETS_LABELS}
    objective.instance_weight, objective.embed_norm_weight = 0.0, 0.0
    objective(Fixed(), batch).loss.backward()
    assert seen == [3 * n]  # without the instance term, views and plain images are not even embedded
    embeddings.grad = None
    objective.instance_weight, objective.overall_weight, objective.aspect_weight = 1.0, 0.0, 0.0
    objective.triplet = NoTriplet()
    objective(Fixed(), batch).loss.backward()
    assert seen[-1] == 6 * n
    grad = embeddings.grad
    assert grad[:, :-k].abs().max() == 0
    # anchors, their views, the plain images and their views: all in the instance term; closes and fars not.
    assert grad[:n, -k:].abs().min() > 0 and grad[3 * n:, -k:].abs().min() > 0 and grad[n:3 * n].abs().max() == 0
    # Each plain image's partner is its own view: moving the view onto it lowers the loss.
    with torch.no_grad():
        before = float(objective(Fixed(), batch).loss)
        embeddings[5 * n:] = embeddings[4 * n:5 * n]
        assert float(objective(Fixed(), batch).loss) < before


def test_the_csn_recipe_builds_a_split_conditional_model():
    """training/configs/csn.toml, the shipped CSN's recipe: a split conditional model, 128 class
    dimensions and 64 instance ones, with untinted images in the instance term."""
    from training.config import load_config
    from training.models import build_model
    from training.objectives import build_objective

    config = load_config("csn", [])
    assert (config.model.instance_dims, config.objective.instance_views) == (64, "all")
    assert config.objective.instance_plain
    model = build_model(config.model, 3, [0.5] * 3, [0.5] * 3, aspects=len(config.data.aspects))
    objective = build_objective(config.objective, 80, config.model.embedding_dim, aspect_classes=[10, 5, 8],
                                instance_dims=config.model.instance_dims)
    assert model.masks().shape == (3, 192) and model.masks()[:, 128:].abs().max() == 0
    assert objective.overall_loss.W.shape[0] == 128


def test_a_config_extends_another_key_by_key(tmp_path, capsys):
    """``extends``: the other config (a name or a path beside the file), then this file's keys over
    it, section by section; a loop, like every config the CLI cannot read, is a one-line error."""
    from training.cli import main
    from training.config import ConfigError, load_config

    (tmp_path / "base.toml").write_text('extends = "default"\nname = "base"\n[optim]\nepochs = 4\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[optim]\nlr = 1e-4\n')
    child, default = load_config(tmp_path / "child.toml"), load_config("default")
    assert (child.name, child.optim.epochs, child.optim.lr) == ("base", 4, 1e-4)
    assert child.optim.batch_size == default.optim.batch_size and child.model == default.model
    (tmp_path / "loop.toml").write_text('extends = "loop.toml"\n')
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.toml")
    (tmp_path / "broken.toml").write_text('extends = "missing"\n')
    for argv, says in ([str(tmp_path / "loop.toml")], "extends itself"), ([str(tmp_path / "broken.toml")], "'missing' not found"), \
            (["default", "--set", "optim.epochs=many"], "invalid config: optim.epochs: Input should be a valid integer"):
        assert main(["train", "--config", *argv]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith("python -m training train: error: ") and says in error
