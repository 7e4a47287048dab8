"""CPU per image of ONNX Runtime alone, for the settings docs/serving.md argues from.

    python -m bench.ort_cpu [--model models/default.onnx models/default-int8.onnx]

For each model, on random uint8 images (process CPU time, best of 5 repeats, spinning off):
- one against two intra-op threads at batch sizes 1 to 32 (why merged batches stay on one thread);
- graph optimisation levels basic, extended and all at batch 2;
- ONNX Runtime's own profile of a two-image run on one thread: the share of each operator type
  and the convolutions' multiply-adds per second.
Prints the numbers; nothing is written.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.common import REPO

LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def session(model: Path, threads: int, level: str = "all", profile_dir: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = LEVELS[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_dir is not None:
        options.enable_profiling, options.profile_file_prefix = True, str(profile_dir / "ort")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def cpu_ms_per_image(sess: ort.InferenceSession, batch: int, runs: int = 40) -> float:
    x = np.random.default_rng(0).integers(0, 256, (batch, *sess.get_inputs()[0].shape[1:]), np.uint8)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(5):
        sess.run(None, feed)
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(runs):
            sess.run(None, feed)
        best = min(best, (time.process_time() - start) / runs / batch * 1000)
    return best


def operator_shares(model: Path, runs: int = 300) -> tuple[dict[str, float], float]:
    """Share of kernel time per operator type, and the convolutions' G multiply-adds per second."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(model, 1, profile_dir=Path(tmp))
        x = np.random.default_rng(0).integers(0, 256, (2, *sess.get_inputs()[0].shape[1:]), np.uint8)
        for _ in range(runs):
            sess.run(None, {sess.get_inputs()[0].name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    conv_us = sum(v for k, v in per_op.items() if "Conv" in k)
    return {k: v / total for k, v in per_op.most_common(6)}, 2 * conv_macs(model) / (conv_us / runs) / 1000


def conv_macs(model: Path) -> int:
    """Multiply-adds of the graph's convolutions for one image, from ONNX's inferred shapes."""
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(model))).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.value_info}
    shapes.update({t.name: list(t.dims) for t in inferred.initializer})
    macs = 0
    for node in inferred.node:
        if node.op_type == "Conv":
            out, weight = shapes[node.output[0]], shapes[node.input[1]]
            macs += out[2] * out[3] * weight[0] * weight[1] * weight[2] * weight[3]
    return macs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ort_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, nargs="+",
                        default=[REPO / "models" / "default.onnx", REPO / "models" / "default-int8.onnx"])
    args = parser.parse_args(argv)
    for model in args.model:
        print(f"{model.name}")
        for threads in (1, 2):
            cells = [f"batch {b}: {cpu_ms_per_image(session(model, threads), b):.3f}" for b in (1, 2, 8, 16, 32)]
            print(f"  {threads} intra-op thread(s), CPU ms per image: " + ", ".join(cells))
        levels = [f"{name} {cpu_ms_per_image(session(model, 1, name), 2):.3f}" for name in LEVELS]
        print("  graph optimisation, one thread, batch 2, CPU ms per image: " + ", ".join(levels))
        shares, gmacs = operator_shares(model)
        print("  kernel time by operator (one thread, batch 2): "
              + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items())
              + f"; convolutions at {gmacs:.1f} G multiply-adds per second")


if __name__ == "__main__":
    main()
