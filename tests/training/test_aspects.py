"""Multi-aspect data: tinting, groups, CSN triplets, user CSVs and triplet lists, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from contract import InputSpec
from training.data.arrays import LabeledImages
from training.data.aspect_images import AspectDataError, read_aspects_csv
from training.data.aspect_triplets import TripletDataset, sample_triplets, triplet_accuracy
from training.data.fashion_aspects import GROUPS, PALETTE, fashion_aspects, tint
from training.data.sources import FASHION_MNIST_CLASSES


def test_palette_and_groups_are_fixed_and_complete():
    assert list(PALETTE) == ["white", "red", "orange", "yellow", "green", "cyan", "blue", "purple"]
    assert PALETTE["white"] == (255, 255, 255)
    assert sorted(c for members in GROUPS.values() for c in members) == sorted(FASHION_MNIST_CLASSES)


def test_tint_keeps_white_untinted_and_scales_channels():
    gray = np.full((2, 4, 4, 1), 200, np.uint8)
    rgb = tint(gray, np.array([0, list(PALETTE).index("blue")]))
    assert (rgb[0] == 200).all()  # white: the grey image in three channels
    blue = np.array(PALETTE["blue"]) / 255 * 200
    np.testing.assert_allclose(rgb[1, 0, 0], np.round(blue), atol=1)


def test_fashion_aspects_are_deterministic_and_labelled(fashion_test):
    small = fashion_test.subset(np.arange(500))
    a, b = fashion_aspects(small, seed=3), fashion_aspects(small, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.labels["color"], fashion_aspects(small, seed=4).labels["color"])
    assert a.images.shape == (500, 28, 28, 3)
    names = a.values["group"]
    for category, group in zip(a.labels["category"], a.labels["group"]):
        assert FASHION_MNIST_CLASSES[category] in GROUPS[names[group]]
    assert set(np.unique(a.labels["color"])) == set(range(8))


def test_triplets_follow_the_csn_rule_and_are_seeded():
    rng = np.random.default_rng(0)
    labels = {"shape": rng.integers(0, 4, 300), "colour": rng.integers(0, 3, 300)}
    triplets = sample_triplets(labels, ["shape", "colour"], 1001, seed=5)
    assert triplets.shape == (1001, 4)
    np.testing.assert_array_equal(triplets, sample_triplets(labels, ["shape", "colour"], 1001, seed=5))
    assert np.bincount(triplets[:, 3]).tolist() == [501, 500]
    for anchor, close, far, a in triplets:
        values = labels[["shape", "colour"][a]]
        assert anchor != close and values[anchor] == values[close] and values[anchor] != values[far]


def test_triplet_batches_carry_every_aspect_label_of_each_image(fashion_test):
    data = fashion_aspects(fashion_test.subset(np.arange(200)), seed=1)
    aspects = list(data.labels)
    triplets = sample_triplets(data.labels, aspects, 20, seed=2)
    joint, _ = data.joint_labels(aspects)
    item = TripletDataset(data, triplets, None, joint, aspects)[7]
    anchor, close, far, aspect = triplets[7]
    assert item["aspect_labels"].shape == (3, len(aspects))
    for row, image in enumerate((anchor, close, far)):
        assert item["aspect_labels"][row].tolist() == [int(data.labels[a][image]) for a in aspects]
        assert int(item["labels"][row]) == joint[image]
    # The triplet's own rule holds in its aspect's column: anchor and close agree, far differs.
    column = item["aspect_labels"][:, aspect]
    assert column[0] == column[1] != column[2]
    # A task on one aspect of the same data gets that aspect's labels only.
    only_color = TripletDataset(data, triplets, None, joint, ["color"])[7]["aspect_labels"]
    assert only_color.tolist() == [[int(data.labels["color"][i])] for i in (anchor, close, far)]


def test_triplet_accuracy_per_aspect():
    # Two aspects, 2-d unit embeddings per aspect: aspect 0 separates items 0,1 from 2; aspect 1 does not.
    emb = np.zeros((3, 2, 2), np.float32)
    emb[:, 0] = [[1, 0], [1, 0], [0, 1]]
    emb[:, 1] = [[0, 1], [1, 0], [0, 1]]
    triplets = np.array([[0, 1, 2, 0], [0, 1, 2, 1]])
    assert triplet_accuracy(emb, triplets, ["a", "b"]) == {"a": 1.0, "b": 0.0, "overall": 0.5}


def _write_csv_dataset(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,kind,colour"]
    for name, kind, colour, value in rows:
        if value is not None:
            Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(folder / name)
        lines.append(f"{name},{kind},{colour}")
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder / "data.csv"


def test_user_csv_loads_and_bad_rows_are_named(tmp_path):
    spec = InputSpec(height=8, width=8, channels=3)
    good = _write_csv_dataset(tmp_path / "good", [("a.png", "shoe", "red", 10), ("b.png", "bag", "red", 20),
                                                  ("c.png", "shoe", "blue", 30)])
    data = read_aspects_csv(good, spec)
    assert data.images.shape == (3, 8, 8, 3) and data.values == {"kind": ["shoe", "bag"], "colour": ["red", "blue"]}
    assert data.labels["kind"].tolist() == [0, 1, 0]
    missing = _write_csv_dataset(tmp_path / "missing", [("a.png", "shoe", "red", 10), ("gone.png", "bag", "red", None)])
    with pytest.raises(AspectDataError, match=r"row 3: image 'gone.png' not found"):
        read_aspects_csv(missing, spec)
    unseen = _write_csv_dataset(tmp_path / "unseen", [("a.png", "hat", "red", 10)])
    with pytest.raises(AspectDataError, match=r"row 2: kind='hat' never occurs in training data"):
        read_aspects_csv(unseen, spec, values=data.values)


def test_labeled_view_of_aspect_data():
    data = fashion_aspects(LabeledImages(np.zeros((10, 28, 28, 1), np.uint8), np.arange(10) % 10,
                                         FASHION_MNIST_CLASSES), seed=0)
    view = data.as_labeled("group")
    assert view.classes == list(GROUPS) and len(view) == 10


def test_aspects_from_a_csv_keep_their_own_values_and_the_preparation_settings(tmp_path):
    from contract import InputSpec as Spec
    from training.config import load_config
    from training.data.aspects import AspectTask
    from training.data.demo_catalogue import COLOURS, write_demo_catalogue
    from training.data.summary import data_summary

    write_demo_catalogue(tmp_path / "shop", per_class=20, size=24)
    config = load_config(None, ['data.dataset="aspects-csv"', f'data.data_dir="{tmp_path / "shop"}"',
                                'data.aspects=["category", "colour"]', "data.image_size=16", 'data.fit="crop"',
                                "data.eval_triplets=100"])
    task = AspectTask(config)
    assert task.splits.train.images.shape[1:] == (16, 16, 3)
    assert (len(task.splits.train), len(task.splits.val), len(task.splits.test)) == (128, 32, 40)

    def embed(images):
        vectors = np.random.default_rng(len(images)).normal(size=(len(images), 8))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), None

    metrics = task.test_metrics(embed)["aspects"]
    # The CSV's colours, not the tint palette of the built-in fashion-aspects data.
    assert "palette" not in metrics and set(metrics["values"]["colour"]) == set(COLOURS)
    assert not set(COLOURS) & set(PALETTE)
    summary = data_summary(task, config, Spec(height=16, width=16, channels=3, fit="crop"))
    assert summary["aspects"]["colour"] == metrics["values"]["colour"]
    assert summary["validation"] == {"asked": 5000, "used": 32, "seed": 0}


def test_csn_test_numbers_include_triplets_on_the_untinted_images(fashion_test):
    """The untinted test images get their own aspect triplets, for the aspects that vary there (colour
    does not), scored in the aspect spaces: with tint-blind raw pixels, category triplets there are
    as good as the tinted ones' and far above chance."""
    from training.config import load_config
    from training.data.aspects import AspectTask
    from training.evaluation.embed import pixel_embedder

    config = load_config("csn", ["data.train_limit=1000", "data.val_size=200", "data.test_limit=600",
                                 "data.eval_triplets=3000"])
    task = AspectTask(config)
    varying, triplets = task.untinted_triplets
    assert varying == ["category", "group"] and len(triplets) == 3000
    assert {"color"} == {a for a in task.aspects if len(np.unique(task.untinted.labels[a])) == 1}
    numbers = task.test_metrics(pixel_embedder())["aspects"]
    untinted = numbers["untinted_triplet_accuracy"]
    assert set(untinted) == {"category", "group", "overall"}
    assert numbers["untinted_test_triplets"] == 3000
    assert 0.7 < untinted["category"] <= 1.0 and 0.7 < untinted["group"] <= 1.0
    # The same pixels see the tints on the tinted images, which makes category triplets harder there.
    assert untinted["category"] > numbers["triplet_accuracy"]["category"]


