"""The shipped photo model out of the box (issue #30): `LIKENESS_MODEL_PATH=models/photo.onnx` with
its demo gallery of 120 product photos (service/gallery-photos: Fashion-MNIST *test* garments as
photos, which the model never trained on). Copies of a gallery photo, made as users make them, find
their original first; and a photo's nearest other photos are of its own kind far above chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from tests.conftest import REPO
from tests.service.conftest import make_settings
from training.evaluation.near_duplicates import EDITS

PHOTO_MODEL = REPO / "models" / "photo.onnx"
PHOTO_GALLERY = REPO / "service" / "gallery-photos"
# One edit of each family users make (training/evaluation/edits.py), plus strong JPEG and a crop.
COPY_EDITS = ["jpeg q30", "crop 8% and resize back", "border 6%, white", "letterbox to 16:9", "rotate 4 degrees",
              "cut 11% off the right", "caption", "blur", "watermark + jpeg q60", "logo in a corner"]


@pytest.fixture(scope="module")
def photo_client(tmp_path_factory):
    # No gallery named: the service picks the photo gallery for an RGB model of 64 pixels or more.
    settings = make_settings(tmp_path_factory.mktemp("photo"), model_path=PHOTO_MODEL, gallery_dir=None)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def manifest() -> list[dict]:
    return json.loads((PHOTO_GALLERY / "manifest.json").read_text())["items"]


def test_the_copy_edits_exist():
    assert set(COPY_EDITS) <= set(EDITS), sorted(set(COPY_EDITS) - set(EDITS))


def test_the_service_reads_the_photo_model_and_seeds_its_gallery(photo_client):
    ready = photo_client.get("/readyz").json()
    assert ready["index_items"] == 120
    spec = photo_client.get("/model").json()["spec"]
    assert (spec["name"], spec["input"]["height"], spec["input"]["channels"]) == ("likeness-photo", 128, 3)


def test_copies_of_a_photo_find_their_original_first(photo_client, manifest):
    rng = np.random.default_rng(30)
    chosen = [manifest[i] for i in rng.choice(len(manifest), 20, replace=False)]
    found, misses = 0, []
    for entry in chosen:
        photo = Image.open(PHOTO_GALLERY / entry["file"]).convert("RGB")
        for name in COPY_EDITS:
            reply = photo_client.post("/search", files={"image": ("copy.img", EDITS[name](photo))}, data={"k": 1})
            assert reply.status_code == 200, reply.text
            top = reply.json()["results"][0]["id"]
            found += top == entry["id"]
            if top != entry["id"]:
                misses.append((entry["id"], name))
    share = found / (len(chosen) * len(COPY_EDITS))
    print(f"copies found first: {share:.3f}; misses: {misses}")
    # Measured: 0.955 of 200 (misses: blur, and one sneaker under overlays); the card's R@1 on the
    # 600 demo test photos: mean 0.975, worst family blur.
    assert share >= 0.9, misses


def test_look_alikes_rank_above_unrelated_photos(photo_client, manifest):
    same_kind = 0
    for entry in manifest:
        hits = photo_client.post("/search", json={"id": entry["id"], "k": 2}).json()["results"]
        nearest = next(h for h in hits if h["id"] != entry["id"])
        same_kind += nearest["metadata"]["class"] == entry["metadata"]["class"]
    share = same_kind / len(manifest)
    print(f"nearest other photo of the same kind: {share:.3f} (chance 0.1)")
    assert share >= 0.6  # measured 0.792
