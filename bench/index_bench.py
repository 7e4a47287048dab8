"""Index benchmark: flat, HNSW and IVF on synthetic clustered 64-d vectors, through the store's own
index classes (service/index_store/faiss_index.py).

    python -m bench index [--sizes 10000 100000 1000000] [--queries 1000]

For each size and type: build time, bytes per vector (serialized index / n), single-query search
time (median, one thread), batched search throughput (all queries at once, all threads) and
recall@10 against exact search. Writes docs/index.md, docs/results/index.json and a plot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

from bench.common import DOCS, make_parser, markdown_table, page_header, write_json
from service.index_store.faiss_index import IndexOptions, VectorIndex, numpy_method

TYPES = ("flat", "hnsw", "ivf")
K = 10


def clustered(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        which = rng.integers(0, clusters, m)
        out[start:start + m] = centres[which] + 0.6 * rng.standard_normal((m, dim)).astype(np.float32)
    faiss.normalize_L2(out)
    return out


def run_size(n: int, dim: int, queries: int, seed: int, single: int) -> list[dict]:
    data = clustered(n + queries, dim, seed)
    base, query = data[:n], data[n:]
    labels = np.arange(n, dtype=np.int64)
    rows = []
    truth = None
    for kind in TYPES:
        options = IndexOptions(type=kind, ivf_min_train=min(10_000, n))
        index = VectorIndex(dim, options)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        started = time.perf_counter()
        for s in range(0, n, 100_000):
            index.add(labels[s:s + 100_000], base[s:s + 100_000])
        build = time.perf_counter() - started
        size = len(index.serialize())
        # Batched: all queries in one call, all threads.
        started = time.perf_counter()
        _, found = numpy_method(index.index, "search")(query, K)
        batched = queries / (time.perf_counter() - started)
        if kind == "flat":
            truth = found
        recall = float(np.mean([len(set(found[i]) & set(truth[i])) / K for i in range(queries)]))
        # Single queries, one thread: the service's per-request path (VectorIndex.search).
        faiss.omp_set_num_threads(1)
        times = []
        for q in query[:single]:
            t = time.perf_counter()
            index.search(q, K)
            times.append(time.perf_counter() - t)
        single_ms = statistics.median(times) * 1000
        rows.append({"n": n, "type": kind, "build_s": build, "bytes_per_vector": size / n,
                     "single_query_ms": single_ms, "single_qps": 1000 / single_ms, "batched_qps": batched,
                     "recall_at_10": recall, "params": _params(options, index)})
        print(f"n={n:>8} {kind:5s} build {build:7.1f}s  {size / n:6.0f} B/vec  single {single_ms:7.3f} ms  "
              f"batched {batched:9.0f} q/s  recall@10 {recall:.4f}", flush=True)
        del index
    return rows


def _params(options: IndexOptions, index: VectorIndex) -> str:
    if options.type == "hnsw":
        return f"M={options.hnsw_m}, efConstruction={options.hnsw_ef_construction}, efSearch={options.hnsw_ef_search}"
    if options.type == "ivf":
        nlist = index.index.nlist if index.trained_ivf else 0
        return f"nlist={nlist}, nprobe={options.ivf_nprobe}"
    return "exact"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind in TYPES:
        sub = [r for r in rows if r["type"] == kind]
        axes[0].plot([r["n"] for r in sub], [r["single_query_ms"] for r in sub], marker="o", label=kind)
        axes[1].plot([r["n"] for r in sub], [r["recall_at_10"] for r in sub], marker="o", label=kind)
    for ax, title in zip(axes, ("single-query time (ms, 1 thread)", "recall@10 vs exact")):
        ax.set_xscale("log")
        ax.set_xlabel("vectors (64-d)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(rows: list[dict], args: argparse.Namespace) -> str:
    table = markdown_table(
        ["vectors", "type", "parameters", "build (s)", "bytes/vector", "single query (ms)", "speed-up vs flat",
         "batched (queries/s)", "recall@10"],
        [[f"{r['n']:,}", r["type"], r["params"], f"{r['build_s']:.1f}", f"{r['bytes_per_vector']:.0f}",
          f"{r['single_query_ms']:.3f}",
          f"{next(f['single_query_ms'] for f in rows if f['n'] == r['n'] and f['type'] == 'flat') / r['single_query_ms']:.1f}x",
          f"{r['batched_qps']:,.0f}", f"{r['recall_at_10']:.4f}"] for r in rows])
    return "\n".join([
        *page_header("Index benchmark"),
        f"Synthetic data: unit 64-d vectors around 1,000 random centres (noise 0.6), {args.queries} held-out "
        "queries from the same distribution. Ground truth: exact inner-product search (the flat index). "
        "Single-query time is the median over queries through `VectorIndex.search` with one FAISS thread "
        "(what each service request does); batched throughput is one call with all queries and all threads. "
        "Bytes per vector is the serialized index size divided by the number of vectors.",
        "",
        table,
        "",
        "![index benchmark](index.png)",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("index", __doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=300, help="queries timed one by one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DOCS / "index.md")
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        rows += run_size(n, args.dim, args.queries, args.seed, args.single)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, args.output.with_suffix(".png"))
    args.output.write_text(render(rows, args))
    write_json(args.output, {"rows": rows})
    print(f"wrote {args.output}")