def test_plain_images_come_from_the_untinted_training_images():
    """objective.instance_plain: the task keeps an untinted copy of its training images, aligned
    with the tinted ones, and each triplet brings a plain image and an edited view of it."""
    from training.config import load_config
    from training.data.aspects import AspectTask

    # fit "pad": framing each image on its own content moves a dark tint's frame by a pixel, so the
    # pixel-exact pairing below holds before framing.
    config = load_config("csn", ["data.train_limit=600", "data.val_size=100", "data.test_limit=100",
                                 "data.train_triplets=64", "optim.batch_size=8", 'data.fit="pad"'])
    task = AspectTask(config)
    plain, tinted = task.train_plain, task.train.images
    assert plain.shape == tinted.shape
    # The same images: tinting a plain one with its colour gives the tinted one.
    assert np.array_equal(tint(plain[:, :, :, :1], task.train.labels["color"]), tinted)
    batch = next(iter(task.train_loader("triplets", epoch=0)))
    assert batch["images_plain"].shape == batch["images_plain_view"].shape == (8, 28, 28, 3)
    # Untinted: every channel equal.
    assert torch.equal(batch["images_plain"][..., 0], batch["images_plain"][..., 2])
    assert not torch.equal(batch["images_plain"], batch["images_plain_view"])  # the view is edited
    without = AspectTask(load_config("csn", ["data.train_limit=600", "data.val_size=100", "data.test_limit=100",
                                             "objective.instance_plain=false"]))
    assert without.train_plain is None


