"""Cards are rendered from the spec's typed records: every shipped file's card, from its spec alone."""

from pathlib import Path

import onnx
import pytest

from contract import ModelSpec
from training.cards import render_model_card

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.glob("*.onnx")))
def test_each_shipped_spec_renders_its_card(name):
    meta = {p.key: p.value for p in onnx.load(str(MODELS / name), load_external_data=False).metadata_props}
    spec = ModelSpec.from_metadata(meta)
    card = render_model_card(spec, f"models/{name}")
    test, near = spec.metrics.test, spec.metrics.test.near_duplicates
    assert card.startswith(f"# {spec.name} {spec.version}\n")
    assert f"| Precision@1 (leave-one-out) | {test.precision_at_1:.4f} |" in card
    assert f"| TAR @ FAR=1e-3 | {test.tar_at_far_1e3:.4f} |" in card
    assert f"| | **worst** ({near.worst_edit}) | **{near.worst_recall_at_1:.4f}** | |" in card
    assert spec.training.train_command in card and f"python -m training evaluate models/{name}" in card
    if spec.training.pixel_pca:
        assert f"first {spec.training.pixel_pca.dims} principal components" in card
    if spec.metrics.open_set_recipe:
        assert "## Open-set numbers of this recipe" in card
    if spec.metrics.export.quantization:
        assert "- Quantized: int8 QDQ" in card
    assert ("## Task-specific results" in card) == bool(spec.metrics.task_results)


def test_a_colour_layout_is_named_on_the_card():
    """``export --pixel-side``: the card says the pixel part is a layout of block means, and why."""
    from contract.records import PixelPca

    meta = {p.key: p.value for p in onnx.load(str(MODELS / "photo.onnx"), load_external_data=False).metadata_props}
    spec = ModelSpec.from_metadata(meta)
    layout = PixelPca(dims=32, share=0.3, side=8, fitted_on="train", images=2400)
    card = render_model_card(spec.model_copy(update={"training": spec.training.model_copy(update={"pixel_pca": layout})}),
                             "models/photo.onnx")
    assert ("the last 32 dimensions are the image's 8x8 block means (a colour layout) projected on the first 32 "
            "principal components of 2400 training images") in card
    assert "cosine = 0.70 x the learned embedding's + 0.30 x the pixel part's. A blurred copy keeps" in card
