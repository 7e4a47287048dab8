"""The same-image threshold for the index's size (ModelSpec.near_duplicate_by_items): a catalogue of
a few images asks less of a copy than one of thousands, whose look-alikes are nearer. /similarity,
/search and GET /duplicates decide at the threshold for the index's size and say which they used."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from contract import SPEC_METADATA_KEY, ModelSpec
from service.app import create_app
from tests.conftest import DEFAULT_MODEL, png_bytes
from tests.service.conftest import make_settings


def sized_model(tmp_path, table_above: float, items: int) -> tuple:
    """The shipped default model with thresholds by catalogue size: its own up to 2 items, and
    ``table_above`` from ``items`` on."""
    model = onnx.load(str(DEFAULT_MODEL))
    entry = next(p for p in model.metadata_props if p.key == SPEC_METADATA_KEY)
    spec = ModelSpec.model_validate_json(entry.value)
    table = [{"items": 2, "threshold": spec.near_duplicate.threshold}, {"items": items, "threshold": table_above}]
    spec = ModelSpec.model_validate({**spec.model_dump(), "near_duplicate_by_items": table})
    entry.value = spec.to_json()
    path = tmp_path / "sized.onnx"
    onnx.save(model, str(path))
    return path, spec


def jpeg(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=80)
    return out.getvalue()


def test_the_copy_decision_follows_the_index_size(tmp_path, fashion_test):
    images = fashion_test.images[:12, :, :, 0]
    # Two images or fewer: the shipped threshold; ten or more: 1.0, where a re-encoded copy is no copy.
    path, spec = sized_model(tmp_path, 1.0, 10)
    with TestClient(create_app(make_settings(tmp_path, model_path=path, seed_gallery=False))) as client:
        def add(first: int, last: int) -> None:
            files = [("image", (f"{i}.png", png_bytes(images[i]))) for i in range(first, last)]
            assert client.post("/items", files=files, data={"id": [str(i) for i in range(first, last)]}).status_code == 201

        def judged() -> tuple[dict, dict, dict]:
            pair = client.post("/similarity", files={"image_a": png_bytes(images[0]), "image_b": jpeg(images[0])}).json()
            search = client.post("/search", files={"image": jpeg(images[0])}, data={"k": "2"}).json()
            return pair, search, client.get("/duplicates").json()

        add(0, 2)
        pair, search, duplicates = judged()
        low = spec.near_duplicate_by_items[0].threshold
        assert pair["near_duplicate_threshold"] == search["near_duplicate_threshold"] == duplicates["min_score"] == low
        assert pair["near_duplicate"] is True and search["results"][0] == {**search["results"][0], "id": "0",
                                                                           "near_duplicate": True}
        add(2, 5)  # five items: between the points, in log(items)
        pair, search, duplicates = judged()
        between = spec.same_image_threshold(5)
        assert low < between < 1.0 and between == pytest.approx(low + np.log(2.5) / np.log(5) * (1.0 - low), abs=2e-6)
        assert pair["near_duplicate_threshold"] == search["near_duplicate_threshold"] == duplicates["min_score"] == between
        add(5, 12)  # twelve: above the last point
        pair, search, duplicates = judged()
        assert pair["near_duplicate_threshold"] == search["near_duplicate_threshold"] == duplicates["min_score"] == 1.0
        assert pair["near_duplicate"] is False and search["results"][0]["near_duplicate"] is False
        assert pair["near_duplicate_score"] == search["results"][0]["near_duplicate_score"] < 1.0
        assert client.get("/duplicates", params={"min_score": 0.5}).json()["min_score"] == 0.5  # still overrides
        for i in range(4, 12):  # back to four items: the count is read again after this process's deletes
            assert client.delete(f"/items/{i}").status_code == 200
        expected = spec.same_image_threshold(4)
        assert client.post("/search", files={"image": jpeg(images[0])}).json()["near_duplicate_threshold"] == expected
