"""Hostile input over HTTP (issue 17): every bad request gets a 4xx JSON error, and nothing that is
accepted can break a later read. Real app, real model, real index in a temp dir."""

from __future__ import annotations

import json
import re
import sqlite3
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.settings import Settings
from tests.conftest import REPO, png_bytes
from tests.hostile import crafted_files, hostile_text, image_corpus, multipart, raw_json_objects, wire
from tests.service.conftest import make_settings

IMAGE = png_bytes(np.random.default_rng(17).integers(0, 255, (28, 28), dtype=np.uint8))
DEEP = "[" * 2000 + "]" * 2000
IMAGE_FIELDS = [("/embed", "image"), ("/search", "image"), ("/similarity", "image_a"), ("/similarity", "image_b"),
                ("/items", "image")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One app for the module: the hostile examples share an index, as they would in production."""
    settings = make_settings(tmp_path_factory.mktemp("hostile"), seed_gallery=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def assert_error(response, status: int | None = None, code: str | None = None, field: str | None = None) -> dict:
    """A 4xx with the documented JSON error and a request id."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert status is None or response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"detail", "code", "field"} and body["detail"] and body["code"], body
    assert code is None or body["code"] == code, body
    assert field is None or body["field"] == field, body
    assert response.headers["x-request-id"]
    return body


def post_image(client, path: str, field: str, data: bytes, **form):
    """``data`` in ``field`` of ``path``; the other fields the route needs get a valid value."""
    files = [(field, ("upload", data))]
    if path == "/similarity":
        other = "image_b" if field == "image_a" else "image_a"
        files.append((other, ("other.png", IMAGE)))
    if path == "/items":
        form = {"id": "corpus-item", **form}
    return client.post(path, files=files, data=form)


def item_url(item_id: str) -> str:
    # Quoted twice: Starlette's TestClient unquotes httpx's URL.path, which httpx has already
    # unquoted (a real server decodes the path once, so a client quotes once).
    return "/items/" + quote(quote(item_id, safe=""), safe="")


def readable_everywhere(client, expected: dict[str, dict]) -> None:
    """Every item is returned, as it was stored, by GET /items (every page), GET /items/{id} and /search."""
    listed, after = {}, None
    while True:
        page = client.get("/items", params={"limit": 7, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text[:300]
        for item in page.json()["items"]:
            listed[item["id"]] = item["metadata"]
        after = page.json()["next"]
        if after is None:
            break
    for item_id, metadata in expected.items():
        assert listed.get(item_id) == metadata, item_id
        one = client.get(item_url(item_id))
        assert one.status_code == 200 and one.json()["metadata"] == metadata, (item_id, one.text[:300])
    search = client.post("/search", files={"image": ("q.png", IMAGE)}, data={"k": "1000"})
    assert search.status_code == 200, search.text[:300]
    found = {hit["id"]: hit["metadata"] for hit in search.json()["results"]}
    assert all(found.get(item_id) == metadata for item_id, metadata in expected.items())


# Finding 1: stored metadata that breaks reads ------------------------------------------------------

@pytest.mark.parametrize("metadata", ['{"x": "\\ud800"}', '{"x": "a\\udfff"}', '{"\\udc00": 1}',
                                      '{"x": ' + "[" * 256 + "]" * 256 + "}", '{"x": ' + "{\"y\": " * 40 + "1"
                                      + "}" * 40 + "}"])
def test_metadata_that_a_read_could_not_return_is_refused_on_write(server, metadata):
    response = server.post("/items", files={"image": ("a.png", IMAGE)}, data={"id": "poison", "metadata": metadata})
    assert_error(response, 422, "invalid_metadata", "metadata[0]")
    assert server.get("/items/poison").status_code == 404
    assert server.get("/items").status_code == 200


def test_metadata_at_the_depth_limit_is_stored_and_returned(server):
    from service.item_fields import MAX_DEPTH

    value: object = "leaf"
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    response = server.post("/items", files={"image": ("a.png", IMAGE)},
                           data={"id": "deep-ok", "metadata": json.dumps({"x": value})})
    assert response.status_code == 201, response.text
    readable_everywhere(server, {"deep-ok": {"x": value}})
    assert server.delete("/items/deep-ok").status_code == 200


def test_a_bad_row_from_an_older_version_fails_that_row_not_the_page(tmp_path):
    settings = make_settings(tmp_path, seed_gallery=False)
    with TestClient(create_app(settings)) as client:
        for item_id in ("a", "b", "c"):
            assert client.post("/items", files={"image": ("a.png", IMAGE)},
                               data={"id": item_id, "metadata": json.dumps({"n": item_id})}).status_code == 201
    # What an older version stored without checking (json.dumps escapes the surrogate, as it did).
    db = sqlite3.connect(tmp_path / "data" / "index.sqlite3")
    with db:
        db.execute("UPDATE items SET metadata = ? WHERE id = 'b'", (json.dumps({"x": "\ud800"}),))
        db.execute("UPDATE items SET metadata = ? WHERE id = 'c'", ('{"x": ' + "[" * 300 + "]" * 300 + "}",))
    db.close()
    with TestClient(create_app(settings)) as client:
        page = client.get("/items")
        assert page.status_code == 200
        rows = {item["id"]: item for item in page.json()["items"]}
        assert rows["a"]["metadata"] == {"n": "a"} and rows["a"]["error"] is None
        for bad in ("b", "c"):
            assert rows[bad]["metadata"] is None and "delete it or add it again" in rows[bad]["error"]
            one = client.get(f"/items/{bad}")
            assert one.status_code == 200 and one.json()["error"] == rows[bad]["error"]
        hits = client.post("/search", files={"image": ("q.png", IMAGE)}, data={"k": "3"})
        assert hits.status_code == 200 and {h["id"] for h in hits.json()["results"]} == {"a", "b", "c"}
        # Re-adding the item repairs it.
        assert client.post("/items", files={"image": ("a.png", IMAGE)},
                           data={"id": "b", "metadata": '{"n": "b"}'}).status_code == 201
        assert client.get("/items/b").json() == {**client.get("/items/b").json(), "metadata": {"n": "b"},
                                                 "error": None}


# Finding 2: broken images -----------------------------------------------------------------------

BROKEN = ["png-head20", "jpeg-head30", "png-ztxt-bomb", "png-iccp-bomb", "pgm-maxval-0", "pgm-maxval-99999999",
          "tiff-lab"]


@pytest.mark.parametrize("path,field", IMAGE_FIELDS)
def test_broken_images_are_a_422_naming_the_field_on_every_image_field(server, path, field):
    crafted = dict(crafted_files())
    for name in BROKEN:
        body = assert_error(post_image(server, path, field, crafted[name]), 422)
        assert body["field"] == (field if path != "/embed" and path != "/items" else f"{field}[0]"), (name, body)
        assert body["code"] in ("corrupt_image", "unsupported_image"), (name, body)


# Finding 3: deeply nested JSON ------------------------------------------------------------------

def test_deeply_nested_json_in_metadata_or_filter_is_a_422(server):
    add = server.post("/items", files={"image": ("a.png", IMAGE)}, data={"id": "nested", "metadata": DEEP})
    assert_error(add, 422, "invalid_metadata", "metadata[0]")
    search = server.post("/search", files={"image": ("q.png", IMAGE)}, data={"filter": DEEP})
    assert_error(search, 422, "invalid_filter", "filter")
    wrapped = server.post("/search", files={"image": ("q.png", IMAGE)}, data={"filter": '{"a": ' + DEEP + "}"})
    assert_error(wrapped, 422, "invalid_filter", "filter")


# Finding 5: an empty API key ------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_api_key_is_no_key(tmp_path, monkeypatch, value):
    monkeypatch.setenv("LIKENESS_API_KEY", value)
    assert Settings().api_key is None
    settings = make_settings(tmp_path, seed_gallery=False)
    with TestClient(create_app(settings)) as client:
        # No key is configured, so none is asked for; an empty header is not "the" key of a keyed server.
        assert client.post("/items", files={"image": ("a.png", IMAGE)}, data={"id": "a"}).status_code == 201
    keyed = make_settings(tmp_path / "keyed", seed_gallery=False, api_key=" s3cret ")
    assert keyed.api_key.get_secret_value() == "s3cret"
    with TestClient(create_app(keyed)) as client:
        for header in ("", " "):
            denied = client.post("/items", files={"image": ("a.png", IMAGE)}, data={"id": "a"},
                                 headers={"X-API-Key": header})
            assert_error(denied, 403, "forbidden")


# Finding 7: pixels per request ----------------------------------------------------------------------

def test_pixels_are_capped_per_request_before_any_is_decoded(tmp_path):
    settings = make_settings(tmp_path, seed_gallery=False, max_pixels=10_000, max_pixels_per_request=2_000)
    with TestClient(create_app(settings)) as client:
        three = [("image", (f"{i}.png", IMAGE)) for i in range(3)]  # 3 x 784 = 2352 pixels
        body = assert_error(client.post("/embed", files=three), 413, "too_many_pixels")
        assert "LIKENESS_MAX_PIXELS_PER_REQUEST" in body["detail"] and "2000" in body["detail"]
        assert client.post("/embed", files=three[:2]).status_code == 200
        assert client.get("/model").json()["limits"]["max_pixels_per_request"] == 2_000


# Finding 10: silent changes -------------------------------------------------------------------------

@pytest.mark.parametrize("metadata", ['{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}', '{"x": 1e400}',
                                      '{"a": 1, "a": 2}'])
def test_values_json_cannot_return_as_sent_are_refused(server, metadata):
    response = server.post("/items", files={"image": ("a.png", IMAGE)}, data={"id": "silent", "metadata": metadata})
    assert_error(response, 422, "invalid_metadata", "metadata[0]")
    search = server.post("/search", files={"image": ("q.png", IMAGE)}, data={"filter": metadata})
    assert_error(search, 422, "invalid_filter", "filter")


@pytest.mark.parametrize("field,value", [("id", b"caf\xe9"), ("id", b"\xff\xfe"), ("id", b"ok-\xed\xa0\x80"),
                                         ("metadata", b'{"x": "caf\xe9"}'), ("metadata", b'{"\xc3": 1}')])
def test_text_fields_that_are_not_utf8_are_refused_not_stored_as_mojibake(server, field, value):
    parts = [("image", IMAGE, "a.png"), ("id", b"utf8-test", None), ("metadata", b"{}", None)]
    parts = [(name, value, None) if name == field else (name, data, filename) for name, data, filename in parts]
    body, content_type = multipart(parts)
    response = server.post("/items", content=body, headers={"Content-Type": content_type})
    error = assert_error(response, 422)
    assert error["field"] == f"{field}[0]" and "UTF-8" in error["detail"], error
    listed = [item["id"] for item in server.get("/items", params={"limit": 1000}).json()["items"]]
    assert "utf8-test" not in listed and value.decode("latin-1") not in listed


def test_text_fields_in_utf8_are_stored_as_sent(server):
    good = [("image", IMAGE, "a.png"), ("id", "naïve-ok".encode(), None), ("metadata", '{"x": "ça"}'.encode(), None)]
    body, content_type = multipart(good)
    assert server.post("/items", content=body, headers={"Content-Type": content_type}).status_code == 201
    assert server.get(item_url("naïve-ok")).json()["metadata"] == {"x": "ça"}


# Finding 11: cross-origin writes and the docs behind the key ------------------------------------------

@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"},
                                     {"Origin": "null"}, {"Origin": "http://["}])
def test_cross_origin_writes_are_refused(server, headers):
    add = server.post("/items", files={"image": ("a.png", IMAGE)}, data={"id": "csrf"}, headers=headers)
    assert_error(add, 403, "cross_origin")
    assert server.get("/items/csrf").status_code == 404
    assert_error(server.delete("/items/anything", headers=headers), 403, "cross_origin")
    assert_error(server.post("/index/snapshot", headers=headers), 403, "cross_origin")
    assert server.get("/items", headers=headers).status_code == 200  # reading is not refused


@pytest.mark.parametrize("headers", [{}, {"Sec-Fetch-Site": "same-origin", "Origin": "https://elsewhere"},
                                     {"Sec-Fetch-Site": "none"}, {"Origin": "http://testserver"}])
def test_same_origin_and_non_browser_writes_are_served(server, headers):
    add = server.post("/items", files={"image": ("a.png", IMAGE)}, data={"id": "same-origin"}, headers=headers)
    assert add.status_code == 201, add.text
    assert server.delete("/items/same-origin", headers=headers).status_code == 200


def test_with_the_key_required_on_reads_the_schema_needs_it_and_the_docs_pages_are_off(tmp_path):
    settings = make_settings(tmp_path, seed_gallery=False, api_key="k3y", api_key_for_reads=True)
    with TestClient(create_app(settings)) as client:
        assert_error(client.get("/openapi.json"), 401, "unauthorized")
        assert client.get("/openapi.json", headers={"X-API-Key": "k3y"}).json()["info"]["title"] == "likeness"
        for page in ("/docs", "/redoc"):
            assert_error(client.get(page), 404, "not_found")
    with TestClient(create_app(make_settings(tmp_path / "open", seed_gallery=False))) as client:
        assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200


# The hostile corpus: every input against every image and JSON field ---------------------------------

@pytest.mark.slow  # over 5 s on 2 cores
def test_every_corpus_image_on_every_image_field_is_a_4xx_or_served(server):
    corpus = image_corpus(damage_every=4)
    stored = {}
    for i, (name, data) in enumerate(corpus):
        for path, field in IMAGE_FIELDS:
            form = {"id": f"img-{i}", "metadata": json.dumps({"file": name})} if path == "/items" else {}
            response = post_image(server, path, field, data, **form)
            if response.status_code >= 400:
                assert_error(response)
            else:
                assert response.status_code in (200, 201), (name, path, response.text[:300])
                if path == "/items":
                    stored[f"img-{i}"] = {"file": name}
    assert len(stored) > 50
    assert server.get("/readyz").status_code == 200
    readable_everywhere(server, stored)


STORED: dict[str, dict] = {}


@settings(max_examples=250, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(item_id=hostile_text, metadata=raw_json_objects())
def test_generated_ids_and_metadata_are_a_4xx_or_stored_and_returned_as_sent(server, item_id, metadata):
    body, content_type = multipart([("image", IMAGE, "a.png"), ("id", wire(item_id), None),
                                    ("metadata", wire(metadata), None)])
    response = server.post("/items", content=body, headers={"Content-Type": content_type})
    if response.status_code != 201:
        assert_error(response)
        return
    expected = json.loads(metadata) if metadata else {}
    STORED[item_id] = expected
    one = server.get(item_url(item_id))
    assert one.status_code == 200 and one.json()["id"] == item_id and one.json()["metadata"] == expected


def test_every_generated_item_that_was_accepted_reads_back_everywhere(server):
    assert len(STORED) > 20, "the generator should produce many acceptable items"
    readable_everywhere(server, STORED)


@settings(max_examples=120, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(raw=raw_json_objects(), k=st.sampled_from(["1", "5", "1000", "0", "-1", "1e3", "x", "99999999999999999999"]),
       aspect=st.one_of(st.none(), hostile_text), after=hostile_text)
def test_generated_filters_k_aspects_and_cursors_are_a_4xx_or_served(server, raw, k, aspect, after):
    parts = [("image", IMAGE, "q.png"), ("filter", wire(raw), None), ("k", k.encode(), None)]
    if aspect is not None:
        parts.append(("aspect", wire(aspect), None))
    body, content_type = multipart(parts)
    response = server.post("/search", content=body, headers={"Content-Type": content_type})
    if response.status_code != 200:
        assert_error(response)
    else:
        where = json.loads(raw) if raw else {}
        for hit in response.json()["results"]:
            assert all(hit["metadata"].get(key) == value for key, value in where.items())
    page = server.get("/items", params={"after": wire(after).decode("utf-8", "replace"), "limit": 3})
    assert page.status_code == 200 or assert_error(page)


# docs/api.md: the error table ------------------------------------------------------------------------

def test_the_api_error_table_lists_every_error_code_a_client_can_get():
    # Where codes are made: ApiError(status, "code"), ImageError("code"), the raw JSON errors of the
    # middlewares and the HTTP protocol, the status-to-code map, and codes chosen by a variable.
    made = re.compile(r'(?:ApiError\(\s*\d+,|ImageError\(|error_body\(|_reject\([^,()]+,\s*\d+,|'
                      r'_send_error\([^,()]+,[^,()]+,\s*\d+,|\bsend_error\([^,()]+,\s*\d+,|_refuse\(\s*\d+,)\s*"([a-z_]+)"'
                      r'|\b\d{3}: "([a-z_]+)"|"([a-z_]+_too_large)"|code: str = "([a-z_]+)"|code="([a-z_]+)"'
                      r'|codes\.get\([^,]+, "([a-z_]+)"\)')
    codes = set()
    for path in [*(REPO / "service").rglob("*.py"), REPO / "contract" / "images.py"]:
        for groups in made.findall(path.read_text()):
            codes.update(g for g in groups if g)
    # The README links the error table on docs/api.md (the README is a front door of 150 lines).
    api_page = (REPO / "docs" / "api.md").read_text()
    table = api_page[api_page.index("| code |"):].split("\n\n")[0]
    documented = {code for row in table.splitlines()[2:] for code in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert {"invalid_request", "corrupt_image", "unsupported_image", "internal_error", "cross_origin",
            "header_timeout", "metadata_too_large", "invalid_metadata", "http_error", "host_not_allowed",
            "invalid_content_length", "too_much_decoding"} <= codes
    assert codes <= documented, f"codes missing from docs/api.md's error table: {sorted(codes - documented)}"


def test_readme_says_what_an_empty_api_key_means():
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `LIKENESS_API_KEY` |"))
    assert "empty" in row


@pytest.mark.parametrize("model", ["\x00", "models/\x00default.onnx", "~no-such-user-here/x.onnx"])
def test_a_migration_to_a_path_that_cannot_be_a_file_is_a_422(client, model):
    # The fuzz test found the NUL byte: Path.resolve raised ValueError, a 500.
    reply = client.post("/index/migration", json={"model": model})
    assert reply.status_code == 422 and reply.json()["code"] == "invalid_model", reply.text
    assert client.get("/index/migration").status_code == 404
