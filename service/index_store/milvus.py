"""The milvus backend: the index in a Milvus collection, through pymilvus's ``MilvusClient``.

``uri`` is a file path (Milvus Lite: the real Milvus engine embedded in this process, one process
per file) or ``http://host:port`` (Milvus Standalone or Distributed, or Milvus Lite's own server
mode: any number of API workers share it).

One collection per index (LIKENESS_MILVUS_COLLECTION), strong consistency, so a write through
one worker is seen by the next read through any other. Fields:

- ``pk``: the item id's UTF-8 bytes in hex. Milvus Lite builds an expression from the primary key
  on upsert and fails on quotes or non-ASCII text; hex never needs quoting and sorts like the
  id's bytes, so the id cursor of :meth:`MilvusStore.list` pages in the same order as SQLite's.
- ``v0`` .. ``vN``: one FLOAT_VECTOR field per space (the overall embedding, then each aspect),
  inner product on L2-normalised vectors (= cosine). Milvus 2.5 allows 4 vector fields per
  collection by default (``proxy.maxVectorFieldNum``): a model with more than 3 aspects is refused
  at open with that limit named.
- ``meta``: the metadata as a JSON field, as returned.
- ``filter_keys``: a JSON field ``{"all": [...]}``, one 32-hex-digit hash per (field, JSON value)
  of the metadata; a ``/search`` filter becomes ``json_contains_all(filter_keys["all"], [...])``.
  Equality on the JSON text, as the embedded backend matches: 3, 3.0, "3" and true differ, and
  null matches null. No user text ever enters an expression. (Not an ARRAY field: Milvus Lite
  2.5.1 fails every read of an empty collection that has one, "Unsupported data type: 0".)
- ``thumbnail``: the PNG thumbnail, base64, up to 65,535 characters (about 48 kB of PNG: a 128 px
  thumbnail of a photo is 5-30 kB). A larger one is dropped with a log line; the item is stored
  without it, as for an image Pillow cannot show.
- ``created``, ``updated`` (seconds), ``model`` (the JSON name and version that embedded the item).

The model identity (dim and spaces, and the first model) is kept in a companion collection
``<collection>_identity``: Milvus Lite does not keep a collection's description.

Durability: a 201 rests on Milvus's write-ahead log: an upsert returns once Milvus has written it
to its WAL (the message queue of Standalone/Distributed; Milvus Lite's local files).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import numpy as np

from service.index_store.base import IndexStore
from service.index_store.items import (
    OVERALL,
    Dismissal,
    Hit,
    IndexMismatch,
    IndexUnavailable,
    NewItem,
    StoredItem,
    check_filter,
    check_new_items,
    model_key,
    stored_item,
)
from service.index_store.milvus_schema import (
    CALL_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    MAX_THUMBNAIL_CHARS,
    MAX_VECTOR_FIELDS,
    create_items_collection,
    drop_collections,
    ensure_home_for_milvus_lite,
    filter_key,
    id_of,
    pk_of,
    read_identity,
)
from service.settings import is_server_uri

log = logging.getLogger("likeness.index")

class MilvusStore(IndexStore):
    backend = "milvus"
    durability = "Milvus's write-ahead log: the upsert returns once Milvus has logged it"

    def __init__(self, uri: str, collection: str, dim: int, aspects: list[str], model_identity: dict[str, Any],
                 token: str = "") -> None:
        self.uri = uri
        self.collection = collection
        self.dim = dim
        self.spaces = [OVERALL, *aspects]
        self._fields = {space: f"v{s}" for s, space in enumerate(self.spaces)}
        self._model_key = model_key(model_identity)
        self._token = token
        self._client = None
        self.load_seconds = 0.0
        self.replayed_changes = 0

    # lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        if len(self.spaces) > MAX_VECTOR_FIELDS:
            raise IndexUnavailable(
                f"the model has {len(self.spaces) - 1} aspects: {len(self.spaces)} vector fields, and Milvus allows "
                f"{MAX_VECTOR_FIELDS} per collection by default (proxy.maxVectorFieldNum); use the embedded backend "
                "(LIKENESS_INDEX_BACKEND=embedded) or a model with at most 3 aspects")
        started = time.perf_counter()
        from pymilvus import MilvusClient, MilvusException

        if not is_server_uri(self.uri):
            ensure_home_for_milvus_lite()

        try:
            self._client = MilvusClient(self.uri, token=self._token, timeout=CONNECT_TIMEOUT_S)
        except MilvusException as exc:
            raise IndexUnavailable(self._unreachable(exc)) from None
        except Exception as exc:  # noqa: BLE001 - Milvus Lite reports a file it cannot open in many ways
            raise IndexUnavailable(self._unreachable(exc)) from None
        self._call(self._check_identity)
        self._call(self._ensure_collection)
        self.load_seconds = time.perf_counter() - started
        log.info("index: Milvus collection %s at %s, %d items, %d space(s), opened in %.2fs", self.collection,
                 self._where(), self.count(), len(self.spaces), self.load_seconds)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def drop(self) -> None:
        """Drop the collection and its identity companion, then close."""
        for name in (self.collection, self._identity_collection()):
            if self._call(self._client.has_collection, name, timeout=CALL_TIMEOUT_S):
                self._call(self._client.drop_collection, name, timeout=CALL_TIMEOUT_S)
        self.close()

    def _where(self) -> str:
        return self.uri if is_server_uri(self.uri) else f"{self.uri} (Milvus Lite)"

    def _unreachable(self, exc: BaseException) -> str:
        text = str(getattr(exc, "message", "") or exc).strip()
        first_line = text.splitlines()[0] if text else type(exc).__name__
        hint = ("is Milvus running there, and is LIKENESS_MILVUS_URI its address?" if is_server_uri(self.uri) else
                "a Milvus Lite file opens in one process only: is another service using it? For several "
                "processes, serve it (python -m service.milvus_lite_server FILE) or run a Milvus server, and set "
                "LIKENESS_MILVUS_URI to its http:// address")
        return f"cannot open Milvus at {self._where()} ({first_line}); {hint}"

    def _call(self, fn, *args, **kwargs):
        """Run a Milvus call; its failures become IndexUnavailable (a 503 at the API), never a 500."""
        from pymilvus import MilvusException

        if self._client is None:
            raise RuntimeError("index store is closed")
        try:
            return fn(*args, **kwargs)
        except MilvusException as exc:
            raise IndexUnavailable(f"Milvus at {self._where()} failed: {exc.message}") from None

    def _identity_collection(self) -> str:
        return f"{self.collection}_identity"

    def _check_identity(self) -> None:
        """Refuse a collection built for vectors of another shape; warn for another model of the same shape."""
        identity = {"dim": self.dim, "spaces": self.spaces}
        rows = read_identity(self._client, self._identity_collection(), identity, self._model_key)
        stored = rows["identity"]
        if stored != identity:
            raise IndexMismatch(
                f"Milvus collection {self.collection} at {self._where()} holds {stored['dim']}-d vectors for spaces "
                f"{stored['spaces']}, but the model gives {self.dim}-d vectors for {self.spaces}; use another "
                "LIKENESS_MILVUS_COLLECTION, or likeness index migrate")
        first = model_key(rows["model"]) if "model" in rows else self._model_key
        if first != self._model_key:
            self.other_models = [first]
            log.warning("Milvus collection %s was created by model %s; serving %s: scores mix two models until the "
                        "items are re-indexed (likeness index migrate)", self.collection, first, self._model_key)

    def _ensure_collection(self) -> None:
        if self._client.has_collection(self.collection, timeout=CALL_TIMEOUT_S):
            self._client.load_collection(self.collection, timeout=CALL_TIMEOUT_S)
            return
        create_items_collection(self._client, self.collection, list(self._fields.values()), self.dim)

    # writes ----------------------------------------------------------------------------------
    def upsert(self, items: list[NewItem]) -> list[str]:
        if not items:
            return []
        check_new_items(items, (len(self.spaces), self.dim))
        pks = [pk_of(item.id) for item in items]
        created = {row["pk"]: row["created"] for row in self._call(
            self._client.get, self.collection, ids=pks, output_fields=["created"], timeout=CALL_TIMEOUT_S)}
        now = time.time()
        rows = []
        for item, pk in zip(items, pks):
            vectors = np.ascontiguousarray(item.vectors, dtype=np.float32)
            thumbnail = base64.b64encode(item.thumbnail).decode("ascii") if item.thumbnail else ""
            if len(thumbnail) > MAX_THUMBNAIL_CHARS:
                log.warning("item %r: its thumbnail (%d bytes of PNG) is over what a Milvus VARCHAR holds; "
                            "stored without one", item.id, len(item.thumbnail))
                thumbnail = ""
            rows.append({"pk": pk, **{field: vectors[s].tolist() for s, field in enumerate(self._fields.values())},
                         "meta": item.metadata, "thumbnail": thumbnail,
                         "filter_keys": {"all": [filter_key(k, v) for k, v in item.metadata.items()
                                                 if not isinstance(v, (dict, list))]},
                         "created": created.get(pk, now), "updated": now, "model": self._model_key})
        self._call(self._client.upsert, self.collection, rows, timeout=CALL_TIMEOUT_S)
        return [item.id for item in items]

    def delete(self, item_id: str) -> bool:
        pk = pk_of(item_id)
        if not self._call(self._client.get, self.collection, ids=[pk], output_fields=["pk"], timeout=CALL_TIMEOUT_S):
            return False
        self._call(self._client.delete, self.collection, ids=[pk], timeout=CALL_TIMEOUT_S)
        return True

    def dismiss(self, dismissal: Dismissal) -> None:
        # Beside the collection's identity, in its key-value companion (keys: 64 hex characters).
        self._call(self._client.upsert, self._identity_collection(),
                   [{"key": dismissal.key, "value": dismissal.to_json(), "unused": [0.0, 0.0]}],
                   timeout=CALL_TIMEOUT_S)

    def dismissals(self) -> list[Dismissal]:
        rows = self._call(self._client.query, self._identity_collection(), filter='key not in ["identity", "model"]',
                          output_fields=["value"], timeout=CALL_TIMEOUT_S)
        return [Dismissal.from_json(row["value"]) for row in rows]

    # reads -----------------------------------------------------------------------------------
    def _item(self, row: dict[str, Any]) -> StoredItem:
        return stored_item(id_of(row["pk"]), 0, json.dumps(row["meta"]), row["created"], row["updated"])

    def get(self, item_id: str) -> StoredItem | None:
        rows = self._call(self._client.get, self.collection, ids=[pk_of(item_id)],
                          output_fields=["pk", "meta", "created", "updated"], timeout=CALL_TIMEOUT_S)
        return self._item(rows[0]) if rows else None

    def thumbnail(self, item_id: str) -> bytes | None:
        rows = self._call(self._client.get, self.collection, ids=[pk_of(item_id)], output_fields=["thumbnail"],
                          timeout=CALL_TIMEOUT_S)
        if not rows:
            raise KeyError(item_id)
        return base64.b64decode(rows[0]["thumbnail"]) if rows[0]["thumbnail"] else None

    def vector(self, item_id: str, space: str = OVERALL) -> np.ndarray | None:
        if space not in self.spaces:
            raise KeyError(space)
        field = self._fields[space]
        rows = self._call(self._client.get, self.collection, ids=[pk_of(item_id)], output_fields=[field],
                          timeout=CALL_TIMEOUT_S)
        return np.asarray(rows[0][field], dtype=np.float32) if rows else None

    def list(self, after: str | None, limit: int) -> list[StoredItem]:
        # A query with a limit answers the smallest primary keys that pass (what Milvus's own query
        # iterator pages by); sorted here too, as the order of the reply is not promised.
        rows = self._call(self._client.query, self.collection, filter=f'pk > "{pk_of(after or "")}"', limit=limit,
                          output_fields=["pk", "meta", "created", "updated"], timeout=CALL_TIMEOUT_S)
        return [self._item(row) for row in sorted(rows, key=lambda row: row["pk"])]

    def count(self) -> int:
        rows = self._call(self._client.query, self.collection, filter="", output_fields=["count(*)"],
                          timeout=CALL_TIMEOUT_S)
        return int(rows[0]["count(*)"])

    def search(self, query: np.ndarray, k: int, space: str = OVERALL,
               where: dict[str, Any] | None = None, with_vectors: bool = False) -> list[Hit]:
        if space not in self.spaces:
            raise KeyError(space)
        expression = ""
        if where:
            check_filter(where)
            expression = 'json_contains_all(filter_keys["all"], [{}])'.format(
                ", ".join(f'"{filter_key(key, value)}"' for key, value in where.items()))
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        result = self._call(self._client.search, self.collection, [query.tolist()], anns_field=self._fields[space],
                            limit=k, filter=expression,
                            output_fields=["meta", self._fields[space]] if with_vectors else ["meta"],
                            search_params={"metric_type": "IP"}, timeout=CALL_TIMEOUT_S)
        hits = []
        for hit in result[0]:
            item = stored_item(id_of(hit["id"]), 0, json.dumps(hit["entity"]["meta"]), 0.0, 0.0)
            vector = np.asarray(hit["entity"][self._fields[space]], dtype=np.float32) if with_vectors else None
            hits.append(Hit(item.id, float(hit["distance"]), item.metadata, item.problem, vector))
        return hits

    def stats(self) -> dict[str, Any]:
        items = self.count()
        return {"backend": self.backend, "items": items, "type": "milvus", "dim": self.dim,
                "spaces": {space: items for space in self.spaces},
                "milvus": {"uri": self.uri if not is_server_uri(self.uri) else self.uri.split("@")[-1],
                           "collection": self.collection}}


__all__ = ["MAX_THUMBNAIL_CHARS", "MilvusStore", "drop_collections", "ensure_home_for_milvus_lite", "filter_key"]
