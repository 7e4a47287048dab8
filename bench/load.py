"""Load test on loopback: concurrent clients mixing /search, /similarity and /items against the real
service, with dynamic batching on and off, measured in the same run.

    python -m bench load [--seconds 60] [--clients 32] [--rounds 3]

Both servers run from the start; the load alternates between them in ``--rounds`` slices so a
noisy neighbour hits both alike. Each client sends its next request as soon as the previous
answers. Mix: 45% search (k=10), 45% similarity, 10% add (a fresh id each time). Beside req/s and
p50/p99, each configuration's server CPU per request (the server process's user + system time, all
threads, from /proc/PID/stat).
Writes docs/load.md and docs/results/load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from bench.common import DOCS, REPO, make_parser, markdown_table, page_header, write_json
from bench.server import ServerProcess

GALLERY = REPO / "service" / "gallery"
ENDPOINTS = ("search", "similarity", "add")


def _multipart(fields: list[tuple[str, str, bytes | str]]) -> tuple[bytes, str]:
    """Encode multipart/form-data once, up front, so the client spends its CPU on nothing else."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, filename, value in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body = value if isinstance(value, bytes) else value.encode()
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        head += "Content-Type: image/png\r\n\r\n" if filename else "\r\n"
        parts.append(head.encode() + body + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


MIX = {"search": 0.45, "similarity": 0.45, "add": 0.10}


class Workload:
    """Requests drawn with the probabilities in ``mix`` (endpoint name -> share)."""

    def __init__(self, seed: int, mix: dict[str, float] | None = None, gallery: Path = GALLERY) -> None:
        self.rng = random.Random(seed)
        manifest = json.loads((gallery / "manifest.json").read_text())["items"]
        self.images = [(gallery / e["file"]).read_bytes() for e in manifest]
        self.search_json = mix is not None and "search_json" in mix  # /search with a JSON body instead
        mix = mix or MIX
        total = sum(mix.values())
        self.search_below = (mix.get("search", 0) + mix.get("search_json", 0)) / total
        self.similarity_below = self.search_below + mix.get("similarity", 0) / total

    def next(self) -> tuple[str, str, bytes, str]:
        roll = self.rng.random()
        if roll < self.search_below and self.search_json:
            image = base64.b64encode(self.rng.choice(self.images)).decode()
            return "search", "/search", json.dumps({"image": image, "k": 10}).encode(), "application/json"
        if roll < self.search_below:
            body, ctype = _multipart([("image", "q.png", self.rng.choice(self.images)), ("k", "", "10")])
            return "search", "/search", body, ctype
        if roll < self.similarity_below:
            body, ctype = _multipart([("image_a", "a.png", self.rng.choice(self.images)),
                                      ("image_b", "b.png", self.rng.choice(self.images))])
            return "similarity", "/similarity", body, ctype
        body, ctype = _multipart([("image", "n.png", self.rng.choice(self.images)),
                                  ("id", "", f"load-{uuid.uuid4().hex}")])
        return "add", "/items", body, ctype


async def drive(url: str, clients: int, seconds: float, seed: int, mix: dict[str, float] | None = None,
                gallery: Path = GALLERY) -> list[tuple[str, float, int]]:
    """Closed loop: ``clients`` workers, each sending its next request when the last one answers; the
    requests carry the images of ``gallery`` (a folder with a manifest.json, as service/gallery)."""
    records: list[tuple[str, float, int]] = []
    # Workloads (each reads the gallery) before the clock starts; each client sends at least one
    # request, so a cell on a starved machine still measures something.
    workloads = [Workload(seed * 1000 + index, mix, gallery) for index in range(clients)]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def worker(index: int) -> None:
            workload = workloads[index]
            while True:
                name, path, body, ctype = workload.next()
                started = time.perf_counter()
                try:
                    response = await client.post(path, content=body, headers={"content-type": ctype})
                    status = response.status_code
                except httpx.HTTPError as exc:
                    status = 0  # no HTTP answer: say what happened, the table only counts it
                    print(f"load: {name} {path} got no HTTP answer: {type(exc).__name__}: {exc}", file=sys.stderr,
                          flush=True)
                records.append((name, time.perf_counter() - started, status))
                if time.perf_counter() >= deadline:
                    break

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return records


def measure(server: ServerProcess, clients: int, seconds: float, seed: int,
            mix: dict[str, float] | None = None, gallery: Path = GALLERY) -> tuple[list[tuple[str, float, int]], float]:
    """:func:`drive` against ``server``; also returns the CPU seconds the server process used meanwhile
    (all its threads, from /proc), the cost a deployment pays per request whatever the latency."""
    before = server.cpu_seconds()
    records = asyncio.run(drive(server.url, clients, seconds, seed, mix, gallery))
    return records, server.cpu_seconds() - before


def summarise(records: list[tuple[str, float, int]], seconds: float, cpu_seconds: float | None = None) -> dict:
    """Throughput and latency percentiles (all and per endpoint); with ``cpu_seconds`` (the server's
    over the same time), also server CPU milliseconds per successful request."""
    ok = [r for r in records if 200 <= r[2] < 300]
    latencies = sorted(r[1] for r in ok)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    per_endpoint = {}
    for name in ENDPOINTS:
        values = sorted(r[1] for r in ok if r[0] == name)
        per_endpoint[name] = {"requests": len(values), "p50_ms": pct(values, 0.5), "p99_ms": pct(values, 0.99)}
    # Which failures, by status (0: no HTTP answer at all), so an error count can be looked into.
    statuses = Counter(f"{r[0]} {r[2]}" for r in records if not 200 <= r[2] < 300)
    return {"requests": len(records), "errors": len(records) - len(ok), "error_statuses": dict(statuses),
            "throughput_rps": len(ok) / seconds,
            "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99), "endpoints": per_endpoint,
            "cpu_ms_per_request": None if cpu_seconds is None else cpu_seconds * 1000 / max(len(ok), 1)}


def run(seconds: float, clients: int, rounds: int, extra_env: dict[str, str] | None = None) -> dict:
    configs = {"batching on": {"LIKENESS_BATCHING": "1"}, "batching off": {"LIKENESS_BATCHING": "0"}}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {name: ServerProcess(Path(tmp) / name.replace(" ", "-") / "data", **env, **(extra_env or {})).start()
                   for name, env in configs.items()}
        records: dict[str, list] = {name: [] for name in configs}
        cpu = dict.fromkeys(configs, 0.0)
        try:
            for round_ in range(rounds):
                for name, server in servers.items():
                    got, used = measure(server, clients, seconds / rounds, seed=round_)
                    records[name] += got
                    cpu[name] += used
                    print(f"round {round_ + 1}/{rounds} {name}: {len(got)} requests, server CPU {used:.2f} s",
                          flush=True)
        finally:
            for server in servers.values():
                server.stop()
    return {name: summarise(values, seconds, cpu[name]) for name, values in records.items()}


def _errors(result: dict) -> str:
    """'0', or the count with the endpoint and status of each kind, e.g. '2 (add 503: 2)'."""
    kinds = result.get("error_statuses") or {}
    return str(result["errors"]) + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))})" if kinds else "")


