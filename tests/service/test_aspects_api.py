"""Conditional similarity through the API, with the shipped CSN model (models/csn.onnx), on held-out (test) images.

Same category in different colours must be "same" on category and "different" on color; the same
colour on different categories must be the reverse. Images are Fashion-MNIST *test* images, tinted
with the documented palette: no model has trained on them.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import CSN_MODEL, png_bytes
from training.data.fashion_aspects import PALETTE, tint

PAIRS = 60
# Decisions use each aspect's equal-error-rate threshold fitted on validation pairs; on test pairs
# the model's category decisions are right about 90% of the time (models/csn.md), so these bounds
# leave room for sampling noise over PAIRS pairs, not for a model that ignores the aspect.
DECISION_RATE = 0.85


@pytest.fixture(scope="module")
def aspect_model_client(tmp_path_factory):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("aspects"), model_path=CSN_MODEL, seed_gallery=False)
    with TestClient(create_app(settings)) as client:
        aspects = client.get("/model").json()["spec"]["aspects"]
        if not aspects:
            pytest.fail(f"{CSN_MODEL} has no aspects; it must be the CSN model")
        yield client, aspects


def tinted(image: np.ndarray, colour: str) -> bytes:
    return png_bytes(tint(image[None], np.array([list(PALETTE).index(colour)]))[0])


def compare(client, a: bytes, b: bytes, aspect: str | None = None) -> dict:
    data = {"aspect": aspect} if aspect else {}
    response = client.post("/similarity", files={"image_a": ("a.png", a), "image_b": ("b.png", b)}, data=data)
    assert response.status_code == 200, response.text
    return response.json()


def test_category_and_colour_are_told_apart(aspect_model_client, fashion_test):
    client, aspects = aspect_model_client
    assert {"category", "color"} <= set(aspects)
    rng = np.random.default_rng(0)
    colours = [c for c in PALETTE if c != "white"]
    same_category, same_colour = [], []
    for _ in range(PAIRS):
        cls = rng.integers(0, 10)
        i, j = rng.choice(np.flatnonzero(fashion_test.labels == cls), 2, replace=False)
        c1, c2 = rng.choice(colours, 2, replace=False)
        a, b = tinted(fashion_test.images[i], c1), tinted(fashion_test.images[j], c2)
        same_category.append((compare(client, a, b, "category"), compare(client, a, b, "color")))
        k = rng.choice(np.flatnonzero(fashion_test.labels != cls))
        c = rng.choice(colours)
        a, b = tinted(fashion_test.images[i], c), tinted(fashion_test.images[k], c)
        same_colour.append((compare(client, a, b, "category"), compare(client, a, b, "color")))
    # Same category, different colours: "same" on category, "different" on color.
    rates = {
        "same category: same on category": np.mean([cat["same"] for cat, _ in same_category]),
        "same category: different on color": np.mean([not col["same"] for _, col in same_category]),
        # Same colour, different categories: the reverse.
        "same colour: different on category": np.mean([not cat["same"] for cat, _ in same_colour]),
        "same colour: same on color": np.mean([col["same"] for _, col in same_colour]),
    }
    assert all(rate >= DECISION_RATE for rate in rates.values()), rates
    # And the scores, not only the decisions, move the right way.
    assert np.mean([cat["score"] - col["score"] for cat, col in same_category]) > 0.3
    assert np.mean([col["score"] - cat["score"] for cat, col in same_colour]) > 0.3


def test_similarity_reports_every_aspect_and_unknown_aspects_are_refused(aspect_model_client, fashion_test):
    client, aspects = aspect_model_client
    a, b = tinted(fashion_test.images[0], "red"), tinted(fashion_test.images[1], "blue")
    overall = compare(client, a, b)
    assert overall["aspect"] is None and list(overall["aspects"]) == aspects
    decided = compare(client, a, b, "color")
    assert decided["aspect"] == "color" and decided["score"] == overall["aspects"]["color"]
    bad = client.post("/similarity", files={"image_a": ("a.png", a), "image_b": ("b.png", b)},
                      data={"aspect": "heel height"})
    assert bad.status_code == 422 and bad.json()["code"] == "unknown_aspect"
    assert all(name in bad.json()["detail"] for name in aspects)


def test_aspect_search_uses_its_own_index_in_step_with_the_main_one(aspect_model_client, fashion_test):
    client, aspects = aspect_model_client
    rng = np.random.default_rng(1)
    # Index 40 images: 4 colours x 10 categories, all distinct items.
    ids, images = [], {}
    for cls in range(10):
        picks = rng.choice(np.flatnonzero(fashion_test.labels == cls), 4, replace=False)
        for colour, index in zip(["red", "green", "blue", "yellow"], picks):
            item_id = f"c{cls}-{colour}"
            images[item_id] = tinted(fashion_test.images[index], colour)
            ids.append(item_id)
    added = client.post("/items", files=[("image", (f"{i}.png", images[i])) for i in ids], data={"id": ids})
    assert added.status_code == 201
    query = images["c3-red"]
    by_colour = client.post("/search", files={"image": ("q.png", query)}, data={"k": "10", "aspect": "color"}).json()
    assert sum(r["id"].endswith("-red") for r in by_colour["results"]) >= 9
    # Per category, the share of the red item's 3 nearest others that are its category (the other
    # colours): high in the category space, low in the colour space (where red items come first).
    def same_category_share(aspect: str) -> float:
        shares = []
        for cls in range(10):
            found = client.post("/search", files={"image": ("q.png", images[f"c{cls}-red"])},
                                data={"k": "4", "aspect": aspect}).json()["results"]
            others = [r["id"] for r in found if r["id"] != f"c{cls}-red"][:3]
            shares.append(np.mean([i.startswith(f"c{cls}-") for i in others]))
        return float(np.mean(shares))

    category_share, colour_share = same_category_share("category"), same_category_share("color")
    assert category_share >= 0.6 and colour_share <= 0.2, (category_share, colour_share)
    # Delete and upsert reach every aspect index.
    assert client.delete("/items/c3-red").status_code == 200
    again = client.post("/search", files={"image": ("q.png", query)}, data={"k": "40", "aspect": "color"}).json()
    assert "c3-red" not in {r["id"] for r in again["results"]} and len(again["results"]) == 39
    stats = client.get("/index").json()["spaces"]
    assert set(stats) == {"overall", *aspects} and len(set(stats.values())) == 1
