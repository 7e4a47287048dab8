"""Smoke runs of every benchmark script, tiny and fast, so the scripts cannot rot.

These check that each script runs end to end and writes its page, table and raw results; they are
not timed and assert nothing about speed. The real numbers come from the commands in docs/.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import (
    csn,
    index_bench,
    instance_share,
    load,
    milvus_bench,
    nsl_ablation,
    nsl_kernels,
    openset,
    pixel_check,
    pixel_share,
    quality,
    serving,
    similarity_ablation,
)
from tests.conftest import DEFAULT_MODEL
from training.evaluation.near_duplicates import EDITS, FAMILIES

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

# eval.val_near_duplicates: 20 originals edited each epoch, not 200 (7,800 images, most of a tiny epoch).
TINY_TRAINING = ["model.widths=[8, 16]", "model.depth=1", "data.test_limit=600", "eval.pairs=1000",
                 "optim.batch_size=64", "eval.val_near_duplicates=20"]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def _written(output) -> dict:
    assert output.is_file() and "```" in output.read_text()  # the page shows its command
    raw = output.parent / "results" / f"{output.stem}.json"
    payload = json.loads(raw.read_text())
    assert payload["command"].startswith("python -m bench") and payload["machine"]
    return payload


def test_index_benchmark(tmp_path):
    output = tmp_path / "index.md"
    index_bench.main(["--sizes", "3000", "--queries", "50", "--single", "20", "--output", str(output)])
    rows = _written(output)["rows"]
    assert {r["type"] for r in rows} == {"flat", "hnsw", "ivf"}
    assert next(r for r in rows if r["type"] == "flat")["recall_at_10"] == 1.0
    assert (tmp_path / "index.png").is_file()


def test_quality_benchmark(tmp_path):
    output = tmp_path / "quality.md"
    quality.main(["--model", str(DEFAULT_MODEL), "--limit", "500", "--pairs", "500", "--queries", "40",
                  "--output", str(output)])
    results = _written(output)["results"]
    assert len(results) == 6 and all(0 <= r["precision_at_1"] <= 1 for r in results.values())
    near = results["raw pixels (cosine)"]["near_duplicates"]
    assert near["queries"] == 40 and near["recall_at_1"]["jpeg q90"] == 1.0
    assert "Near-duplicate R@1 by edit" in output.read_text()


def test_instance_share_benchmark(tmp_path):
    """The shipped share reproduces the served embedding exactly; share 0 and 1 are its two halves."""
    from training.data.sources import load_raw
    from training.evaluation import embed_all
    from training.evaluation.embed import onnx_embedder

    output = tmp_path / "share.md"
    instance_share.main(["--model", str(DEFAULT_MODEL), "--limit", "400", "--pairs", "400", "--queries", "30",
                         "--output", str(output)])
    [(about, rows)] = _written(output)["models"]
    assert about["gallery"] == 400 and [r["share"] for r in rows] == instance_share.SHARES
    assert all(0 <= r["near_duplicate_worst"] <= r["near_duplicate_mean"] <= 1 for r in rows)
    _, test = load_raw("fashion-mnist")
    served, _ = embed_all(onnx_embedder(DEFAULT_MODEL), test.images[:50])
    if about["pixel_dims"]:  # a pixel subspace added at export follows the learned embedding, scaled down
        served = served[:, :-about["pixel_dims"]]
        served /= np.linalg.norm(served, axis=1, keepdims=True)
    halves = instance_share._halves(served, about["instance_dims"])
    assert np.allclose(instance_share.reweigh(halves, about["shipped_share"]), served, atol=1e-5)
    assert np.allclose(instance_share.reweigh(halves, 0.0)[:, :-about["instance_dims"]], halves[0], atol=1e-6)
    assert "| share | P@1 |" in output.read_text()


def test_pixel_check_benchmark(tmp_path):
    page = tmp_path / "pixel-check.md"
    pixel_check.main(["--originals", "2", "--candidates", "2", "--output", str(page)])
    result = json.loads((tmp_path / "results" / "pixel-check.json").read_text())
    assert set(result["edits"]) == set(EDITS) and set(result["families"]) == set(FAMILIES)
    assert -1.0 <= result["threshold"] <= 1.0 + 1e-5
    # A copy saved as a high-quality JPEG is its original to the check as to the embedding.
    assert result["edits"]["jpeg q90"] == {"embedding_r1": 1.0, "checked_r1": 1.0, "called": 1.0}
    assert "| family | R@1, embedding | R@1, checked | called the same image |" in page.read_text()


def test_pixel_share_benchmark(tmp_path):
    """Two tiny runs, one without 4 classes: share 0 is the learned embedding alone, every
    (dims, share) gets a row, and the open-set rows stand beside raw pixels on the same images."""
    import subprocess
    import sys

    from tests.conftest import REPO

    runs = {}
    for name, extra in (("all", []), ("twin", ["--holdout-classes", "coat,shirt,sneaker,ankle boot"])):
        runs[name] = tmp_path / name
        command = [sys.executable, "-m", "training", "train", "--config", "default", "--no-progress", *extra,
                   *_sets([*TINY_TRAINING, "data.train_limit=800", "data.val_size=200", "optim.epochs=1",
                           f'output_dir="{runs[name]}"'])]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    output = tmp_path / "pixel-share.md"
    pixel_share.main(["--checkpoint", str(runs["all"] / "best.pt"), "--open-set-checkpoint", str(runs["twin"] / "best.pt"),
                      "--dims", "8", "16", "--shares", "0", "0.2", "--queries", "20", "--pairs", "500",
                      "--output", str(output)])
    written = _written(output)
    about, rows = written["recipe"]
    assert [(r["dims"], r["share"]) for r in rows] == [(8, 0.0), (8, 0.2), (16, 0.0), (16, 0.2)]
    assert rows[0]["map_at_r"] == rows[2]["map_at_r"]  # share 0: the pixels do not count
    assert rows[1]["map_at_r"] != rows[0]["map_at_r"]
    [(twin, unseen)] = written["open_sets"]
    assert twin["unseen_images"] == 600 and twin["holdout_classes"] == ["coat", "shirt", "sneaker", "ankle boot"]
    assert all(r["over_pixels"] == pytest.approx(r["unseen_map_at_r"] - twin["pixels_map_at_r"]) for r in unseen)
    assert "| PCA dims | share | unseen P@1 |" in output.read_text()
    # A colour layout (7x7 block means of the 28-pixel images), chosen on the validation split.
    layout = tmp_path / "pixel-share-layout.md"
    pixel_share.main(["--checkpoint", str(runs["all"] / "best.pt"), "--dims", "8", "--shares", "0", "0.2",
                      "--queries", "20", "--pairs", "500", "--side", "7", "--split", "val", "--output", str(layout)])
    about, layout_rows = _written(layout)["recipe"]
    assert (about["side"], about["split"], about["images"]) == (7, "val", 160)  # a fifth of 800, at most
    assert layout_rows[1]["map_at_r"] != layout_rows[0]["map_at_r"]
    assert "7x7 block means" in layout.read_text() and "160 val images" in layout.read_text()


def test_similarity_ablation(tmp_path):
    output = tmp_path / "similarity.md"
    similarity_ablation.main(["--epochs", "1", "--train-limit", "800", "--seeds", "0", "--queries", "30",
                              "--variants", "arcface + NT-Xent instance x1", "--finalists", *_sets(TINY_TRAINING),
                              "--output", str(output)])
    results = _written(output)["results"]
    assert [r["variant"] for r in results] == ["raw pixels (cosine)", "PCA-64 of pixels", "pHash (imagehash)",
                                                "arcface + NT-Xent instance x1"]
    assert all(0 <= r["near_duplicates"]["worst_recall_at_1"] <= r["near_duplicates"]["mean_recall_at_1"] <= 1
               for r in results)
    assert "unseen MAP@R" in output.read_text()


def test_nsl_ablation(tmp_path):
    output = tmp_path / "nsl.md"
    nsl_ablation.main(["--epochs", "1", "--train-limit", "800", "--seeds", "0", "1", "--variants", "plain",
                       "static-diag", "--cost-only", "dynamic-lowrank (r=1)", "--repeats", "1",
                       *_sets(TINY_TRAINING), "--output", str(output)])
    payload = _written(output)
    assert len(payload["results"]) == 4
    assert set(payload["training_images_per_s"]) == {"plain", "static-diag", "dynamic-lowrank (r=1)"}
    assert [c["variant"] for c in payload["costs"]] == ["dynamic-lowrank (r=1)"]
    assert "Verdict" in output.read_text() and "Cost only" in output.read_text()


def test_nsl_kernels(tmp_path):
    output = tmp_path / "kernels.md"
    nsl_kernels.main(["--batch", "4", "--channels", "8", "--size", "8", "--repeats", "1", "--output", str(output)])
    text = output.read_text()
    assert "per-tap convs" in text and "one-hot stack" in text and "ONNX Runtime" in text and "```" in text


def test_openset_benchmark(tmp_path):
    output = tmp_path / "openset.md"
    openset.main(["--epochs", "1", "--episodes", "20", "--entries", "raw pixels (cosine)", "PCA-64 of pixels",
                  "classifier embedding (cross-entropy)", *_sets([*TINY_TRAINING, "data.train_limit=1500"]),
                  "--output", str(output)])
    rows = _written(output)["rows"]
    assert [r["entry"] for r in rows][:2] == ["raw pixels (cosine)", "PCA-64 of pixels"]
    assert set(rows[0]["unseen"]["few_shot"]) == {"4-way 1-shot", "4-way 5-shot"}


def test_csn_benchmark(tmp_path):
    output = tmp_path / "csn.md"
    csn.main(["--epochs", "1", "--triplets", "640", "--entries", "standard triplet network", "task-specific networks",
              "CSN, learned masks",
              *_sets([*TINY_TRAINING, "data.train_limit=1500", "data.val_size=300", "data.eval_triplets=300"]),
              "--output", str(output)])
    rows = _written(output)["rows"]
    assert set(rows) == {"standard triplet network", "task-specific networks", "CSN, learned masks"}
    assert set(rows["CSN, learned masks"]["triplet_accuracy"]) == {"category", "group", "color", "overall"}


@pytest.mark.parametrize("module,args", [
    (load, ["--seconds", "2", "--clients", "4", "--rounds", "1"]),
    (serving, ["--seconds", "1", "--sizes", "500", "--repeats", "1"]),
])
def test_http_benchmarks(tmp_path, module, args):
    output = tmp_path / f"{module.__name__.split('.')[-1]}.md"
    extra = ["--model", str(DEFAULT_MODEL)] if module is serving else []
    module.main([*args, *extra, "--output", str(output)])
    payload = _written(output)
    text = output.read_text()
    assert "target" in text
    if module is load:
        assert payload["results"]["batching on"]["requests"] > 0 and payload["results"]["batching on"]["errors"] == 0
        assert payload["results"]["batching on"]["error_statuses"] == {}


def test_load_summary_names_each_failure_by_endpoint_and_status():
    records = [("search", 0.01, 200), ("add", 0.02, 503), ("similarity", 0.03, 0), ("add", 0.01, 503)]
    summary = load.summarise(records, seconds=1.0)
    assert summary["errors"] == 3 and summary["error_statuses"] == {"add 503": 2, "similarity 0": 1}
    assert load._errors(summary) == "3 (add 503: 2, similarity 0: 1)"


def test_bench_all_covers_every_benchmark():
    from bench import all as bench_all
    from bench.__main__ import BENCHMARKS

    assert {bench_all.SCRIPT_OF.get(name, name) for name in bench_all.RUNS} == set(BENCHMARKS) - {"all"}
    assert set(bench_all.SCRIPT_OF.values()) <= set(BENCHMARKS)


def test_ablation_variant_names_select_exactly_and_layer_words_select_the_family():
    names = [v.name for v in nsl_ablation.select_variants(["plain", "dynamic-diag"])]
    assert names == ["plain", "dynamic-diag"]  # not the sphere-predictor twin of dynamic-diag
    # plain, the baseline every ratio is read against, comes along unasked.
    assert [v.name for v in nsl_ablation.select_variants(["dynamic-lowrank"])] == [
        "plain", "dynamic-lowrank (r=1)", "dynamic-lowrank (r=1), last conv per stage"]
    assert len(nsl_ablation.select_variants(None)) == len(nsl_ablation.VARIANTS)


def test_a_work_folder_is_reused_only_for_the_same_configuration(tmp_path):
    """--work-dir reuse: the finished run of the same config is reused (even if its folder moved),
    a finished run of another config in the folder is refused rather than reported as this one."""
    from bench.common import train_or_reuse
    from training.config import config_to_toml, load_config

    run = tmp_path / "entry"
    run.mkdir()
    trained = load_config("default", ['output_dir="/elsewhere/entry"', 'objective.name="triplet"'])
    (run / "config.toml").write_text(config_to_toml(trained))
    (run / "summary.json").write_text("{}")
    same = load_config("default", [f'output_dir="{run}"', 'objective.name="triplet"'])
    assert train_or_reuse(same) == run
    other = load_config("default", [f'output_dir="{run}"', 'objective.name="contrastive"'])
    with pytest.raises(SystemExit, match="another configuration"):
        train_or_reuse(other)


def test_milvus_benchmark(tmp_path):
    """Both parts, tiny: the three stores on 2,000 vectors, then 1 and 2 API workers on a Milvus Lite server."""
    output = tmp_path / "milvus.md"
    milvus_bench.main(["--n", "2000", "--queries", "30", "--seconds", "1", "--rounds", "1", "--clients", "2",
                       "--output", str(output)])
    payload = _written(output)
    assert set(payload["stores"]) == set(milvus_bench.STORES)
    assert all(r["recall_at_10"] > 0.9 and r["insert_items_per_s"] > 0 for r in payload["stores"].values())
    assert payload["stores"]["embedded flat"]["recall_at_10"] == 1.0
    service = payload["service"]
    assert [r["workers"] for r in service.values()] == [1, 2]
    assert all(r["requests"] > 0 and r["errors"] == 0 and r["api_cpu_ms_per_request"] > 0 for r in service.values())
    assert "## Reading" in output.read_text()
