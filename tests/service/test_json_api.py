"""JSON bodies over HTTP (base64 images, stored ids, raw vectors, batch search), with the shipped model and a
real index: the same answers as multipart, the same limits, and a 4xx JSON error naming the field for each
way a body can be wrong."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import CSN_MODEL, GALLERY, png_bytes
from tests.service.conftest import make_settings


def b64(entry: dict) -> str:
    return base64.b64encode((GALLERY / entry["file"]).read_bytes()).decode()


def upload(entry: dict) -> tuple[str, bytes, str]:
    return (entry["file"], (GALLERY / entry["file"]).read_bytes(), "image/png")


def error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    if field is not None:
        assert body["field"] == field, body
    return body


def test_similarity_as_json_answers_as_multipart(client, gallery_manifest):
    a, b = gallery_manifest[0], gallery_manifest[7]
    multipart = client.post("/similarity", files={"image_a": upload(a), "image_b": upload(b)}).json()
    as_json = client.post("/similarity", json={"image_a": b64(a), "image_b": b64(b)})
    assert as_json.status_code == 200, as_json.text
    assert as_json.json() == multipart
    assert {"near_duplicate", "near_duplicate_threshold", "same", "probability"} <= set(multipart)
    # A data URL and line-wrapped base64 (as `base64` and MIME write it) are the same image.
    wrapped = "\n".join(b64(a)[i:i + 76] for i in range(0, len(b64(a)), 76))
    same = client.post("/similarity", json={"image_a": f"data:image/png;base64,{b64(a)}", "image_b": wrapped}).json()
    assert same["score"] == pytest.approx(1.0, abs=1e-5) and same["same"] is True
    if same["near_duplicate_threshold"] is not None:
        assert same["near_duplicate"] is True
    error(client.post("/similarity", json={"image_a": b64(a), "image_b": b64(b), "aspect": "colour"}),
          422, "unknown_aspect", "aspect")
    error(client.post("/similarity", json={"image_a": b64(a)}), 422, "invalid_request", "image_b")


def test_search_by_image_id_and_vector_agree(client, gallery_manifest):
    entry = gallery_manifest[42]
    multipart = client.post("/search", files={"image": upload(entry)}, data={"k": "5"}).json()
    by_image = client.post("/search", json={"image": b64(entry), "k": 5}).json()
    assert by_image == multipart and by_image["results"][0]["id"] == entry["id"]
    # The stored vector: no upload, no inference, the item itself first.
    by_id = client.post("/search", json={"id": entry["id"], "k": 5}).json()
    assert [h["id"] for h in by_id["results"]] == [h["id"] for h in multipart["results"]]
    assert by_id["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    # A raw vector is normalised: the embedding scaled by 3 finds the same items with the same scores.
    embedding = np.array(client.post("/embed", files={"image": upload(entry)}).json()["embeddings"][0])
    by_vector = client.post("/search", json={"vector": (3 * embedding).tolist(), "k": 5}).json()
    assert [h["id"] for h in by_vector["results"]] == [h["id"] for h in multipart["results"]]
    assert [h["score"] for h in by_vector["results"]] == pytest.approx([h["score"] for h in multipart["results"]],
                                                                       abs=1e-5)


def test_search_json_keeps_filter_and_min_score(client, gallery_manifest):
    entry = gallery_manifest[3]
    label = entry["metadata"]["label"]
    filtered = client.post("/search", json={"id": entry["id"], "k": 20, "filter": {"label": label}}).json()["results"]
    assert filtered and all(h["metadata"]["label"] == label for h in filtered)
    above = client.post("/search", json={"image": b64(entry), "k": 20, "min_score": 0.99999}).json()["results"]
    assert above and all(h["score"] >= 0.99999 for h in above)
    assert above == client.post("/search", files={"image": upload(entry)},
                                data={"k": "20", "min_score": "0.99999"}).json()["results"]
    error(client.post("/search", json={"id": entry["id"], "min_score": 2}), 422, "invalid_request", "min_score")
    error(client.post("/search", json={"id": entry["id"], "filter": {"label": {"in": [1]}}}),
          422, "invalid_filter", "filter")
    lone_surrogate = '{"id": ' + json.dumps(entry["id"]) + ', "filter": {"label": "\\ud800"}}'  # a lone surrogate, escaped
    error(client.post("/search", content=lone_surrogate, headers={"content-type": "application/json"}), 422,
          "invalid_filter", "filter")
    error(client.post("/search", json={"id": entry["id"], "filter": {"x": "y" * 5000}}), 413, "filter_too_large",
          "filter")
    error(client.post("/search", json={"id": entry["id"], "k": 0}), 422, "k_out_of_range", "k")


def test_search_json_errors_name_the_field(client, gallery_manifest):
    entry = gallery_manifest[0]
    dim = client.get("/model").json()["spec"]["embedding_dim"]
    error(client.post("/search", json={"image": "not base64!"}), 422, "invalid_base64", "image")
    error(client.post("/search", json={"image": ""}), 422, "empty", "image")
    error(client.post("/search", json={"image": base64.b64encode(b"plain text").decode()}), 422, "not_an_image",
          "image")
    error(client.post("/search", json={"id": "no-such-item"}), 404, "not_found", "id")
    error(client.post("/search", json={"image": b64(entry), "id": entry["id"]}), 422, "invalid_query", "id")
    error(client.post("/search", json={"k": 5}), 422, "invalid_query")
    error(client.post("/search", json={"vector": [0.1] * (dim - 1)}), 422, "invalid_vector", "vector")
    error(client.post("/search", json={"vector": [0.0] * dim}), 422, "invalid_vector", "vector")
    error(client.post("/search", json={"vector": ["a"] * dim}), 422, "invalid_request", "vector.0")
    for bad in ("NaN", "Infinity", "-Infinity", "1e999"):
        text = "[" + ", ".join(["0.1"] * (dim - 1) + [bad]) + "]"
        body = error(client.post("/search", content=f'{{"vector": {text}}}',
                                 headers={"content-type": "application/json"}), 422, "invalid_request")
        assert body["field"] == f"vector.{dim - 1}", body
    error(client.post("/search", json={"image": b64(entry), "top_k": 3}), 422, "invalid_request", "top_k")
    error(client.post("/search", json=[b64(entry)]), 422, "invalid_request")
    for raw in (b"{not json", b'{"id": "a", "id": "b"}', b"\xff\xfe{}", b"[" * 100_000):
        error(client.post("/search", content=raw, headers={"content-type": "application/json"}), 400, "invalid_body")
    # Multipart stays multipart: a JSON route never sees it, and its errors are as before.
    error(client.post("/search", data={"k": "5"}), 422, "invalid_request", "image")


def test_batch_search_one_list_per_image(client, gallery_manifest):
    entries = gallery_manifest[10:13]
    response = client.post("/search/batch", json={"images": [b64(e) for e in entries], "k": 4})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3
    for entry, hits in zip(entries, results):
        single = client.post("/search", json={"image": b64(entry), "k": 4}).json()["results"]
        assert hits == single and hits[0]["id"] == entry["id"]
    filtered = client.post("/search/batch", json={"images": [b64(e) for e in entries], "k": 50,
                                                  "filter": {"label": entries[0]["metadata"]["label"]},
                                                  "min_score": 0.5}).json()["results"]
    assert all(h["metadata"]["label"] == entries[0]["metadata"]["label"] and h["score"] >= 0.5
               for hits in filtered for h in hits)
    error(client.post("/search/batch", json={"images": []}), 422, "invalid_request", "images")
    error(client.post("/search/batch", json={"images": [b64(entries[0]), "%%%"]}), 422, "invalid_base64", "images[1]")
    error(client.post("/search/batch", files={"image": upload(entries[0])}), 415, "unsupported_media_type")


def test_json_bodies_obey_the_request_limits(tmp_path, gallery_manifest):
    settings = make_settings(tmp_path, max_upload_bytes=20_000, max_pixels=10_000, max_images_per_request=2)
    big = base64.b64encode(png_bytes(np.zeros((120, 120), np.uint8))).decode()  # 14,400 pixels
    with TestClient(create_app(settings)) as client:
        images = [b64(e) for e in gallery_manifest[:3]]
        body = error(client.post("/search/batch", json={"images": images}), 413, "too_many_images", "images")
        assert "LIKENESS_MAX_IMAGES_PER_REQUEST" in body["detail"]
        assert client.post("/search/batch", json={"images": images[:2]}).status_code == 200
        error(client.post("/search", json={"image": big}), 413, "too_many_pixels", "image")
        error(client.post("/similarity", json={"image_a": images[0], "image_b": big}), 413, "too_many_pixels",
              "image_b")
        noise = base64.b64encode(png_bytes(np.random.default_rng(0).integers(0, 256, (90, 90), np.uint8))).decode()
        error(client.post("/search", json={"image": noise * 3}), 413, "upload_too_large")


def test_json_routes_need_the_key_like_multipart(tmp_path, gallery_manifest):
    settings = make_settings(tmp_path, api_key="s3cret", api_key_for_reads=True)
    with TestClient(create_app(settings)) as client:
        entry = gallery_manifest[0]
        error(client.post("/search", json={"id": entry["id"]}), 401, "unauthorized")
        error(client.post("/search/batch", json={"images": [b64(entry)]}), 401, "unauthorized")
        ok = client.post("/search", json={"id": entry["id"]}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and ok.json()["results"][0]["id"] == entry["id"]


def test_openapi_documents_both_request_shapes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path, fields in (("/similarity", {"image_a", "image_b", "aspect", "model"}),
                         ("/search", {"image", "id", "vector", "k", "filter", "aspect", "min_score", "model"})):
        content = paths[path]["post"]["requestBody"]["content"]
        assert set(content) == {"multipart/form-data", "application/json"}
        assert set(content["application/json"]["schema"]["properties"]) == fields
    batch = paths["/search/batch"]["post"]
    assert set(batch["requestBody"]["content"]) == {"application/json"}
    assert batch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchSearchResponse"}


def test_search_by_id_and_vector_in_an_aspect_space(tmp_path):
    settings = make_settings(tmp_path, model_path=CSN_MODEL, seed_gallery=False)
    rng = np.random.default_rng(0)
    images = [png_bytes(rng.integers(0, 256, (28, 28, 3), np.uint8)) for _ in range(4)]
    with TestClient(create_app(settings)) as client:
        aspect = client.get("/model").json()["spec"]["aspects"][0]
        added = client.post("/items", files=[("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)],
                            data={"id": [f"item-{i}" for i in range(4)]})
        assert added.status_code == 201, added.text
        embedded = client.post("/embed", files={"image": ("q.png", images[2], "image/png")}).json()
        by_image = client.post("/search", json={"image": base64.b64encode(images[2]).decode(), "aspect": aspect,
                                                "k": 4}).json()
        by_id = client.post("/search", json={"id": "item-2", "aspect": aspect, "k": 4}).json()
        by_vector = client.post("/search", json={"vector": embedded["aspect_embeddings"][0][aspect], "aspect": aspect,
                                                 "k": 4}).json()
        assert by_id["aspect"] == by_image["aspect"] == aspect
        order = [h["id"] for h in by_image["results"]]
        assert order[0] == "item-2"
        assert [h["id"] for h in by_id["results"]] == order == [h["id"] for h in by_vector["results"]]
