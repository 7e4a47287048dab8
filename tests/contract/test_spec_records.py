"""The spec's typed records (contract/records.py): every shipped file reads into them and writes
back the values it holds, older and newer files still load, and a task's own results ride along."""

import json
from pathlib import Path

import onnx
import pytest

from contract import SPEC_METADATA_KEY, ModelSpec

MODELS = Path(__file__).resolve().parents[2] / "models"


def _raw_spec(name: str) -> str:
    model = onnx.load(str(MODELS / name), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}[SPEC_METADATA_KEY]


def _holds(written, original, where="spec") -> None:
    """Every value of ``original`` is in ``written`` unchanged (``written`` may add defaults)."""
    if isinstance(original, dict):
        for key, value in original.items():
            assert key in written, f"{where}.{key} lost"
            _holds(written[key], value, f"{where}.{key}")
    elif isinstance(original, list):
        assert len(written) == len(original), where
        for i, (a, b) in enumerate(zip(written, original)):
            _holds(a, b, f"{where}[{i}]")
    else:
        assert written == original and type(written) is type(original), f"{where}: {original!r} -> {written!r}"


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.glob("*.onnx")))
def test_shipped_specs_read_into_the_records_and_write_back_their_values(name):
    raw = _raw_spec(name)
    spec = ModelSpec.model_validate_json(raw)
    test = spec.metrics.test
    assert 0 < test.precision_at_1 <= 1 and test.items > 0 and spec.metrics.export.onnx_max_abs_diff < 1e-3
    assert test.near_duplicates.worst_recall_at_1 == min(test.near_duplicates.recall_at_1.values())
    assert spec.training.curve and spec.training.curve[-1].epoch >= spec.training.best_epoch
    assert spec.training.data_summary.splits["train"].images > 0
    # The dotted key survives under its own name, in the file and in the service's /model answer.
    _holds(json.loads(spec.to_json()), json.loads(raw))
    assert "tar_at_far_0.001" in spec.model_dump()["metrics"]["test"]


def test_a_task_s_own_results_are_kept_and_named():
    spec = ModelSpec.model_validate_json(_raw_spec("csn.onnx"))
    assert set(spec.metrics.task_results) == {"aspects"}
    assert spec.metrics.task_results["aspects"]["triplet_accuracy"]["category"] > 0.5


def test_older_and_newer_files_load():
    written = json.loads(_raw_spec("default.onnx"))
    # Written before the records had most of their fields: only what the first exports held.
    written["training"] = {"train_command": "python -m training train", "seed": 3}
    written["metrics"] = {"test": {k: written["metrics"]["test"][k] for k in (
        "precision_at_1", "r_precision", "map_at_r", "roc_auc", "eer", "eer_threshold", "tar_at_far_0.001", "items")}}
    old = ModelSpec.model_validate(written)
    assert old.training.seed == 3 and old.training.curve == [] and old.metrics.test.near_duplicates is None
    # Written by a later likeness, with fields this one does not know: kept, not refused.
    written["training"]["wandb_run"] = "abc"
    written["metrics"]["test"]["new_metric"] = 0.5
    newer = ModelSpec.model_validate(written)
    assert json.loads(newer.to_json())["training"]["wandb_run"] == "abc"
    assert newer.metrics.test.model_extra == {"new_metric": 0.5}
    # A wrong type in a known field is still an error, in one clear line.
    written["metrics"]["test"]["items"] = "many"
    with pytest.raises(ValueError, match="items"):
        ModelSpec.model_validate(written)


def test_the_same_image_threshold_follows_the_catalogue_size():
    """near_duplicate_by_items: linear in log(items) between its points, its first below them and its
    last above them; a model without the table answers with near_duplicate at any size."""
    spec = ModelSpec.model_validate_json(_raw_spec("default.onnx"))
    assert spec.same_image_threshold(10) == spec.same_image_threshold() == spec.near_duplicate.threshold
    sized = spec.model_validate({**spec.model_dump(), "near_duplicate_by_items": [
        {"items": 100, "threshold": 0.8}, {"items": 1000, "threshold": 0.9}, {"items": 10_000, "threshold": 0.95}]})
    assert sized.same_image_threshold(5) == sized.same_image_threshold(100) == 0.8
    assert sized.same_image_threshold(316) == pytest.approx(0.85, abs=1e-4)  # halfway in log(items)
    assert sized.same_image_threshold(1000) == 0.9 and sized.same_image_threshold(3162) == pytest.approx(0.925, abs=1e-4)
    assert sized.same_image_threshold(10**6) == 0.95
    assert sized.same_image_threshold() == sized.near_duplicate.threshold  # no size: the spec's own
    for table in ([{"items": 1000, "threshold": 0.9}, {"items": 100, "threshold": 0.8}],
                  [{"items": 100, "threshold": 0.8}, {"items": 100, "threshold": 0.9}]):
        with pytest.raises(ValueError, match="must grow in items"):
            spec.model_validate({**spec.model_dump(), "near_duplicate_by_items": table})
