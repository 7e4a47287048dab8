"""A real, tiny training run on real Fashion-MNIST images, then export, evaluation and resume.

One run is shared by the tests in this module (it costs about a minute on 2 cores).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from contract import SPEC_METADATA_KEY, ModelSpec
from tests.conftest import REPO, refused_by_training_cli
from training.config import load_config
from training.data.sources import load_splits
from training.evaluation import retrieval_metrics

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

TINY = [
    "data.train_limit=12000", "data.val_size=2000", "data.test_limit=2000", "optim.epochs=3",
    "optim.batch_size=64", "optim.m_per_class=8", "model.widths=[16, 32, 64]", "model.depth=1",
    "eval.pairs=5000", "optim.threads=2",
    # Each export edits this many originals of test with each of the 39 measured edits (1000 by
    # default: 39,000 images an export; 300 here took a third of a tiny export's 30 s).
    "eval.near_duplicates=100",
    # And each epoch this many of validation (200 by default: 7,800 images, 40% of a tiny epoch).
    "eval.val_near_duplicates=50",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    overrides = [*TINY, f'output_dir="{out}"', 'name="tiny"']
    command = [sys.executable, "-m", "training", "train", "--config", "default", "--no-progress"]
    for item in overrides:
        command += ["--set", item]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, overrides


def raw_pixel_precision_at_1(images: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-NN on raw pixels: cosine and Euclidean, whichever is better."""
    pixels = images.reshape(len(images), -1).astype(np.float32)
    cosine = retrieval_metrics(pixels / np.linalg.norm(pixels, axis=1, keepdims=True), labels)["precision_at_1"]
    # Euclidean neighbours of raw pixels: the same calculator on unnormalised vectors.
    euclid = retrieval_metrics(pixels / 255.0, labels)["precision_at_1"]
    return max(cosine, euclid)


def test_training_beats_raw_pixels_on_the_same_split(tiny_run):
    run_dir, overrides = tiny_run
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    from training.evaluation.task_metrics import evaluate_model

    # A few edited copies: this test is about the class ranking (1,000 originals x 39 edits took 30 s).
    metrics = evaluate_model(run_dir / "best.pt", pairs=5000, near_duplicates=20)
    config = load_config("default", overrides)
    splits = load_splits("fashion-mnist", val_size=config.data.val_size, seed=0,
                         train_limit=config.data.train_limit, test_limit=config.data.test_limit)
    baseline = raw_pixel_precision_at_1(splits.test.images, splits.test.labels)
    assert metrics["test"]["items"] == 2000
    print(f"tiny run P@1 {metrics['test']['precision_at_1']:.4f} vs raw pixels {baseline:.4f}")
    assert metrics["test"]["precision_at_1"] > baseline


