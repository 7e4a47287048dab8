"""Near-duplicate retrieval: does a lightly edited copy of an image find its original first?

For a fixed, seeded sample of gallery images, each edit below is applied to the original as a user
would apply it (in Pillow, then saved as PNG or JPEG bytes). The edited file is then decoded and
prepared exactly as the service prepares an upload (:func:`contract.decode_image` and
:func:`contract.prepare_image` with the model's input spec), embedded, and searched against the
whole gallery. R@1 is the fraction of queries whose original scores strictly above every other
gallery item; a tie is a miss (a hash that cannot tell two items apart has not found the original),
and gallery items pixel-identical to the original count as the original.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from contract import InputSpec, decode_image, prepare_image
from training.evaluation.edits import LIGHT_EDITS, MIRROR, USER_EDITS, Edit
from training.evaluation.embed import Embedder, embed_all

QUERY_SEED = 404

# Every measured edit, by family: the light edits the project has always measured, the edits users
# make (issue #29) and the mirror, which likeness counts as the same image (training/evaluation/edits.py).
FAMILIES: dict[str, dict[str, Edit]] = {"light": LIGHT_EDITS, **USER_EDITS, "mirror": MIRROR}
EDITS: dict[str, Edit] = {name: edit for family in FAMILIES.values() for name, edit in family.items()}


def families_of(per_edit: dict[str, float]) -> dict[str, float]:
    """The worst R@1 of each family among the measured edits (families with none measured are left out)."""
    worst = {}
    for family, edits in FAMILIES.items():
        measured = [per_edit[name] for name in edits if name in per_edit]
        if measured:
            worst[family] = min(measured)
    return worst


def edited_queries(images: np.ndarray, spec: InputSpec, edit: Edit) -> np.ndarray:
    """Apply ``edit`` to each uint8 [H, W, C] image, then prepare the resulting file as the service does."""
    prepared = []
    for array in images:
        original = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        data = edit(original)
        prepared.append(prepare_image(decode_image(data, max_pixels=50_000_000), spec))
    return np.stack(prepared)


def query_sample(gallery_size: int, queries: int, seed: int = QUERY_SEED) -> np.ndarray:
    """The fixed, seeded gallery positions used as originals (sorted, without repeats)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(gallery_size, min(queries, gallery_size), replace=False))


def recall_at_1(query_embeddings: np.ndarray, gallery_embeddings: np.ndarray, originals: np.ndarray,
                same_as_original: np.ndarray) -> float:
    """Fraction of queries whose original scores strictly above every gallery item that is not it.

    ``same_as_original[q, g]`` marks gallery items that count as query q's original (itself and exact
    pixel copies of it), so duplicates in the gallery do not turn a hit into a tie.
    """
    scores = query_embeddings @ gallery_embeddings.T
    own = scores[np.arange(len(originals)), originals]
    others = np.where(same_as_original, -np.inf, scores).max(axis=1)
    return float(np.mean(own > others))


def exact_copies(gallery: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """bool [queries, gallery]: gallery items pixel-identical to each original (the original included)."""
    flat = gallery.reshape(len(gallery), -1)
    keys = {}
    for g, row in enumerate(flat):
        keys.setdefault(row.tobytes(), []).append(g)
    same = np.zeros((len(originals), len(gallery)), dtype=bool)
    for q, o in enumerate(originals):
        same[q, keys[flat[o].tobytes()]] = True
    return same


@dataclass
class EditedCopies:
    """Seeded originals of a gallery and the embeddings of each edit's copies of them: made once and
    read by both the ranking (:func:`near_duplicate_metrics`) and the decision
    (training.evaluation.same_image), since editing and embedding them is most of either's cost."""
    originals: np.ndarray  # gallery positions, sorted
    embeddings: dict[str, np.ndarray]  # edit name -> [originals, D] copy embeddings


def embed_copies(embedder: Embedder, gallery: np.ndarray, spec: InputSpec, queries: int,
                 edits: dict[str, Edit] | None = None, batch_size: int = 1024, seed: int = QUERY_SEED) -> EditedCopies:
    """Edit ``queries`` seeded originals of ``gallery`` with each edit, prepare them as the service
    does, and embed them."""
    originals = query_sample(len(gallery), queries, seed)
    embedded = {name: embed_all(embedder, edited_queries(gallery[originals], spec, edit), batch_size)[0]
                for name, edit in (edits or EDITS).items()}
    return EditedCopies(originals, embedded)


def near_duplicate_metrics(embedder: Embedder, gallery: np.ndarray, spec: InputSpec, queries: int = 1000,
                           edits: dict[str, Edit] | None = None, batch_size: int = 1024,
                           gallery_embeddings: np.ndarray | None = None, seed: int = QUERY_SEED,
                           copies: EditedCopies | None = None) -> dict:
    """Near-duplicate R@1 per edit, their mean and the worst edit.

    ``gallery`` is uint8 [N, H, W, C] in the model's input layout (the prepared originals);
    ``queries`` originals are drawn from it with ``seed``. Pass ``gallery_embeddings`` and ``copies``
    when they are already computed. Embeddings are compared by dot product, so they must be L2-normalised.
    """
    if gallery_embeddings is None:
        gallery_embeddings, _ = embed_all(embedder, gallery, batch_size)
    if copies is None:
        copies = embed_copies(embedder, gallery, spec, queries, edits, batch_size, seed)
    originals = copies.originals
    same = exact_copies(gallery, originals)
    per_edit = {name: round(recall_at_1(embedded, gallery_embeddings, originals, same), 6)
                for name, embedded in copies.embeddings.items()}
    worst = min(per_edit, key=per_edit.get)
    return {
        "recall_at_1": per_edit,
        "family_worst_recall_at_1": families_of(per_edit),
        "mean_recall_at_1": round(float(np.mean(list(per_edit.values()))), 6),
        "worst_edit": worst,
        "worst_recall_at_1": per_edit[worst],
        "queries": int(len(originals)),
        "gallery": int(len(gallery)),
    }


def validation_near_duplicates(embedder: Embedder, images: np.ndarray, embeddings: np.ndarray,
                               queries: int, spec: InputSpec) -> dict[str, float]:
    """The per-epoch validation numbers: mean and worst-edit R@1 of ``queries`` edited images,
    prepared with the model's input ``spec``."""
    if not queries:
        return {}
    near = near_duplicate_metrics(embedder, images, spec, queries, gallery_embeddings=embeddings)
    return {"val_near_duplicate_r1": near["mean_recall_at_1"], "val_near_duplicate_worst_r1": near["worst_recall_at_1"]}
