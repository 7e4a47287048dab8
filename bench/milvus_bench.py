"""The two index backends side by side: the embedded store (SQLite + FAISS flat or HNSW) against
Milvus Lite, and the service with 1 API worker against 2 on the milvus backend.

    python -m bench milvus [--n 100000] [--dim 128] [--queries 500] [--seconds 5] [--rounds 3]

Part 1, the stores (``service/index_store/``, called directly, no HTTP): ``--n`` clustered unit
vectors (bench/index_bench.py's generator) inserted through ``IndexStore.upsert`` in batches of
``--batch`` (what ``likeness index load`` sends per request), each item with a small metadata
object; the three stores take the batches in turn, so a noisy neighbour slows all alike. Then
``--queries`` held-out queries, each sent to every store in turn through ``IndexStore.search``
(k=10, one thread): single-query latency (median, p99) and recall@10 against exact search (numpy).

Part 2, the service (``python -m service``, as ``make serve``) on the milvus backend at a Milvus
Lite server on loopback (``python -m service.milvus_lite_server``), once with LIKENESS_WORKERS=1
and once with 2, each on its own collection seeded with the demo gallery; closed-loop clients send
``/search`` (multipart, k=10), the two servers alternating cell by cell. Server CPU per request:
user + system time of every process of the API server (parent and workers) and, apart, of the
Milvus Lite server, from /proc.

Writes docs/milvus.md and docs/results/milvus.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import DOCS, REPO, make_parser, markdown_table, page_header, write_json
from bench.index_bench import clustered
from bench.load import measure, summarise
from bench.server import ServerProcess, free_port, process_tree_cpu_seconds
from service.index_store import EmbeddedStore, IndexStore, NewItem, StoreOptions
from service.index_store.faiss_index import IndexOptions
from service.index_store.milvus import MilvusStore

K = 10
IDENTITY = {"name": "bench-milvus", "version": "1"}
STORES = ("embedded flat", "embedded hnsw", "milvus lite")


def open_stores(root: Path, dim: int) -> dict[str, IndexStore]:
    stores: dict[str, IndexStore] = {
        "embedded flat": EmbeddedStore(root / "flat", dim, [], IDENTITY, StoreOptions(index=IndexOptions(type="flat"))),
        "embedded hnsw": EmbeddedStore(root / "hnsw", dim, [], IDENTITY, StoreOptions(index=IndexOptions(type="hnsw"))),
        "milvus lite": MilvusStore(str(root / "milvus.db"), "bench", dim, [], IDENTITY),
    }
    for store in stores.values():
        store.open()
    return stores


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_stores(args: argparse.Namespace) -> dict:
    data = clustered(args.n + args.queries, args.dim, args.seed)
    base, queries = data[:args.n], data[args.n:]
    # Exact top-k by inner product (= cosine on unit vectors), the ground truth for recall.
    truth = [set(np.argpartition(-(base @ q), K)[:K].tolist()) for q in queries]
    ids = [f"item-{i:07d}" for i in range(args.n)]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores = open_stores(Path(tmp), args.dim)
        try:
            insert_s = dict.fromkeys(stores, 0.0)
            for start in range(0, args.n, args.batch):
                batch = [NewItem(ids[i], base[i:i + 1], {"cluster_of_ten": i % 10})
                         for i in range(start, min(start + args.batch, args.n))]
                for name, store in stores.items():
                    started = time.perf_counter()
                    store.upsert(batch)
                    insert_s[name] += time.perf_counter() - started
                if (start // args.batch) % 500 == 0:
                    print(f"inserted {start + len(batch):,} / {args.n:,}", flush=True)
            for store in stores.values():
                store.wait_for_maintenance()  # the embedded store's background snapshot, if one is running
                assert store.count() == args.n, (store.backend, store.count())
            for store in stores.values():  # warm-up: first-touch costs are not a query's
                for q in queries[:5]:
                    store.search(q, K)
            latency: dict[str, list[float]] = {name: [] for name in stores}
            found: dict[str, list[set[int]]] = {name: [] for name in stores}
            for q in queries:
                for name, store in stores.items():
                    started = time.perf_counter()
                    hits = store.search(q, K)
                    latency[name].append(time.perf_counter() - started)
                    found[name].append({int(hit.id.removeprefix("item-")) for hit in hits})
            for name in stores:
                recall = float(np.mean([len(f & t) / K for f, t in zip(found[name], truth)]))
                results[name] = {"store": name, "n": args.n, "dim": args.dim, "batch": args.batch,
                                 "insert_items_per_s": args.n / insert_s[name], "insert_s": insert_s[name],
                                 "p50_ms": statistics.median(latency[name]) * 1000,
                                 "p99_ms": percentile_ms(latency[name], 0.99), "recall_at_10": recall,
                                 "params": _params(stores[name])}
                r = results[name]
                print(f"{name:14s} insert {r['insert_items_per_s']:8.0f} items/s  search p50 {r['p50_ms']:7.3f} ms  "
                      f"p99 {r['p99_ms']:7.3f} ms  recall@10 {recall:.4f}", flush=True)
        finally:
            for store in stores.values():
                store.close()
    return results


def _params(store: IndexStore) -> str:
    if isinstance(store, MilvusStore):
        return "AUTOINDEX, IP"
    options = store.options.index
    if options.type == "hnsw":
        return f"M={options.hnsw_m}, efConstruction={options.hnsw_ef_construction}, efSearch={options.hnsw_ef_search}"
    return "exact"


class MilvusLiteServer:
    """``python -m service.milvus_lite_server`` on a free loopback port."""

    def __init__(self, db_file: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.uri = f"http://{self.address}"
        self.log_path = db_file.with_suffix(".log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.milvus_lite_server", str(db_file), "--address", self.address],
            cwd=REPO, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 120) -> MilvusLiteServer:
        deadline = time.monotonic() + timeout
        while "serving" not in self.log_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Milvus Lite server did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_service(args: argparse.Namespace) -> dict:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        milvus = MilvusLiteServer(Path(tmp) / "milvus.db").wait()
        servers = {
            f"{workers} worker{'s' if workers > 1 else ''}": ServerProcess(
                Path(tmp) / f"w{workers}" / "data", LIKENESS_MODEL_PATH=str(args.model),
                LIKENESS_INDEX_BACKEND="milvus", LIKENESS_MILVUS_URI=milvus.uri,
                LIKENESS_MILVUS_COLLECTION=f"likeness_w{workers}", LIKENESS_WORKERS=str(workers))
            for workers in (1, 2)}
        try:
            items = {}
            for name, server in servers.items():
                server.start(timeout=args.start_timeout)
                items[name] = httpx.get(server.url + "/readyz", timeout=30).json()["index_items"]
            for clients in args.clients:
                records: dict[str, list] = {name: [] for name in servers}
                api_cpu = dict.fromkeys(servers, 0.0)
                milvus_cpu = dict.fromkeys(servers, 0.0)
                for round_ in range(args.rounds):
                    for name, server in servers.items():
                        before = milvus.cpu_seconds()
                        got, used = measure(server, clients, args.seconds, seed=round_ * 100 + clients,
                                            mix={"search": 1.0})
                        milvus_cpu[name] += milvus.cpu_seconds() - before
                        records[name] += got
                        api_cpu[name] += used
                for name in servers:
                    seconds = args.seconds * args.rounds
                    summary = summarise(records[name], seconds, api_cpu[name])
                    ok = max(summary["requests"] - summary["errors"], 1)
                    key = f"{name}, {clients} clients"
                    results[key] = {"workers": int(name.split()[0]), "clients": clients, "items": items[name],
                                    **summary,
                                    "api_cpu_ms_per_request": summary["cpu_ms_per_request"],
                                    "milvus_cpu_ms_per_request": milvus_cpu[name] * 1000 / ok}
                    r = results[key]
                    print(f"{key:24s} {r['throughput_rps']:6.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 "
                          f"{r['p99_ms']:7.1f} ms  API CPU {r['api_cpu_ms_per_request']:5.2f} ms/req  Milvus CPU "
                          f"{r['milvus_cpu_ms_per_request']:5.2f} ms/req  errors {r['errors']}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
            milvus.stop()
    return results


def reading(stores: dict, service: dict) -> list[str]:
    """What the tables say, computed from them (so a rerun cannot leave stale prose)."""
    flat, hnsw, lite = (stores[name] for name in STORES)
    lines = [
        f"- **Queries.** Milvus Lite's median single query takes {lite['p50_ms']:.2f} ms, "
        f"{lite['p50_ms'] / flat['p50_ms']:.1f}x the embedded flat index's {flat['p50_ms']:.2f} ms and "
        f"{lite['p50_ms'] / hnsw['p50_ms']:.1f}x HNSW's {hnsw['p50_ms']:.2f} ms (p99: {lite['p99_ms']:.1f}, "
        f"{flat['p99_ms']:.1f} and {hnsw['p99_ms']:.1f} ms). Each Milvus call is a gRPC round trip to the Milvus "
        "engine process and a search through its segments; the embedded store is a FAISS call in the process. "
        f"Recall@10: flat {flat['recall_at_10']:.4f}, HNSW {hnsw['recall_at_10']:.4f}, Milvus Lite "
        f"{lite['recall_at_10']:.4f}"
        f"{' (below 1: Milvus Lite answers AUTOINDEX approximately at this size)' if lite['recall_at_10'] < 1 else ''}"
        ". The milvus backend asks for `AUTOINDEX`; Milvus Lite accepts only FLAT, "
        "IVF_FLAT and AUTOINDEX (it refuses HNSW with \"local mode only support FLAT IVF_FLAT AUTOINDEX\").",
        f"- **Inserts.** In batches of {flat['batch']}: embedded flat {flat['insert_items_per_s']:,.0f} items/s, "
        f"HNSW {hnsw['insert_items_per_s']:,.0f}, Milvus Lite {lite['insert_items_per_s']:,.0f} (each batch is a "
        "`get` for the items' creation times and an `upsert`, two round trips, with strong consistency).",
    ]
    by_clients: dict[int, dict[int, dict]] = {}
    for r in service.values():
        by_clients.setdefault(r["clients"], {})[r["workers"]] = r
    for clients, pair in sorted(by_clients.items()):
        if 1 in pair and 2 in pair:
            one, two = pair[1], pair[2]
            lines.append(
                f"- **Workers, {clients} clients.** 2 workers serve {two['throughput_rps'] / one['throughput_rps']:.2f}x "
                f"the requests per second of 1 ({two['throughput_rps']:,.0f} against {one['throughput_rps']:,.0f}), "
                f"at {two['api_cpu_ms_per_request']:.2f} against {one['api_cpu_ms_per_request']:.2f} ms of API CPU "
                "per request.")
    lines.append(
        "- On this machine the clients, the Milvus Lite server and every worker share the same cores, so a "
        "second worker can only use what the others leave; the gain on a machine with a core per worker is not "
        "measured here, nor Milvus Standalone or Distributed (its own processes on its own machine, with the HNSW "
        "and quantised indexes Milvus Lite does not offer).")
    return lines


def render(stores: dict, service: dict, args: argparse.Namespace) -> str:
    store_rows = [[name, r["params"], f"{r['insert_items_per_s']:,.0f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                   f"{r['recall_at_10']:.4f}"] for name, r in stores.items()]
    service_rows = [[str(r["workers"]), str(r["clients"]), f"{r['requests']:,}", f"{r['throughput_rps']:,.0f}",
                     f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"**{r['api_cpu_ms_per_request']:.2f}**",
                     f"{r['milvus_cpu_ms_per_request']:.2f}", str(r["errors"])] for r in service.values()]
    return "\n".join([
        *page_header("Index backends: embedded (SQLite + FAISS) and Milvus",
                     " Stores, servers and load generator share the cores with whatever else runs: the 1-minute "
                     "load average was " + ", ".join(f"{value:.1f} {when}" for when, value in
                                                     args.load_average.items()) + "."),
        "## The stores, called directly",
        "",
        f"{args.n:,} unit {args.dim}-d vectors around 1,000 random centres (bench/index_bench.py's generator, seed "
        f"{args.seed}), inserted through `IndexStore.upsert` in batches of {args.batch} (what `likeness index load` "
        "sends per request), each item with a one-field metadata object and no thumbnail; the three stores take "
        "the batches in turn. The embedded stores use the service's defaults (a background snapshot every 5,000 "
        "changes; one FAISS thread per search); Milvus Lite 2.5.1 is a file URI (`MilvusStore`, the milvus "
        f"backend's class, strong consistency). Then {args.queries} held-out queries, each sent to every store in "
        "turn through `IndexStore.search` (k=10, no filter); recall@10 against exact inner-product search.",
        "",
        markdown_table(["store", "index", "insert (items/s)", "search p50 (ms)", "search p99 (ms)", "recall@10"],
                       store_rows),
        "",
        "## The service: 1 API worker against 2, on the milvus backend",
        "",
        f"`python -m service` with `LIKENESS_INDEX_BACKEND=milvus` at one Milvus Lite server on loopback "
        "(`python -m service.milvus_lite_server`), `LIKENESS_WORKERS=1` and `=2`, each on its own collection "
        f"holding the demo gallery ({next(iter(service.values()))['items']} items); shipped model, CPU. Closed-loop clients send `/search` "
        f"(multipart PNG, k=10); {args.rounds} rounds of {args.seconds:g} s per server and client count, the two "
        "servers alternating. API CPU: user + system time of every process of the API server (the parent and its "
        "workers, /proc/PID/stat) per successful request; Milvus CPU: the same for the Milvus Lite server.",
        "",
        markdown_table(["workers", "clients", "requests", "req/s", "p50 (ms)", "p99 (ms)", "API CPU (ms/req)",
                        "Milvus CPU (ms/req)", "errors"], service_rows),
        "",
        "## Reading",
        "",
        *reading(stores, service),
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("milvus", __doc__)
    parser.add_argument("--n", type=int, default=100_000, help="vectors in each store")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32, help="items per upsert")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default.onnx")
    parser.add_argument("--seconds", type=float, default=5, help="per cell of the service part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--start-timeout", type=float, default=240,
                        help="seconds each server may take to load (more on a starved machine)")
    parser.add_argument("--output", type=Path, default=DOCS / "milvus.md")
    args = parser.parse_args(argv)
    # The machine is shared: the 1-minute load average before and after each part says how much.
    load = {"at the start": os.getloadavg()[0]}
    stores = run_stores(args)
    load["after the stores"] = os.getloadavg()[0]
    service = run_service(args)
    load["at the end"] = os.getloadavg()[0]
    args.load_average = load
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(stores, service, args))
    write_json(args.output, {"stores": stores, "service": service, "load_average_1min": load})
    print(f"wrote {args.output}")
