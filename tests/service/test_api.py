"""The API over HTTP, with the shipped ONNX model and a real FAISS index in a temp dir."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from tests.conftest import GALLERY, png_bytes
from tests.service.conftest import make_settings


def gallery_file(entry: dict) -> tuple[str, bytes, str]:
    return (entry["file"], (GALLERY / entry["file"]).read_bytes(), "image/png")


def test_ready_model_and_metrics(client, gallery_manifest):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["provider"] == "CPUExecutionProvider" and body["device"] == "cpu"
    assert body["index_items"] == len(gallery_manifest)
    model = client.get("/model").json()
    assert model["provider"]["active"] == "CPUExecutionProvider" and model["provider"]["reason"]
    assert model["spec"]["embedding_dim"] == model["index"]["dim"]
    assert client.get("/healthz").json() == {"status": "alive"}
    metrics = client.get("/metrics").text
    assert 'likeness_requests_total{method="GET",route="/readyz",status="200"} 1.0' in metrics
    assert "likeness_index_items" in metrics


def test_search_with_a_gallery_image_returns_it_first(client, gallery_manifest):
    for entry in gallery_manifest[::60]:
        response = client.post("/search", files={"image": gallery_file(entry)}, data={"k": "5"})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == 5
        assert results[0]["id"] == entry["id"] and results[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert results[0]["metadata"] == entry["metadata"]
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True)


def test_similarity_same_image_and_different_classes(client, gallery_manifest):
    by_class: dict[str, list[dict]] = {}
    for entry in gallery_manifest:
        by_class.setdefault(entry["metadata"]["class"], []).append(entry)
    trouser, bag = by_class["trouser"][0], by_class["bag"][0]
    same = client.post("/similarity", files={"image_a": gallery_file(trouser), "image_b": gallery_file(trouser)}).json()
    assert same["score"] == pytest.approx(1.0, abs=1e-5) and same["same"] is True and same["probability"] > 0.5
    other = client.post("/similarity", files={"image_a": gallery_file(trouser), "image_b": gallery_file(bag)}).json()
    assert other["same"] is False and other["score"] < other["threshold"] and other["probability"] < 0.5
    assert set(other) >= {"score", "probability", "same", "threshold", "model"}


def jpeg_copy(entry: dict, quality: int = 70) -> tuple[str, bytes, str]:
    """A re-saved JPEG of a gallery image: the copy a shop uploads again."""
    out = io.BytesIO()
    Image.open(GALLERY / entry["file"]).convert("RGB").save(out, format="JPEG", quality=quality)
    return (entry["file"].replace(".png", ".jpg"), out.getvalue(), "image/jpeg")


def test_a_re_encoded_copy_finds_its_original_first_and_is_called_the_same_image(client, gallery_manifest):
    """The same thing: a JPEG re-encode of every tenth indexed image comes back first, is a near
    duplicate by the model's threshold, and is the only hit above it. The same kind of thing:
    another image of the same class is *same* by class but not a near duplicate."""
    threshold = client.get("/model").json()["spec"]["near_duplicate"]["threshold"]
    for entry in gallery_manifest[::10]:
        results = client.post("/search", files={"image": jpeg_copy(entry)}, data={"k": "3"}).json()["results"]
        assert results[0]["id"] == entry["id"], (entry["id"], results)
        copies = client.post("/search", files={"image": jpeg_copy(entry)},
                             data={"k": "10", "min_score": str(threshold)}).json()["results"]
        assert [hit["id"] for hit in copies] == [entry["id"]]
        assert all(hit["score"] >= threshold for hit in copies)
    boots = [e for e in gallery_manifest if e["metadata"]["class"] == "ankle boot"]
    copy = client.post("/similarity", files={"image_a": gallery_file(boots[0]), "image_b": jpeg_copy(boots[0])}).json()
    assert copy["near_duplicate"] is True and copy["same"] is True
    assert copy["near_duplicate_threshold"] == threshold > copy["threshold"]
    other = client.post("/similarity", files={"image_a": gallery_file(boots[0]), "image_b": gallery_file(boots[1])}).json()
    assert other["same"] is True and other["near_duplicate"] is False and other["score"] < threshold
    # min_score is a cosine: outside [-1, 1] is a 422 naming the field.
    bad = client.post("/search", files={"image": gallery_file(boots[0])}, data={"min_score": "2"})
    assert bad.status_code == 422 and "min_score" in bad.text


def test_items_upsert_get_delete_and_persistence(tmp_path):
    settings = make_settings(tmp_path, seed_gallery=False)
    rng = np.random.default_rng(0)
    pictures = [png_bytes(rng.integers(0, 255, (28, 28), dtype=np.uint8)) for _ in range(3)]
    with __import__("fastapi.testclient", fromlist=["TestClient"]).TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["index_items"] == 0
        added = client.post("/items", files=[("image", ("a.png", pictures[0])), ("image", ("b.png", pictures[1]))],
                            data={"id": ["a", "b"], "metadata": ['{"label": "1"}', '{"label": "2"}']})
        assert added.status_code == 201 and added.json() == {"added": 2, "ids": ["a", "b"]}
        # Upsert: "a" now holds picture 2; searching picture 2 finds "a" first, and the count stays 2.
        client.post("/items", files=[("image", ("c.png", pictures[2]))], data={"id": "a", "metadata": '{"v": 2}'})
        assert client.get("/readyz").json()["index_items"] == 2
        hit = client.post("/search", files={"image": ("q.png", pictures[2])}, data={"k": "2"}).json()["results"]
        assert hit[0]["id"] == "a" and hit[0]["metadata"] == {"v": 2} and len(hit) == 2
        assert client.get("/items/a").json()["metadata"] == {"v": 2}
        thumb = client.get("/items/b/thumbnail")
        assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (28, 28)
        assert client.delete("/items/b").json() == {"deleted": "b"}
        assert client.delete("/items/b").status_code == 404
        assert client.get("/items/b").status_code == 404
    # A clean shutdown and restart keeps everything, and does not re-seed.
    with __import__("fastapi.testclient", fromlist=["TestClient"]).TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["index_items"] == 1
        assert client.get("/items/a").json()["metadata"] == {"v": 2}
        hit = client.post("/search", files={"image": ("q.png", pictures[2])}, data={"k": "1"}).json()["results"]
        assert hit[0]["id"] == "a"


def test_items_are_listed_a_page_at_a_time(client, gallery_manifest):
    first = client.get("/items", params={"limit": 120}).json()
    second = client.get("/items", params={"limit": 120, "after": first["next"]}).json()
    third = client.get("/items", params={"limit": 120, "after": second["next"]}).json()
    ids = [i["id"] for page in (first, second, third) for i in page["items"]]
    assert ids == sorted(e["id"] for e in gallery_manifest) and third["next"] is None
    assert client.get("/items", params={"limit": 0}).status_code == 422
    limits = client.get("/model").json()["limits"]
    assert limits["max_k"] == 1000 and limits["max_pixels"] == 25_000_000


@pytest.mark.parametrize("bad_id", ["a/../b", ".", "x/./y", "shoe/thumbnail"])
def test_ids_that_would_not_survive_a_url_path_are_refused(client, bad_id):
    response = client.post("/items", files={"image": ("g.png", GOOD)}, data={"id": bad_id})
    assert response.status_code == 422 and response.json()["code"] == "invalid_id"


def test_seed_gallery_can_be_disabled(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(create_app(make_settings(tmp_path, seed_gallery=False))) as client:
        assert client.get("/readyz").json()["index_items"] == 0
        assert client.post("/search", files={"image": ("x.png", png_bytes(np.zeros((28, 28), np.uint8)))}).json()["results"] == []


def test_embed_returns_normalised_vectors(client):
    rng = np.random.default_rng(1)
    files = [("image", (f"{i}.png", png_bytes(rng.integers(0, 255, (40, 30), dtype=np.uint8)))) for i in range(3)]
    body = client.post("/embed", files=files).json()
    vectors = np.array(body["embeddings"])
    assert vectors.shape == (3, body["dim"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


GOOD = png_bytes(np.full((28, 28), 128, np.uint8))
NOISE = png_bytes(np.random.default_rng(7).integers(0, 255, (64, 64), dtype=np.uint8))


@pytest.mark.parametrize("request_kwargs,status,code,field", [
    ({"files": {"image": ("e.png", b"")}}, 422, "empty", "image"),
    ({"files": {"image": ("t.txt", b"not an image at all")}}, 422, "not_an_image", "image"),
    ({"files": {"image": ("t.png", NOISE[: len(NOISE) // 2])}}, 422, "corrupt_image", "image"),
    ({"files": {"image": ("g.png", GOOD)}, "data": {"k": "0"}}, 422, "k_out_of_range", "k"),
    ({"files": {"image": ("g.png", GOOD)}, "data": {"k": "1001"}}, 422, "k_out_of_range", "k"),
    ({"files": {"image": ("g.png", GOOD)}, "data": {"k": "ten"}}, 422, "invalid_request", "k"),
    ({"data": {"k": "3"}}, 422, "invalid_request", "image"),
    ({"files": {"image": ("g.png", GOOD)}, "data": {"aspect": "colour"}}, 422, "unknown_aspect", "aspect"),
])
def test_bad_search_input_is_a_clear_4xx(client, request_kwargs, status, code, field):
    response = client.post("/search", **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["field"] == field and body["detail"]


def test_bad_items_input_is_a_clear_4xx_and_writes_nothing(client):
    before = client.get("/readyz").json()["index_items"]
    cases = [
        ({"files": [("image", ("g.png", GOOD))], "data": {"id": ["a", "b"]}}, "ids_images_mismatch"),
        ({"files": [("image", ("g.png", GOOD))], "data": {"id": "a", "metadata": "[1, 2]"}}, "invalid_metadata"),
        ({"files": [("image", ("g.png", GOOD))], "data": {"id": "a", "metadata": "{oops"}}, "invalid_metadata"),
        ({"files": [("image", ("g.png", GOOD))], "data": {"id": " padded "}}, "invalid_id"),
        ({"files": [("image", ("g.png", GOOD)), ("image", ("h.png", GOOD))], "data": {"id": ["d", "d"]}}, "duplicate_id"),
        # One bad image among good ones: nothing of the request is stored.
        ({"files": [("image", ("g.png", GOOD)), ("image", ("bad.png", b"junk"))], "data": {"id": ["ok", "bad"]}},
         "not_an_image"),
    ]
    for kwargs, code in cases:
        response = client.post("/items", **kwargs)
        assert response.status_code == 422 and response.json()["code"] == code, response.text
    assert client.get("/readyz").json()["index_items"] == before
    assert client.get("/items/ok").status_code == 404


def test_upload_and_pixel_limits(tmp_path):
    from fastapi.testclient import TestClient

    from tests.contract.test_images import png_header_claiming

    settings = make_settings(tmp_path, seed_gallery=False, max_upload_bytes=20_000, max_pixels=10_000,
                             max_images_per_request=2)
    with TestClient(create_app(settings)) as client:
        big = png_bytes(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
        response = client.post("/search", files={"image": ("big.png", big)})
        assert response.status_code == 413 and response.json()["code"] == "upload_too_large"
        assert "20000" in response.json()["detail"]
        bomb = client.post("/search", files={"image": ("bomb.png", png_header_claiming(20_000, 20_000))})
        assert bomb.status_code == 413 and bomb.json()["code"] == "too_many_pixels" and "10000" in bomb.json()["detail"]
        many = client.post("/embed", files=[("image", (f"{i}.png", GOOD)) for i in range(3)])
        assert many.status_code == 413 and many.json()["code"] == "too_many_images"


def test_openapi_documents_the_routes(client):
    schema = client.get("/openapi.json").json()
    assert {"/similarity", "/search", "/items", "/items/{item_id}", "/embed", "/readyz", "/model"} <= set(schema["paths"])
    json.dumps(schema)
