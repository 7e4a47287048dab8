"""POST /similarity, /search, /search/batch and /embed.

/similarity and /search take multipart uploads or a JSON body (base64 images; /search also a
stored item's id or a raw vector), dispatched on Content-Type (service/api/json_bodies.py);
/search/batch takes JSON only. Every shape ends in the same functions below, so the limits, the
errors and the answers are the same whichever way a request came.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from service.api.deps import (
    ServiceState,
    check_filter,
    check_image_count,
    check_k,
    generation,
    get_state,
    parse_filter,
    prepare,
    prepare_bytes,
    resolve_aspect,
)
from service.api.errors import ApiError
from service.api.forms import Utf8FormRoute
from service.api.json_bodies import JsonBodyRoute, decode_image, json_body_doc, read_json
from service.api.schemas import (
    MODEL,
    BatchSearchRequest,
    BatchSearchResponse,
    EmbedResponse,
    ErrorResponse,
    SearchRequest,
    SearchResponse,
    SimilarityRequest,
    SimilarityResponse,
)
from service.copies import copies_first, same_image_score
from service.index_store import OVERALL
from service.model_runner import Embeddings

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 503)}
# JSON routes first: each matches only a JSON Content-Type; everything else falls through to the
# multipart route on the same path, which documents both shapes (json_body_doc).
json_router = APIRouter(tags=["similarity"], route_class=JsonBodyRoute)
form_router = APIRouter(tags=["similarity"], route_class=Utf8FormRoute)
router = APIRouter(tags=["similarity"])  # the module's routes, JSON routes first (bottom of the file)


# similarity ----------------------------------------------------------------------------------
@form_router.post("/similarity", response_model=SimilarityResponse, responses=ERRORS,
                  openapi_extra=json_body_doc(SimilarityRequest))
async def similarity(
    image_a: Annotated[UploadFile, File(description="first image")],
    image_b: Annotated[UploadFile, File(description="second image")],
    aspect: Annotated[str | None, Form(description="decide on this aspect instead of overall")] = None,
    model: Annotated[str | None, Form(description=MODEL)] = None,
    state: ServiceState = Depends(get_state),
) -> JSONResponse:
    """How alike are two images: cosine, calibrated probability and a decision at the model's threshold.

    Multipart (`image_a`, `image_b` files) or JSON (`{"image_a": "<base64>", "image_b": "<base64>"}`)."""
    state = generation(state, model)
    aspect = resolve_aspect(aspect, state)
    prepared = await prepare(state, [("image_a", image_a), ("image_b", image_b)])
    return answer(await compare(state, await state.engine.embed([p.array for p in prepared]), aspect))


@json_router.post("/similarity", response_model=SimilarityResponse, include_in_schema=False)
async def similarity_json(request: Request, state: ServiceState = Depends(get_state)) -> JSONResponse:
    body = await read_json(request, SimilarityRequest)
    state = generation(state, body.model)
    aspect = resolve_aspect(body.aspect, state)
    uploads = [("image_a", decode_image(body.image_a, "image_a")), ("image_b", decode_image(body.image_b, "image_b"))]
    prepared = await prepare_bytes(state, uploads)
    return answer(await compare(state, await state.engine.embed([p.array for p in prepared]), aspect))


def answer(content: dict[str, Any]) -> JSONResponse:
    """The response, serialised as FastAPI would but without validating it again against the
    response model (the model documents it; the functions below build exactly its fields): for a
    list of hits, that validation cost more CPU than the search."""
    return JSONResponse(content)


async def compare(state: ServiceState, out: Embeddings, aspect: str | None) -> dict[str, Any]:
    """The answer for a pair of embeddings (rows 0 and 1 of ``out``), as a SimilarityResponse's fields.
    "The same image" is decided as /search decides it in this index, at the threshold for its size."""
    spec = state.runner.spec
    aspect_scores: dict[str, float] = {}
    if out.aspects is not None:
        per_aspect = np.einsum("ad,ad->a", out.aspects[0], out.aspects[1])
        aspect_scores = {name: round(float(s), 6) for name, s in zip(spec.aspects, per_aspect)}
    same_image = copy_threshold = None
    if aspect is None:
        score, decision, calibration = float(out.embedding[0] @ out.embedding[1]), spec.decision, spec.calibration
        same_image = same_image_score(spec, out.embedding[0], out.embedding[1])
        copy_threshold = await state.index.same_image_threshold(spec)
    else:
        score = aspect_scores[aspect]
        decision = spec.aspect_decisions.get(aspect, spec.decision)
        calibration = spec.aspect_calibrations.get(aspect, spec.calibration)
    return {"score": round(score, 6), "probability": round(calibration.probability(score), 6),
            "same": score >= decision.threshold, "threshold": decision.threshold,
            "near_duplicate": None if same_image is None else same_image >= copy_threshold,
            "near_duplicate_score": None if same_image is None else round(same_image, 6),
            "near_duplicate_threshold": None if same_image is None else copy_threshold,
            "aspect": aspect, "aspects": aspect_scores, "model": state.model_ref}


# search --------------------------------------------------------------------------------------
@form_router.post("/search", response_model=SearchResponse, responses=ERRORS,
                  openapi_extra=json_body_doc(SearchRequest))
async def search(
    image: Annotated[UploadFile, File(description="query image")],
    k: Annotated[int, Form(description="number of results (1..max_k)")] = 10,
    aspect: Annotated[str | None, Form(description="search this aspect's subspace")] = None,
    filter: Annotated[str | None, Form(description='JSON object: only items whose metadata equals each field, '
                                                   'e.g. {"label": "3"}')] = None,
    min_score: Annotated[float | None, Form(description="drop hits scoring below this cosine", ge=-1.0,
                                            le=1.0)] = None,
    model: Annotated[str | None, Form(description=MODEL)] = None,
    state: ServiceState = Depends(get_state),
) -> JSONResponse:
    """The k most similar indexed items, best first, optionally filtered by metadata equality and a minimum score.

    Multipart (an `image` file) or JSON with exactly one query: `{"image": "<base64>"}`, `{"id": "<indexed id>"}`
    (the stored vector: no upload, no inference) or `{"vector": [...]}` (`embedding_dim` numbers, normalised here)."""
    state = generation(state, model)
    k = check_k(k, state)
    aspect = resolve_aspect(aspect, state)
    where = parse_filter(filter, state)
    prepared = await prepare(state, [("image", image)])
    queries = embedded_queries(state, await state.engine.embed([prepared[0].array]), aspect)
    results, threshold = await find(state, queries, k, aspect, where, min_score)
    return answer({"results": results[0], "near_duplicate_threshold": threshold, "aspect": aspect,
                   "model": state.model_ref})


@json_router.post("/search", response_model=SearchResponse, include_in_schema=False)
async def search_json(request: Request, state: ServiceState = Depends(get_state)) -> JSONResponse:
    body = await read_json(request, SearchRequest)
    given = [name for name in ("image", "id", "vector") if getattr(body, name) is not None]
    if len(given) != 1:
        raise ApiError(422, "invalid_query", "give exactly one of image, id or vector"
                       + (f" (got {' and '.join(given)})" if given else ""), given[1] if given else "image")
    state = generation(state, body.model)
    k = check_k(body.k, state)
    aspect = resolve_aspect(body.aspect, state)
    where = check_filter(body.filter, state)
    space = aspect or OVERALL
    if body.id is not None:
        query = await state.index.vector(body.id, space)
        if query is None:
            raise ApiError(404, "not_found", f"no item with id {body.id!r}", "id")
    elif body.vector is not None:
        query = normalised(body.vector, state.runner.spec.embedding_dim)
    else:
        prepared = await prepare_bytes(state, [("image", decode_image(body.image, "image"))])
        query = embedded_queries(state, await state.engine.embed([prepared[0].array]), aspect)[0]
    results, threshold = await find(state, [query], k, aspect, where, body.min_score)
    return answer({"results": results[0], "near_duplicate_threshold": threshold, "aspect": aspect,
                   "model": state.model_ref})


@router.post("/search/batch", response_model=BatchSearchResponse, responses={**ERRORS, 415: {"model": ErrorResponse}},
                  openapi_extra=json_body_doc(BatchSearchRequest, multipart=False))
async def search_batch(request: Request, state: ServiceState = Depends(get_state)) -> JSONResponse:
    """/search for several images in one request (JSON only): `{"images": ["<base64>", ...], "k": 10}` answers
    one result list per image, in request order. At most `max_images_per_request` images; `filter`, `aspect` and
    `min_score` apply to every image."""
    body = await read_json(request, BatchSearchRequest)
    state = generation(state, body.model)
    check_image_count(len(body.images), "images", state)
    k = check_k(body.k, state)
    aspect = resolve_aspect(body.aspect, state)
    where = check_filter(body.filter, state)
    uploads = [(f"images[{i}]", decode_image(text, f"images[{i}]")) for i, text in enumerate(body.images)]
    prepared = await prepare_bytes(state, uploads)
    queries = embedded_queries(state, await state.engine.embed([p.array for p in prepared]), aspect)
    results, threshold = await find(state, queries, k, aspect, where, body.min_score)
    return answer({"results": results, "near_duplicate_threshold": threshold, "aspect": aspect,
                   "model": state.model_ref})


def embedded_queries(state: ServiceState, out: Embeddings, aspect: str | None) -> list[np.ndarray]:
    """One query vector per embedded image: the overall embedding, or the aspect's."""
    if aspect is None:
        return list(out.embedding)
    return list(out.aspects[:, state.runner.spec.aspects.index(aspect)])


