"""A model upgrade on a running service: how fast `likeness index migrate` re-embeds the kept
originals, and what it costs the requests served meanwhile.

    python -m bench migration [--items 3000] [--clients 8] [--to models/csn.onnx]

One service (the embedded index, the shipped default model) holds ``--items`` Fashion-MNIST test
images. A closed loop of ``--clients`` clients (the load benchmark's mix: search, similarity, add)
runs for ``--seconds`` without a migration, then again while `likeness index migrate --model TO`
runs in another process, then once more after it switched (``--switch``). Reported: items
re-embedded per second, and each phase's req/s, p50 and p99. Writes docs/migration.md and
docs/results/migration.json.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from bench.common import DOCS, REPO, make_parser, markdown_table, page_header, write_json
from bench.load import drive, summarise
from bench.server import ServerProcess
from training.data.sources import load_raw


def png_bytes(array) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


BATCH = 64  # LIKENESS_MAX_IMAGES_PER_REQUEST's default


def add_items(url: str, count: int) -> None:
    _, test = load_raw("fashion-mnist")
    with httpx.Client(base_url=url, timeout=300) as client:
        for start in range(0, count, BATCH):
            ids = [f"item-{i:05d}" for i in range(start, min(start + BATCH, count))]
            files = [("image", (f"{i}.png", png_bytes(test.images[int(i[5:])][:, :, 0]))) for i in ids]
            response = client.post("/items", files=files, data={"id": ids})
            response.raise_for_status()


def phase(url: str, clients: int, seconds: float, seed: int) -> dict:
    records = asyncio.run(drive(url, clients, seconds, seed))
    return summarise(records, seconds)


HOW = [
    "## How an upgrade runs", "",
    "`likeness index migrate --model NEW.onnx --url URL [--switch]` (service/jobs.py) asks the service which live "
    "items the new generation lacks (`GET /index/migration/pending`), reads their kept originals, embeds them with "
    "the new model in its own process and sends the vectors back (`POST /index/migration/items`). While the "
    "generation exists, every add and delete lands in both. Killed at any point, the same command goes on where it "
    "stopped. `--switch` checks that the generation holds every live item in its live version and serves it in one "
    "step; until `likeness index prune`, `model=` on `/search` and `/similarity` answers from the previous one. "
    "At a restart, `LIKENESS_MODEL_PATH=NEW.onnx` serves the complete generation. The design: service/migration.py; "
    "the endpoints: [api.md](api.md).", ""]


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("migration", __doc__)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--to", type=Path, default=REPO / "models" / "csn.onnx")
    parser.add_argument("--output", type=Path, default=DOCS / "migration.md")
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", LIKENESS_SEED_GALLERY="true")
        server.start(timeout=300)
        try:
            add_items(server.url, args.items)
            results["without a migration"] = phase(server.url, args.clients, args.seconds, seed=1)
            command = [sys.executable, "-m", "service.jobs", "migrate", "--model", str(args.to), "--url", server.url,
                       "--switch"]
            started = time.perf_counter()
            migration = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True)
            during: dict = {}
            loader = threading.Thread(target=lambda: during.update(phase(server.url, args.clients, args.seconds, 2)))
            loader.start()
            out, _ = migration.communicate(timeout=3600)
            seconds = time.perf_counter() - started
            loader.join()
            results["during the migration"] = during
            results["after the switch"] = phase(server.url, args.clients, args.seconds, seed=3)
        finally:
            server.stop()
    done = json.loads(out)
    rate = done["embedded_here"] / max(done["seconds"], 1e-9)
    rows = [[name, f"{r['throughput_rps']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["errors"])]
            for name, r in results.items()]
    lines = page_header("A model upgrade on a running service") + [
        f"{args.items:,} Fashion-MNIST test images (and the demo gallery) in the embedded index, served by the default "
        f"model; `likeness index migrate --model {args.to.name} --switch` re-embedded {done['embedded_here']:,} kept "
        f"originals in {done['seconds']:.1f} s, **{rate:.0f} items/s** ({seconds:.1f} s from start to switch, the "
        f"writes of the load mirrored meanwhile), the service and the migration sharing the machine's cores. The load: "
        f"{args.clients} closed-loop clients, `python -m bench load`'s mix (search, similarity, add), "
        f"{args.seconds:g} s a phase.", "",
        markdown_table(["phase", "req/s", "p50 (ms)", "p99 (ms)", "errors"], rows), "", *HOW]
    args.output.write_text("\n".join(lines))
    write_json(args.output, {"items": args.items, "migration": done, "items_per_second": rate, "phases": results})
    print(f"wrote {args.output}")
