"""Index management: POST /items (upsert), GET and DELETE /items/{id}, GET /items/{id}/thumbnail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from service.api.deps import (
    ServiceState,
    check_id,
    get_state,
    parse_metadata,
    prepare_bytes,
    read_uploads,
)
from service.api.errors import ApiError
from service.api.forms import Utf8FormRoute
from service.api.schemas import Deleted, ErrorResponse, ItemPage, ItemResponse, ItemsAdded
from service.index_store import NewItem, StoredItem
from service.ingest import item_vectors
from service.security import require_write_key

router = APIRouter(tags=["items"], route_class=Utf8FormRoute)
ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 404, 413, 422, 503)}


@router.post("/items", status_code=201, response_model=ItemsAdded, responses=ERRORS,
             dependencies=[Depends(require_write_key)])
async def add_items(
    image: Annotated[list[UploadFile], File(description="one or more images")],
    id: Annotated[list[str], Form(description="one id per image, in the same order")],
    metadata: Annotated[list[str] | None, Form(description="optional JSON object per image, in the same order")] = None,
    state: ServiceState = Depends(get_state),
) -> ItemsAdded:
    """Add or replace items. Answers 201 only once every item is durable and searchable: fsynced by
    SQLite (the embedded index) or written to Milvus's write-ahead log (the milvus index)."""
    settings = state.settings
    if len(id) != len(image):
        raise ApiError(422, "ids_images_mismatch", f"{len(image)} images but {len(id)} ids; send one id per image",
                       "id")
    metadata = metadata or []
    if metadata and len(metadata) != len(image):
        raise ApiError(422, "metadata_images_mismatch",
                       f"{len(image)} images but {len(metadata)} metadata fields; send none or one per image", "metadata")
    ids = [check_id(item_id, f"id[{i}]", settings.max_id_length) for i, item_id in enumerate(id)]
    if len(set(ids)) != len(ids):
        raise ApiError(422, "duplicate_id", "the same id appears twice in one request", "id")
    metas = [parse_metadata(m, f"metadata[{i}]", settings.max_metadata_bytes) for i, m in enumerate(metadata)]
    uploads = await read_uploads([(f"image[{i}]", f) for i, f in enumerate(image)], state)
    prepared = await prepare_bytes(state, uploads, thumbnails=True)
    out = await state.engine.embed([p.array for p in prepared])
    items = [
        NewItem(item_id, item_vectors(out, i), metas[i] if metas else {}, prepared[i].thumbnail)
        for i, item_id in enumerate(ids)
    ]
    stored = await state.index.upsert(items, [data for _, data in uploads] if settings.keep_originals else None)
    return ItemsAdded(added=len(stored), ids=stored)


@router.get("/items", response_model=ItemPage, responses=ERRORS)
async def list_items(
    after: Annotated[str | None, Query(description="cursor: the last id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="items per page")] = 100,
    state: ServiceState = Depends(get_state),
) -> ItemPage:
    """Indexed items in id order, a page at a time; pass ``next`` back as ``after`` for the next page."""
    items = await state.index.list(after, limit)
    return ItemPage(items=[item_response(i) for i in items],
                    next=items[-1].id if len(items) == limit else None)


@router.get("/items/{item_id:path}/thumbnail", responses=ERRORS, response_class=Response)
async def item_thumbnail(item_id: str, state: ServiceState = Depends(get_state)) -> Response:
    """A PNG thumbnail (longest side 128 px) of the image the item was added with."""
    try:
        data = await state.index.thumbnail(item_id)
    except KeyError:
        raise ApiError(404, "not_found", f"no item with id {item_id!r}", "item_id") from None
    if data is None:
        raise ApiError(404, "no_thumbnail", f"item {item_id!r} has no thumbnail", "item_id")
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


@router.get("/items/{item_id:path}/original", responses=ERRORS, response_class=Response)
async def item_original(item_id: str, state: ServiceState = Depends(get_state)) -> Response:
    """The image file the item was added with, byte for byte (kept unless LIKENESS_KEEP_ORIGINALS is off)."""
    try:
        data = await state.index.original(item_id)
    except KeyError:
        raise ApiError(404, "not_found", f"no item with id {item_id!r}", "item_id") from None
    if data is None:
        raise ApiError(404, "no_original", f"item {item_id!r} was added without keeping its image "
                       "(LIKENESS_KEEP_ORIGINALS was off, or by a version before 4.0)", "item_id")
    return Response(data, media_type=media_type(data), headers={"Cache-Control": "private, max-age=60"})


def media_type(data: bytes) -> str:
    """The content type of an accepted image file, from its first bytes."""
    signatures = [(b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                  (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff")]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in signatures if data.startswith(magic)), "application/octet-stream")


@router.get("/items/{item_id:path}", response_model=ItemResponse, responses=ERRORS)
async def get_item(item_id: str, state: ServiceState = Depends(get_state)) -> ItemResponse:
    item = await state.index.get(item_id)
    if item is None:
        raise ApiError(404, "not_found", f"no item with id {item_id!r}", "item_id")
    return item_response(item)


def item_response(item: StoredItem) -> ItemResponse:
    """A stored item as returned; one the store could not read back comes with its error, so a
    page holding it still answers."""
    return ItemResponse(id=item.id, metadata=item.metadata, created=item.created, updated=item.updated,
                        error=item.problem)


@router.delete("/items/{item_id:path}", response_model=Deleted, responses=ERRORS,
               dependencies=[Depends(require_write_key)])
async def delete_item(item_id: str, state: ServiceState = Depends(get_state)) -> Deleted:
    if not await state.index.delete(item_id):
        raise ApiError(404, "not_found", f"no item with id {item_id!r}", "item_id")
    return Deleted(deleted=item_id)
