"""The milvus backend's collections, keys and connection helpers (service/index_store/milvus.py
describes the fields)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

from service.settings import is_server_uri

MAX_VECTOR_FIELDS = 4  # Milvus 2.5's default proxy.maxVectorFieldNum
MAX_THUMBNAIL_CHARS = 65_535  # Milvus's VARCHAR limit
CALL_TIMEOUT_S = 30.0  # pymilvus retries some failures for minutes without one
CONNECT_TIMEOUT_S = 10.0


def filter_key(field: str, value: Any) -> str:
    return hashlib.sha256(json.dumps([field, value], sort_keys=True).encode()).hexdigest()[:32]


def pk_of(item_id: str) -> str:
    # surrogatepass: an id no write accepts (a lone surrogate, refused by service/item_fields.py) is
    # still a key to look up, one that finds nothing, as on the embedded backend.
    return item_id.encode("utf-8", "surrogatepass").hex()


def id_of(pk: str) -> str:
    return bytes.fromhex(pk).decode("utf-8")



def drop_collections(uri: str, collection: str, token: str = "") -> None:
    """Drop a collection and its identity companion (a generation no longer served)."""
    from pymilvus import MilvusClient

    if not is_server_uri(uri):
        ensure_home_for_milvus_lite()
    client = MilvusClient(uri, token=token, timeout=CONNECT_TIMEOUT_S)
    try:
        for name in (collection, f"{collection}_identity"):
            if client.has_collection(name, timeout=CALL_TIMEOUT_S):
                client.drop_collection(name, timeout=CALL_TIMEOUT_S)
    finally:
        client.close()


def ensure_home_for_milvus_lite() -> None:
    """Milvus Lite's engine aborts at start ("Open local milvus failed", or "basic_string:
    construction from null" in server mode) when HOME is unset, as it is for some service managers
    and containers run as an arbitrary user; give it the temp folder then."""
    if not os.environ.get("HOME"):
        os.environ["HOME"] = tempfile.gettempdir()




def read_identity(client, name: str, identity: dict[str, Any], model: str) -> dict[str, Any]:
    """The identity companion's rows ({"identity": ..., "model": ...}), written on first use."""
    from pymilvus import DataType, MilvusClient

    if not client.has_collection(name, timeout=CALL_TIMEOUT_S):
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", DataType.VARCHAR, max_length=65_535)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field
        index = client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong",
                                 timeout=CALL_TIMEOUT_S)
    rows = {row["key"]: json.loads(row["value"]) for row in client.query(
        name, filter='key in ["identity", "model"]', output_fields=["key", "value"], timeout=CALL_TIMEOUT_S)}
    if "identity" not in rows:
        client.upsert(name, [{"key": "identity", "value": json.dumps(identity), "unused": [0.0, 0.0]},
                             {"key": "model", "value": model, "unused": [0.0, 0.0]}], timeout=CALL_TIMEOUT_S)
        rows = {"identity": identity, "model": json.loads(model)}
    return rows


def create_items_collection(client, name: str, vector_fields: list[str], dim: int) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=65_535)
    for field in vector_fields:
        schema.add_field(field, DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("meta", DataType.JSON)
    schema.add_field("filter_keys", DataType.JSON)
    schema.add_field("thumbnail", DataType.VARCHAR, max_length=MAX_THUMBNAIL_CHARS)
    schema.add_field("created", DataType.DOUBLE)
    schema.add_field("updated", DataType.DOUBLE)
    schema.add_field("model", DataType.VARCHAR, max_length=4096)
    index = client.prepare_index_params()
    for field in vector_fields:
        index.add_index(field, index_type="AUTOINDEX", metric_type="IP")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong",
                             timeout=CALL_TIMEOUT_S)