def render(results: dict, args: argparse.Namespace) -> str:
    on, off = results["batching on"], results["batching off"]
    rows = [[name, f"{r['requests']:,}", _errors(r), f"{r['throughput_rps']:.0f}", f"{r['p50_ms']:.1f}",
             f"{r['p99_ms']:.1f}", f"{r['cpu_ms_per_request']:.2f}"] + [f"{r['endpoints'][e]['p50_ms']:.1f} / {r['endpoints'][e]['p99_ms']:.1f}"
                                      for e in ENDPOINTS]
            for name, r in results.items()]
    ratio = on["throughput_rps"] / off["throughput_rps"]
    return "\n".join([
        *page_header("Load test", " Server and load generator share the machine's cores."),
        f"{args.clients} concurrent clients (closed loop), {args.seconds:g} s per configuration in {args.rounds} "
        "alternating slices; 45% `/search` (k=10, 300 indexed items), 45% `/similarity`, 10% `/items` (add). "
        "The shipped default model, flat index, CPU. Server CPU is the server process's user + system time "
        "(all threads, /proc/PID/stat) over the run, per successful request.",
        "",
        markdown_table(["server", "requests", "errors", "throughput (req/s)", "p50 (ms)", "p99 (ms)",
                        "server CPU (ms/req)", "search p50/p99", "similarity p50/p99", "add p50/p99"], rows),
        "",
        f"Throughput with batching / without: **{ratio:.2f}x** (target 3x).",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("load", __doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=DOCS / "load.md")
    args = parser.parse_args(argv)
    results = run(args.seconds, args.clients, args.rounds)
    for name, r in results.items():
        print(f"{name}: {r['throughput_rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
              f"{_errors(r)} errors", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results, args))
    write_json(args.output, {"results": results})
    print(f"wrote {args.output}")