def normalised(vector: list[float], dim: int) -> np.ndarray:
    """A client's query vector, checked (``dim`` finite numbers, not all zero) and L2-normalised."""
    if len(vector) != dim:
        raise ApiError(422, "invalid_vector", f"vector: {len(vector)} numbers, but the model's embedding_dim is {dim}",
                       "vector")
    values = np.asarray(vector, dtype=np.float64)
    largest = float(np.abs(values).max())
    if not np.isfinite(largest):  # the body parser refuses NaN and Infinity; this guards other callers
        raise ApiError(422, "invalid_vector", "vector: every number must be finite", "vector")
    if largest == 0:
        raise ApiError(422, "invalid_vector", "vector: all zeros has no direction to search in", "vector")
    values /= largest  # so the norm cannot overflow
    return (values / np.linalg.norm(values)).astype(np.float32)


async def find(state: ServiceState, queries: list[np.ndarray], k: int, aspect: str | None,
               where: dict[str, Any] | None, min_score: float | None) -> tuple[list[list[dict[str, Any]]], float | None]:
    """Each query's hits, as the response's dicts, and the same-image threshold they were judged at;
    all queries in one trip to a worker thread, so the event loop never waits on a search, a lock or
    the network. Overall searches also say which hits are the same image as the query, and put those
    first (service/copies.py)."""
    spec = state.runner.spec
    threshold = await state.index.same_image_threshold(spec) if aspect is None else None
    found = await state.index.search(queries, k, aspect or OVERALL, where, with_vectors=threshold is not None)
    answers = []
    for query, hits in zip(queries, found):
        hits = [h for h in hits if min_score is None or h.score >= min_score]
        if threshold is not None:
            answers.append([{"id": h.id, "score": round(h.score, 6), "metadata": h.metadata, "error": h.error,
                             "near_duplicate": copy, "near_duplicate_score": round(same, 6)}
                            for h, same, copy in copies_first(spec, query, hits, threshold)])
        else:
            answers.append([{"id": h.id, "score": round(h.score, 6), "metadata": h.metadata, "error": h.error}
                            for h in hits])
    return answers, threshold


# embed ---------------------------------------------------------------------------------------
@form_router.post("/embed", response_model=EmbedResponse, responses=ERRORS)
async def embed(
    image: Annotated[list[UploadFile], File(description="one or more images")],
    state: ServiceState = Depends(get_state),
) -> EmbedResponse:
    """The model's embeddings for one or more images, in request order."""
    prepared = await prepare(state, [(f"image[{i}]", f) for i, f in enumerate(image)])
    out = await state.engine.embed([p.array for p in prepared])
    aspects = None
    if out.aspects is not None:
        names = state.runner.spec.aspects
        aspects = [{name: row[a].tolist() for a, name in enumerate(names)} for row in out.aspects]
    return EmbedResponse(embeddings=out.embedding.tolist(), aspect_embeddings=aspects,
                         dim=int(out.embedding.shape[1]), model=state.model_ref)


router.include_router(json_router)
router.include_router(form_router)
