"""Serving speed, side by side in one run.

    python -m bench serving [--model models/default.onnx] [--seconds 10]

1. Embedding throughput of the model: PyTorch eager and ONNX Runtime CPU at batch 1, 8 and 64,
   against the machine's ceiling for this model (MACs per image vs the measured peak of a large
   matmul on the same cores).
2. End-to-end HTTP on loopback: requests/s, p50/p99 latency and the server's CPU milliseconds per
   request of /similarity and /search (10k and 100k indexed items) at 1, 8 and 32 concurrent clients, for likeness and for a naive server
   written the way the Siamese tutorial would (bench/naive_server.py).
3. HTTP overhead: /similarity images/s at 32 clients against raw ONNX Runtime at the mean batch
   size the server actually ran.
Writes docs/serving.md, docs/serving.png and docs/results/serving.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from bench.common import (
    DOCS,
    REPO,
    interleaved_rates,
    make_parser,
    markdown_table,
    page_header,
    write_json,
)
from bench.load import measure, summarise
from bench.server import ServerProcess
from contract import ModelSpec

CLIENTS = (1, 8, 32)
KEPT = "## Server CPU per request"  # a section of the page this command keeps as it is
BATCHES = (1, 8, 64)


def load_spec(model: Path) -> ModelSpec:
    return ModelSpec.from_metadata({p.key: p.value for p in onnx.load(str(model)).metadata_props})


def torch_model(spec: ModelSpec) -> torch.nn.Module:
    """The served architecture in PyTorch eager (untrained weights: speed does not depend on them)."""
    from training.config import ModelConfig
    from training.layers import fold_static_layers
    from training.models import build_model

    config = ModelConfig.model_validate(spec.training.backbone)
    channels = spec.input.channels
    model = build_model(config, channels, [0.5] * channels, [0.25] * channels, aspects=len(spec.aspects))
    fold_static_layers(model)
    return model.eval()


def matmul_peak_macs(seconds: float = 2.0) -> float:
    """Multiply-accumulates per second of a large float32 matmul on all cores (the practical peak)."""
    torch.set_num_threads(os.cpu_count() or 1)
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    return runs * 2048**3 / (time.perf_counter() - started)


def model_throughput(model_path: Path, spec: ModelSpec, repeats: int) -> dict:
    from bench.nsl_ablation import count_macs

    net = torch_model(spec)
    macs = count_macs(net, spec.input)
    peak = matmul_peak_macs()
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    calls = {}
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        images = rng.integers(0, 256, (batch, spec.input.height, spec.input.width, spec.input.channels), dtype=np.uint8)
        tensor = torch.from_numpy(images)

        def eager(tensor=tensor, batch=batch) -> int:
            with torch.inference_mode():
                net(tensor)
            return batch

        def onnx_run(images=images, batch=batch) -> int:
            session.run(None, {"images": images})
            return batch

        calls[f"PyTorch eager, batch {batch}"] = eager
        calls[f"ONNX Runtime CPU, batch {batch}"] = onnx_run
    rates = interleaved_rates(calls, repeats)
    ceiling = peak / macs
    return {"macs_per_image": macs, "matmul_peak_macs_per_s": peak, "ceiling_images_per_s": ceiling,
            "rates": rates, "fraction_of_ceiling": {k: v / ceiling for k, v in rates.items()}}


def ort_rate_at(model_path: Path, spec: ModelSpec, batch: int, repeats: int) -> float:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(1).integers(0, 256, (batch, spec.input.height, spec.input.width,
                                                        spec.input.channels), dtype=np.uint8)
    return interleaved_rates({"ort": lambda: (session.run(None, {"images": images}), batch)[1]}, repeats)["ort"]


def prepare_index(directory: Path, spec: ModelSpec, items: int) -> None:
    """Fill a likeness data dir with ``items`` random unit vectors (search speed does not depend on them)."""
    from service.index_store import EmbeddedStore, NewItem

    store = EmbeddedStore(directory, spec.embedding_dim, spec.aspects, {"name": spec.name, "version": spec.version})
    store.open()
    rng = np.random.default_rng(0)
    spaces = 1 + len(spec.aspects)
    for start in range(0, items, 5000):
        vectors = rng.standard_normal((min(5000, items - start), spaces, spec.embedding_dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        store.upsert([NewItem(f"synthetic-{start + i}", v, {"n": start + i}) for i, v in enumerate(vectors)])
    store.close()


def http_results(model: Path, spec: ModelSpec, seconds: float, sizes: list[int]) -> dict:
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for items in sizes:
            data = Path(tmp) / f"likeness-{items}"
            prepare_index(data, spec, items)
            servers = {
                "likeness": ServerProcess(data, LIKENESS_MODEL_PATH=str(model), LIKENESS_SEED_GALLERY="0"),
                "naive": ServerProcess(Path(tmp) / f"naive-{items}", command=[
                    "bench.naive_server", "--model", str(model), "--items", str(items), "--port", "{port}"]),
            }
            for server in servers.values():
                server.start(timeout=180)
            try:
                endpoints = ["search"] if items != sizes[0] else ["similarity", "search"]
                for endpoint in endpoints:
                    for clients in CLIENTS:
                        for name, server in servers.items():
                            records, cpu = measure(server, clients, seconds, seed=clients, mix={endpoint: 1.0})
                            key = f"{name} {endpoint} {items if endpoint == 'search' else ''} {clients}".replace("  ", " ")
                            out[key] = {"server": name, "endpoint": endpoint, "items": items, "clients": clients,
                                        **summarise(records, seconds, cpu)}
                            r = out[key]
                            print(f"{key:32s} {r['throughput_rps']:7.0f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                                  f"p99 {r['p99_ms']:7.1f} ms  CPU {r['cpu_ms_per_request']:5.2f} ms/req  "
                                  f"errors {r['errors']}", flush=True)
                if items == sizes[0]:
                    import httpx

                    metrics = httpx.get(servers["likeness"].url + "/metrics").text
                    count = _metric(metrics, "likeness_inference_batch_size_count")
                    total = _metric(metrics, "likeness_inference_batch_size_sum")
                    out["mean_batch"] = total / max(count, 1)
            finally:
                for server in servers.values():
                    server.stop()
    return out


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def plot(http: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    series: dict[str, list] = {}
    for r in http.values():
        if isinstance(r, dict):
            label = f"{r['server']} {r['endpoint']}" + (f" ({r['items']:,})" if r["endpoint"] == "search" else "")
            series.setdefault(label, []).append((r["clients"], r["throughput_rps"]))
    for label, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                linestyle="-" if label.startswith("likeness") else "--", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(CLIENTS, [str(c) for c in CLIENTS])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests/s")
    ax.set_title("HTTP throughput on loopback")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(model: dict, http: dict, overhead: dict, args: argparse.Namespace, spec: ModelSpec) -> str:
    rows = [[name, f"{rate:,.0f}", f"{model['fraction_of_ceiling'][name] * 100:.1f}%"]
            for name, rate in model["rates"].items()]
    http_rows = [[r["server"], r["endpoint"], f"{r['items']:,}" if r["endpoint"] == "search" else "-",
                  str(r["clients"]), f"{r['throughput_rps']:,.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                  f"{r['cpu_ms_per_request']:.2f}", str(r["errors"])] for r in http.values() if isinstance(r, dict)]
    ratios = []
    for endpoint, items in (("similarity", None), *(("search", n) for n in args.sizes)):
        suffix = f" {items}" if items else ""
        mine, naive = http.get(f"likeness {endpoint}{suffix} 32"), http.get(f"naive {endpoint}{suffix} 32")
        if mine and naive:
            ratio = mine["throughput_rps"] / naive["throughput_rps"]
            ratios.append(f"- `/{endpoint}`{f' ({items:,} items)' if items else ''}, 32 clients: likeness "
                          f"{mine['throughput_rps']:,.0f} req/s vs naive {naive['throughput_rps']:,.0f} req/s = "
                          f"**{ratio:.1f}x** (target 5x: {'met' if ratio >= 5 else 'missed'}).")
    return "\n".join([
        *page_header("Serving speed", f" Model: {spec.name} {spec.version} ({model['macs_per_image'] / 1e6:.1f} M MACs "
                     "per image). Load generator, servers and model share the cores."),
        "## Embedding throughput (images/s)",
        "",
        f"Ceiling: a 2048x2048 float32 matmul runs at {model['matmul_peak_macs_per_s'] / 1e9:.1f} G MAC/s on all "
        f"cores, so this model cannot exceed {model['ceiling_images_per_s']:,.0f} images/s here. Rates are medians of "
        f"{args.repeats} interleaved rounds.",
        "",
        markdown_table(["path", "images/s", "share of the ceiling"], rows),
        "",
        "## HTTP on loopback",
        "",
        f"Closed-loop clients, {args.seconds:g} s per cell, servers alternating. The naive server is PyTorch eager with "
        "one image per forward pass and a NumPy brute-force search (bench/naive_server.py). Server CPU is the "
        "server process's user + system time, all threads (/proc/PID/stat), per successful request: what a "
        "deployment pays in cores whatever the latency.",
        "",
        markdown_table(["server", "endpoint", "items", "clients", "req/s", "p50 (ms)", "p99 (ms)",
                        "server CPU (ms/req)", "errors"], http_rows),
        "",
        *ratios,
        f"- HTTP overhead: `/similarity` at 32 clients moves {overhead['http_images_per_s']:,.0f} images/s; raw ONNX "
        f"Runtime at the server's mean batch ({overhead['mean_batch']:.1f} images) does "
        f"{overhead['ort_images_per_s']:,.0f} images/s, so HTTP keeps **{overhead['share'] * 100:.0f}%** of it "
        f"(target: at least 50%, i.e. overhead at most 50%: {'met' if overhead['share'] >= 0.5 else 'missed'}).",
        "",
        "![serving](serving.png)",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("serving", __doc__)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default.onnx")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=DOCS / "serving.md")
    args = parser.parse_args(argv)
    spec = load_spec(args.model)
    model = model_throughput(args.model, spec, args.repeats)
    for name, rate in model["rates"].items():
        print(f"{name:32s} {rate:9.0f} img/s  ({model['fraction_of_ceiling'][name] * 100:.1f}% of ceiling)", flush=True)
    http = http_results(args.model, spec, args.seconds, args.sizes)
    similarity = http.get("likeness similarity 32")
    mean_batch = max(1, round(http.get("mean_batch", 1)))
    ort_rate = ort_rate_at(args.model, spec, mean_batch, args.repeats)
    http_images = 2 * similarity["throughput_rps"] if similarity else 0.0
    overhead = {"mean_batch": http.get("mean_batch", 1.0), "ort_images_per_s": ort_rate,
                "http_images_per_s": http_images, "share": http_images / ort_rate}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    plot(http, args.output.with_suffix(".png"))
    page = render(model, http, overhead, args, spec)
    if args.output.is_file() and KEPT in args.output.read_text():
        # The server-CPU section comes from other commands (serving-cpu, bench.serving_profile); keep it.
        page += "\n" + KEPT + args.output.read_text().split(KEPT, 1)[1]
    args.output.write_text(page)
    write_json(args.output, {"model": model, "http": http, "overhead": overhead})
    print(f"wrote {args.output}")