def test_grouped_plain_images_come_per_category():
    """objective.instance_plain_per_class: each batch's plain images are m per category, so the
    instance term meets look-alikes; every image comes up, padded only to whole runs."""
    from training.config import load_config
    from training.data.aspect_images import AspectDataError
    from training.data.aspect_triplets import grouped_order
    from training.data.aspects import AspectTask

    labels = np.repeat(np.arange(10), [50, 40, 60, 45, 55, 50, 52, 48, 50, 50])
    order = grouped_order(labels, per_class=4, seed=3)
    assert set(order.tolist()) == set(range(len(labels)))  # every image comes up
    assert len(order) == 4 * sum(-(-n // 4) for n in np.bincount(labels))  # padded only to whole runs
    for start in range(0, len(order), 16):  # a batch of 16 holds whole runs of 4
        counts = np.bincount(labels[order[start:start + 16]], minlength=10)
        assert all(n % 4 == 0 for n in counts)
    runs = labels[order].reshape(-1, 4)
    assert (runs == runs[:, :1]).all()
    assert np.array_equal(order, grouped_order(labels, 4, seed=3))  # seeded
    assert not np.array_equal(order, grouped_order(labels, 4, seed=4))

    overrides = ["data.train_limit=600", "data.val_size=100", "data.test_limit=100", "data.train_triplets=64",
                 "optim.batch_size=16", "objective.instance_plain=true"]
    task = AspectTask(load_config("csn", overrides + ["objective.instance_plain_per_class=8"]))
    # The plain images are augmented, so read which ones a batch holds from the order it draws them in.
    loader = task.train_loader("triplets", epoch=0)
    drawn = loader.dataset.plain_order[:len(loader) * 16].reshape(-1, 16)
    for batch in task.train_loader("triplets", epoch=0):
        assert batch["images_plain"].shape == (16, 28, 28, 3)
    for plain in drawn:
        assert all(n % 8 == 0 for n in np.bincount(task.train.labels["category"][plain]))
    assert not np.array_equal(drawn, task.train_loader("triplets", epoch=1).dataset.plain_order[:drawn.size].reshape(-1, 16))
    with pytest.raises(AspectDataError, match="needs objective.instance_plain = true"):
        AspectTask(load_config("csn", overrides[:-1] + ["objective.instance_plain=false",
                                                        "objective.instance_plain_per_class=8"]))