def test_export_writes_a_self_describing_model_and_card(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    from training.export import ExportError, export_checkpoint

    result = export_checkpoint(run_dir / "best.pt", tmp_path / "tiny.onnx", name="tiny", version="9.9",
                               notes=["Plain convolutions: NSL's gain was not established (an 'example')."])
    assert result["onnx_max_abs_diff"] < 1e-4
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    spec = ModelSpec.from_metadata({p.key: p.value for p in model.metadata_props})
    assert (spec.name, spec.version, spec.embedding_dim) == ("tiny", "9.9", 128)
    assert spec.input.height == 28 and spec.input.channels == 1
    assert -1 <= spec.decision.threshold <= 1 and "validation" in spec.decision.rule
    assert "validation" in spec.calibration.fitted_on and spec.calibration.a > 0
    assert spec.metrics.test.precision_at_1 == pytest.approx(
        result["metrics"]["test"]["precision_at_1"])
    assert SPEC_METADATA_KEY in {p.key for p in model.metadata_props}
    card = (tmp_path / "tiny.md").read_text()
    assert "python -m training train" in card and "python -m training export" in card
    # The publisher's note: in the spec, on the card, and in the export command the card gives.
    assert spec.training.notes == ["Plain convolutions: NSL's gain was not established (an 'example')."]
    assert "- Note: Plain convolutions: NSL's gain was not established (an 'example')." in card
    assert "--note 'Plain convolutions: NSL'\"'\"'s gain" in spec.training.export_command
    with pytest.raises(ExportError, match="a card note needs some text"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", notes=["  "])
    assert f"{spec.metrics.test.precision_at_1:.4f}" in card
    # Near-duplicate R@1 per edit, and the "same image" threshold fitted on validation edits.
    near = spec.metrics.test.near_duplicates
    assert set(near.recall_at_1) >= {"jpeg q70", "shift 1px", "downscale 0.75x", "crop 8% and resize back"}
    assert near.worst_recall_at_1 == min(near.recall_at_1.values()) <= near.mean_recall_at_1
    assert f"| {near.worst_edit} | {near.worst_recall_at_1:.4f} |" in card
    # Fitted for a false-positive rate against each original's nearest other image (issue #29).
    assert spec.near_duplicate is not None and "validation's originals have their nearest other image" in \
        spec.near_duplicate.rule
    # "The same image" is a stricter bar than "the same kind of thing".
    assert spec.near_duplicate.threshold > spec.decision.threshold
    decision = near.decision
    assert decision.copies_accepted > decision.nearest_others_accepted
    assert decision.nearest_others_accepted <= 0.05  # the validation target is 1%; test may differ a little
    best = json.loads((run_dir / "summary.json").read_text())["best"]
    # With the instance term, selection weighs both jobs: validation MAP@R and near-duplicate R@1.
    assert best["metric"] == "val_map_at_r_and_near_duplicate_r1"
    assert f"Checkpoint kept: epoch {best['epoch']} of the 3-epoch schedule (best {best['metric']} on validation" in card
    # Weights of another epoch than the best (an exported last.pt) are not called the best.
    from training.cards import render_model_card

    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs_trained": 3, "best_epoch": 2})})
    assert ("Checkpoint kept: epoch 3 of the 3-epoch schedule (not the best on validation: "
            f"{best['metric']} peaked at epoch 2)") in render_model_card(spec, "tiny.onnx")
    # The split embedding and the anti-aliased pooling are named, with the weights of the cosine.
    assert ("128-d embedding (the first 64 dimensions learn the kind of thing, the last 64 the image itself; "
            "cosine = 0.70 x the first part's + 0.30 x the second's)") in card and "anti-aliased pooling" in card
    # A hybrid backbone says where its NS layers are.
    spec.training.backbone.update(layer="dynamic-diag", ns_last_stages=1)  # a config snapshot: a plain mapping
    assert "`dynamic-diag` (predictor `plain`) in the last 1 stage(s) only, plain elsewhere" in \
        render_model_card(spec, "tiny.onnx")
    # The evaluation command re-measures the exported file through ONNX Runtime, the same numbers.
    from training.evaluation.task_metrics import evaluate_model

    again = evaluate_model(tmp_path / "tiny.onnx", pairs=5000, near_duplicates=300)
    assert again["test"]["precision_at_1"] == pytest.approx(spec.metrics.test.precision_at_1, abs=1e-6)
    # It can edit more originals than the card's (here 100), up to the whole split, for a tighter estimate.
    assert spec.metrics.test.near_duplicates.queries == 100
    whole = again["test"]["near_duplicates"]
    assert (whole["queries"], whole["gallery"]) == (300, 2000)
    assert whole["worst_recall_at_1"] == min(whole["recall_at_1"].values()) <= whole["mean_recall_at_1"]


def test_the_export_can_serve_another_instance_share(tiny_run, tmp_path):
    """--instance-share reweighs the split model's halves in the graph; the card names both shares."""
    run_dir, overrides = tiny_run
    from training.evaluation import onnx_embedder
    from training.export import ExportError, export_checkpoint
    from training.tasks import load_task

    export_checkpoint(run_dir / "best.pt", tmp_path / "base.onnx", pairs=2000)
    export_checkpoint(run_dir / "best.pt", tmp_path / "half.onnx", pairs=2000, instance_share=0.5)
    images = load_task(load_config("default", overrides)).splits.test.images[:20]
    base, half = onnx_embedder(tmp_path / "base.onnx")(images)[0], onnx_embedder(tmp_path / "half.onnx")(images)[0]
    # The same halves, weighed 0.5 / 0.5 instead of 0.7 / 0.3.
    assert np.allclose(half[:, :64], base[:, :64] * (0.5 / 0.7) ** 0.5, atol=1e-5)
    assert np.allclose(half[:, 64:], base[:, 64:] * (0.5 / 0.3) ** 0.5, atol=1e-5)
    card = (tmp_path / "half.md").read_text()
    assert "cosine = 0.50 x the first part's + 0.50 x the second's)" in card
    assert "trained with share 0.30, served with 0.50 (set at export)" in card
    assert "--instance-share 0.5" in card
    with pytest.raises(ExportError, match=r"a share is in \[0, 1\]"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", instance_share=1.5)


def test_the_instance_term_finds_edited_copies_far_better_than_the_class_loss_alone(tiny_run, tmp_path):
    """Same data, backbone, budget and class loss; only the instance term differs. Edited copies of
    test images (JPEG, rescaling, shifts, crops, brightness...) must find their originals far more
    often, without giving up retrieval by class."""
    run_dir, overrides = tiny_run
    class_only = tmp_path / "class-only"
    command = [sys.executable, "-m", "training", "train", "--config", "default", "--no-progress"]
    for item in [*overrides, f'output_dir="{class_only}"', "objective.instance_weight=0", "model.instance_dims=0"]:
        command += ["--set", item]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    from contract import InputSpec
    from training.evaluation import embed_all, retrieval_metrics, torch_embedder
    from training.evaluation.edits import LIGHT_EDITS
    from training.evaluation.near_duplicates import near_duplicate_metrics
    from training.trainer import load_trained_model

    config = load_config("default", overrides)
    splits = load_splits("fashion-mnist", val_size=config.data.val_size, seed=0,
                         train_limit=config.data.train_limit, test_limit=config.data.test_limit)
    spec = InputSpec(height=28, width=28, channels=1)
    results = {}
    for name, path in (("instance", run_dir / "best.pt"), ("class only", class_only / "best.pt")):
        embedder = torch_embedder(load_trained_model(path)[0])
        embeddings, _ = embed_all(embedder, splits.test.images)
        # The light edits the instance term trains on (the edits users make are issue #29's, measured
        # on the shipped models; a 3-epoch run finds none of some of them with or without the term).
        near = near_duplicate_metrics(embedder, splits.test.images, spec, queries=300, edits=LIGHT_EDITS,
                                      gallery_embeddings=embeddings)
        results[name] = (near, retrieval_metrics(embeddings, splits.test.labels)["precision_at_1"])
        print(f"{name}: near-duplicate R@1 mean {near['mean_recall_at_1']:.4f}, worst {near['worst_recall_at_1']:.4f} "
              f"({near['worst_edit']}); P@1 {results[name][1]:.4f}")
    (with_instance, p1), (without, p1_class_only) = results["instance"], results["class only"]
    # Measured on this machine: mean 0.953 against 0.705, worst edit 0.763 against 0.077 (both
    # downscale 0.75x), P@1 0.808 against 0.801.
    assert with_instance["mean_recall_at_1"] >= without["mean_recall_at_1"] + 0.15
    assert with_instance["worst_recall_at_1"] >= without["worst_recall_at_1"] + 0.4
    assert p1 > p1_class_only - 0.03
    # Each run's own validation log reports the same kind of number every epoch.
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= history[-1]["val_near_duplicate_worst_r1"] <= history[-1]["val_near_duplicate_r1"] <= 1


HOLDOUT = ["coat", "shirt", "sneaker", "ankle boot"]


def test_the_card_reports_the_open_set_numbers_of_the_same_recipe(tiny_run, tmp_path, capsys):
    """The recipe trained without 4 classes (via the CLI flag) puts seen/unseen numbers in the card."""
    run_dir, overrides = tiny_run
    from training.export import ExportError, export_checkpoint

    open_set_dir = tmp_path / "open-set"
    command = [sys.executable, "-m", "training", "train", "--config", "default", "--no-progress",
               "--holdout-classes", ",".join(HOLDOUT)]
    for item in [*overrides, f'output_dir="{open_set_dir}"']:
        command += ["--set", item]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    # One export, with a pixel subspace: the served embedding is the learned one, scaled, then the
    # pixels' PCA; the open-set run gets its own (fitted on its seen classes), and its learned part is
    # reported alone too.
    from training.evaluation import embed_all, evaluate_embeddings, onnx_embedder, torch_embedder
    from training.models.pixel_fusion import fit_pixel_pca
    from training.tasks import load_task
    from training.trainer import load_trained_model

    result = export_checkpoint(run_dir / "best.pt", tmp_path / "fused.onnx", pairs=2000,
                               open_set_checkpoint=open_set_dir / "best.pt", pixel_pca=32, pixel_share=0.4)
    recipe = result["metrics"]["open_set_recipe"]
    assert recipe["holdout_classes"] == HOLDOUT
    unseen, seen, alone = recipe["unseen"], recipe["seen"], recipe["unseen_learned_only"]
    # Seen numbers come from the 6 trained classes' test images, unseen from the 4 held-out ones
    # (data.test_limit=2000 caps each side).
    assert seen["items"] == unseen["items"] == 2000
    assert set(unseen["few_shot"]) == {"4-way 1-shot", "4-way 5-shot"}
    card = (tmp_path / "fused.md").read_text()
    assert "## Open-set numbers of this recipe" in card and "--holdout-classes" in card
    assert f"| {unseen['map_at_r']:.4f} |" in card
    assert f"{unseen['few_shot']['4-way 5-shot']['accuracy']:.4f}" in card
    # Per unseen class, beside raw pixels and the learned part alone: which held-out class the average hides.
    by_class, pixels = unseen["map_at_r_by_class"], recipe["unseen_raw_pixels"]["map_at_r_by_class"]
    assert list(by_class) == list(pixels) == list(alone["map_at_r_by_class"]) == HOLDOUT
    assert min(by_class.values()) <= unseen["map_at_r"] <= max(by_class.values())
    assert (f"| sneaker | {by_class['sneaker']:.4f} | {pixels['sneaker']:.4f} | "
            f"{alone['map_at_r_by_class']['sneaker']:.4f} |") in card
    assert "--open-set-checkpoint" in card  # the export command that made the card
    assert "--pixel-pca 32 --pixel-share 0.4" in card and "Pixel subspace (added at export)" in card
    assert f"learned embedding alone reaches unseen-class MAP@R {alone['map_at_r']:.4f}" in card
    # "Alone" is the open-set run without its pixels, measured here directly; the pixels change it.
    open_set_config = load_config("default", [*overrides, f'data.holdout_classes={json.dumps(HOLDOUT)}'])
    held_out = load_task(open_set_config).splits.test_unseen
    twin, _ = embed_all(torch_embedder(load_trained_model(open_set_dir / "best.pt")[0]), held_out.images)
    assert evaluate_embeddings(twin, held_out.labels, 2000, 0)["map_at_r"] == pytest.approx(alone["map_at_r"], abs=1e-4)
    assert unseen["map_at_r"] != alone["map_at_r"]

    spec = ModelSpec.from_metadata({p.key: p.value for p in onnx.load(str(tmp_path / "fused.onnx")).metadata_props})
    assert spec.embedding_dim == 128 + 32 and spec.training.pixel_pca.dims == 32
    splits = load_task(load_config("default", overrides)).splits
    images = splits.test.images[:50]
    learned, _ = embed_all(torch_embedder(load_trained_model(run_dir / "best.pt")[0]), images)
    served, _ = onnx_embedder(tmp_path / "fused.onnx")(images)
    assert np.allclose(served[:, :128], learned * 0.6 ** 0.5, atol=1e-4)
    mean, basis = fit_pixel_pca(splits.train.images, 32)
    pixels = (images.reshape(50, -1) / 255.0 - mean) @ basis
    assert np.allclose(served[:, 128:], pixels / np.linalg.norm(pixels, axis=1, keepdims=True) * 0.4 ** 0.5, atol=1e-4)
    with pytest.raises(ExportError, match="needs both"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", pixel_pca=32)
    with pytest.raises(ExportError, match="has 784 pixel values"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", pixel_pca=1000, pixel_share=0.3)
    # A colour layout (block means before the PCA) needs whole blocks, and has fewer values.
    with pytest.raises(ExportError, match="side 5 needs whole blocks of the 28x28 input"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", pixel_pca=8, pixel_share=0.3, pixel_side=5)
    with pytest.raises(ExportError, match="7x7x1 layout has 49 pixel values"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", pixel_pca=50, pixel_share=0.3, pixel_side=7)
    with pytest.raises(ExportError, match="needs --pixel-pca"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", pixel_side=7)

    # A run of every class, or of another recipe, cannot stand in for the open-set run.
    with pytest.raises(ExportError, match="trained on every class"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", pairs=2000, open_set_checkpoint=run_dir / "best.pt")
    # The CLI says so in one line and exits 2, without a traceback.
    refused = _refused(["export", "--checkpoint", str(run_dir / "best.pt"), "--output", str(tmp_path / "x.onnx"),
                        "--open-set-checkpoint", str(run_dir / "best.pt")], capsys)
    assert refused.startswith("python -m training export: error: ") and "trained on every class" in refused
    import torch

    saved = torch.load(open_set_dir / "best.pt", map_location="cpu", weights_only=False)
    saved["config"]["optim"]["epochs"] = 1
    torch.save(saved, tmp_path / "other-recipe.pt")
    with pytest.raises(ExportError, match=r"differs in optim\.epochs: 3 vs 1$"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", open_set_checkpoint=tmp_path / "other-recipe.pt")
    assert not (tmp_path / "x.onnx").exists()


def test_an_int8_export_is_measured_on_the_int8_graph_and_served_like_any_model(tiny_run, tmp_path):
    """``--quantize int8``: a QDQ graph with int8 weights, close to the float graph, whose card numbers
    are its own (re-measured through ONNX Runtime they agree) and which the service loads as is."""
    run_dir, _ = tiny_run
    from service.model_runner import ModelRunner
    from training.evaluation.task_metrics import evaluate_model

    command = [sys.executable, "-m", "training", "export", "--checkpoint", str(run_dir / "best.pt"),
               "--output", str(tmp_path / "tiny-int8.onnx"), "--quantize", "int8"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    model = onnx.load(str(tmp_path / "tiny-int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    # Every convolution but the first (kept float: training/quantize.py says why).
    assert len(int8_weights) == sum(1 for node in model.graph.node if node.op_type == "Conv") - 1
    spec = ModelSpec.from_metadata({p.key: p.value for p in model.metadata_props})
    quantization = spec.metrics.export.quantization
    assert quantization.calibration_images == 512 and quantization.agreement["images"] == 1000
    # Close to the float graph, but not the float graph: the numbers below are the int8 graph's own.
    assert 0.99 < quantization.agreement["mean_cosine"] < 1.0
    assert quantization.agreement["min_cosine"] > 0.95
    card = (tmp_path / "tiny-int8.md").read_text()
    assert "- Quantized: int8 QDQ (Conv, Gemm;" in card and "--quantize int8" in card
    again = evaluate_model(tmp_path / "tiny-int8.onnx", pairs=5000)
    assert again["test"]["precision_at_1"] == pytest.approx(spec.metrics.test.precision_at_1, abs=1e-6)
    runner = ModelRunner(tmp_path / "tiny-int8.onnx", device="cpu")
    splits = load_splits("fashion-mnist", val_size=2000, seed=0, train_limit=12000, test_limit=2000)
    images = splits.test.images[:8]
    out = runner.embed(images).embedding
    assert out.shape == (8, spec.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    from training.export import ExportError, export_checkpoint

    with pytest.raises(ExportError, match="unknown quantization 'int4'"):
        export_checkpoint(run_dir / "best.pt", tmp_path / "x.onnx", quantize="int4")
    assert quantization.calibration_split == "train"


def _refused(argv: list[str], capsys) -> str:
    """The last line of ``python -m training ARGV``'s refusal (tests.conftest.refused_by_training_cli)."""
    return refused_by_training_cli(argv, capsys)[-1]


def _train_command(out, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "training", "train", "--config", "default", "--no-progress"]
    # No near-duplicate measurement each epoch and a small test split: the resume is what is tested.
    for item in ["data.train_limit=1500", "data.val_size=300", "data.test_limit=300", "optim.epochs=3",
                 "model.widths=[8, 16]", "model.depth=1", "optim.threads=2", "eval.val_near_duplicates=0",
                 f'output_dir="{out}"', *extra]:
        command += ["--set", item]
    return command


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    """Kill a run after its first checkpoint, resume it: it ends where an uninterrupted run ends."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    done = subprocess.run(_train_command(straight, []), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    process = subprocess.Popen(_train_command(interrupted, []), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    log = interrupted / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (log.is_file() and log.read_text().count("\n") >= 1 and (interrupted / "last.pt").is_file()):
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()
    process.wait()
    lines = log.read_text().splitlines()
    assert 1 <= len(lines) < 3, "the kill came too late to test a resume"
    resumed = subprocess.run([*_train_command(interrupted, []), "--resume"], cwd=REPO, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["epoch"] for row in b] == [1, 2, 3]
    for key in ("train_loss", "val_precision_at_1", "val_map_at_r"):
        assert b[-1][key] == pytest.approx(a[-1][key], abs=1e-6), key


def test_resuming_with_another_network_says_which_setting_differs(tmp_path, capsys):
    short = ["data.train_limit=500", "data.val_size=100", "data.test_limit=100", "optim.epochs=1",
             "optim.max_steps=1", "eval.pairs=100", "eval.val_near_duplicates=0"]
    first = subprocess.run([*_train_command(tmp_path, short), "--no-test"], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    other = _refused([*_train_command(tmp_path, [*short, "model.widths=[8, 32]"])[3:], "--resume", "--no-test"],
                     capsys)
    # One line naming the setting, exit 2 (a user error), not a traceback from load_state_dict.
    assert other == (
        f"python -m training train: error: cannot resume {tmp_path / 'last.pt'}: it was trained with other settings "
        "(model.widths: [8, 16] vs [8, 32], saved vs now); resume with the settings it was trained with, or train "
        "without --resume")


def test_a_fine_tune_starts_from_the_checkpoint_and_refuses_another_network(tiny_run, tmp_path, capsys):
    """``init_from`` loads the weights (and ArcFace proxies): one step at a negligible learning rate
    leaves the validation numbers where the checkpoint ended; another network is refused in one line."""
    run_dir, overrides = tiny_run
    started = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    start = run_dir / "best.pt"
    init = f'init_from="{start}"'
    tune = [*overrides, f'output_dir="{tmp_path}"', 'name="tuned"', init,
            "optim.max_steps=1", "optim.lr=1e-9", "eval.val_near_duplicates=0"]
    command = [sys.executable, "-m", "training", "train", "--config", "default", "--no-progress", "--no-test"]
    done = subprocess.run([*command, *[a for item in tune for a in ("--set", item)]], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"fine-tuning from {start}" in done.stderr
    tuned = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("val_precision_at_1", "val_map_at_r"):
        assert tuned[key] == pytest.approx(started[key], abs=2e-3), key
    # The card gives the whole recipe: the first stage's command, then the fine-tune's.
    from training.export import export_checkpoint

    export_checkpoint(tmp_path / "best.pt", tmp_path / "tuned.onnx")
    card = (tmp_path / "tuned.md").read_text()
    first = card.index("Train, in 2 stages")
    assert "1. 3 epochs" in card and "2. the last stage:" in card
    stage_one, stage_two = (shlex.join(["--set", item]) for item in (f'output_dir="{run_dir}"', init))
    assert first < card.index(stage_one) < card.index(stage_two)

    other = _refused([*command[3:], *[a for item in [*tune, "model.widths=[16, 32, 128]"] for a in ("--set", item)]],
                     capsys)
    assert other == (
        f"python -m training train: error: cannot fine-tune from {start}: it was trained with other "
        "settings (model.widths: [16, 32, 64] vs [16, 32, 128], saved vs now); fine-tune a network of the same shape")
    # The same settings on other data (a folder of RGB photos, where the run had greyscale): one line too.
    demo = tmp_path / "demo"
    from training.cli import main

    assert main(["demo-data", str(demo), "--per-class", "10", "--size", "28"]) == 0
    rgb = [*tune, "data.dataset=folder", f'data.data_dir="{demo}"', "data.image_size=28", "data.channels=3"]
    last_line = _refused([*command[3:], *[a for item in rgb for a in ("--set", item)]], capsys)
    assert last_line.startswith(f"python -m training train: error: {start}: its network does not fit this run "
                                "(size mismatch for mean"), last_line
