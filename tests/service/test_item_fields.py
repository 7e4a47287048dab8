"""The rules for ids and metadata (service/item_fields.py): whatever they accept can be returned by
every response serialiser the service uses, exactly as it was sent."""

from __future__ import annotations

import json

import pytest
from fastapi.responses import JSONResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.schemas import ItemPage, ItemResponse
from service.item_fields import MAX_DEPTH, FieldError, id_problem, parse_object, value_problem
from tests.hostile import hostile_text, json_values, raw_json_objects


def returned(metadata: dict) -> dict:
    """The metadata as a client gets it back from GET /items (pydantic, then Starlette's JSON)."""
    page = ItemPage(items=[ItemResponse(id="x", metadata=metadata, created=0.0, updated=0.0)], next=None)
    body = JSONResponse(page.model_dump(mode="json")).body
    return json.loads(body)["items"][0]["metadata"]


@settings(max_examples=600, deadline=None, database=None, derandomize=True)
@given(raw=raw_json_objects())
def test_accepted_metadata_comes_back_exactly_as_sent(raw):
    try:
        value = parse_object(raw)
    except FieldError as exc:
        assert str(exc)
        return
    assert value_problem(value) is None
    assert returned(value) == json.loads(raw)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(value=st.dictionaries(hostile_text, json_values, max_size=4))
def test_the_check_on_values_and_the_parser_agree(value):
    problem = value_problem(value)
    text = json.dumps(value, allow_nan=True)
    if problem is None:
        assert parse_object(text) == value
    else:
        with pytest.raises(FieldError):
            parse_object(text)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(item_id=hostile_text)
def test_accepted_ids_can_be_returned(item_id):
    if id_problem(item_id, 256) is None:
        assert json.loads(JSONResponse({"id": item_id}).body)["id"] == item_id


@pytest.mark.parametrize("raw,message", [
    ("[" * 100_000, "nested more than"),  # never reaches the recursive parser
    ('{"a": ' + "1" * 5000 + "}", "not usable JSON"),  # over Python's 4300-digit int limit
    ('{"a": "\\ud83d"}', "not valid UTF-8"),
    ('{"a": "\udcff"}', "not valid UTF-8"),  # what a non-UTF-8 byte in a form field becomes
    ('{"a": 1e999}', "out of range"),
    ('{"a": -Infinity}', "not a JSON number"),
    ('{"a": {"b": 1, "b": 1}}', "appears twice"),
    ("[]", "must be a JSON object"),
    ('{"a": 1', "not valid JSON"),
])
def test_each_refusal_says_why(raw, message):
    with pytest.raises(FieldError, match=message):
        parse_object(raw)


def test_depth_counts_objects_and_arrays_and_not_brackets_in_text():
    at_limit = '{"a": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    assert parse_object(at_limit)
    with pytest.raises(FieldError):
        parse_object('{"a": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}")
    assert parse_object('{"a": "' + "[{" * 500 + '\\"["}') == {"a": "[{" * 500 + '"['}
