"""Server CPU per request, side by side in one run: this tree, an older commit, and two baselines.

    python -m bench serving-cpu [--baseline REV] [--seconds 4] [--clients 8 32]

The servers all run from the start, on the shipped model and the demo gallery (as ``make serve``),
and the load alternates between them cell by cell, so a noisy neighbour hits all alike:

- ``likeness``: this working tree (``python -m service``);
- ``likeness (LABEL)``: this working tree serving another model file (``--extra-model LABEL=PATH``,
  e.g. the int8 graph);
- ``likeness@REV``: the service code of commit REV (``git archive`` of service/ and contract/ into a
  temp dir), the before-figure rerun on the same machine in the same minutes, on the same model or,
  with ``--baseline-model``, on the model that commit shipped (``models/default.onnx`` of REV): the
  before-figure of a change to both;
- ``plain``: the plain FastAPI app of issue 21 (multipart in, Pillow, one ONNX Runtime call per
  image with spinning threads off, JSON out; ``bench/naive_server.py --runtime onnx``);
- ``naive``: the PyTorch-eager tutorial server (``bench/naive_server.py``).

Each cell is one endpoint at one client count, closed loop; server CPU is the server process's
user + system time, all threads, from /proc/PID/stat, per successful request. Where that time
goes: the py-spy command in docs/serving.md. Writes docs/serving-cpu.md and
docs/results/serving-cpu.json.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bench.common import DOCS, REPO, make_parser, markdown_table, page_header, write_json
from bench.load import measure, summarise
from bench.server import ServerProcess

ENDPOINTS = ("similarity", "search", "search_json")


def checkout(rev: str, into: Path) -> Path:
    """The service and contract code of ``rev`` in ``into`` (the repository itself is not touched)."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "service", "contract"], cwd=REPO,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def servers(tmp: Path, model: Path, baseline: str | None, gallery_items: int,
            extra_models: dict[str, Path] | None = None, baseline_model: bool = False,
            unbatched: bool = False, plain_baselines: bool = True) -> dict[str, ServerProcess]:
    env = {"LIKENESS_MODEL_PATH": str(model)}
    out = {"likeness": ServerProcess(tmp / "likeness" / "data", **env)}
    for label, path in (extra_models or {}).items():  # this tree serving another model file
        out[f"likeness ({label})"] = ServerProcess(tmp / f"likeness-{label}" / "data", LIKENESS_MODEL_PATH=str(path))
    if unbatched:  # the gain of dynamic batching: the same model, one inference call per request
        for label, path in {"": model, **(extra_models or {})}.items():
            name = f"likeness ({label + ', ' if label else ''}unbatched)"
            out[name] = ServerProcess(tmp / f"likeness-{label}-unbatched" / "data", LIKENESS_MODEL_PATH=str(path),
                                      LIKENESS_BATCHING="false")
    if baseline:
        code = checkout(baseline, tmp / "baseline-code")
        baseline_env = env
        if baseline_model:
            shipped = subprocess.run(["git", "show", f"{baseline}:models/{model.name}"], cwd=REPO, capture_output=True,
                                     check=True).stdout
            (tmp / "baseline-model.onnx").write_bytes(shipped)
            baseline_env = {"LIKENESS_MODEL_PATH": str(tmp / "baseline-model.onnx")}
        out[f"likeness@{baseline}"] = ServerProcess(tmp / "baseline" / "data", cwd=code, **baseline_env)
    for name, runtime in (("plain", "onnx"), ("naive", "torch")) if plain_baselines else ():
        out[name] = ServerProcess(tmp / name / "data", command=[
            "bench.naive_server", "--model", str(model), "--items", str(gallery_items), "--port", "{port}",
            "--runtime", runtime])
    return out


def run(args: argparse.Namespace) -> dict:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs = servers(Path(tmp), args.model, args.baseline, args.gallery_items, dict(args.extra_model),
                        args.baseline_model, args.unbatched, not args.no_plain)
        for server in procs.values():
            server.start(timeout=args.start_timeout)
        try:
            for endpoint in args.endpoints:
                for clients in args.clients:
                    for name, server in procs.items():
                        if endpoint == "search_json" and not (name == "likeness" or name.startswith("likeness (")):
                            continue  # the others take multipart only
                        records, cpu = measure(server, clients, args.seconds, seed=clients, mix={endpoint: 1.0},
                                               gallery=args.gallery)
                        key = f"{name} {endpoint} {clients}"
                        results[key] = {"server": name, "endpoint": endpoint, "clients": clients,
                                        **summarise(records, args.seconds, cpu)}
                        r = results[key]
                        print(f"{key:40s} {r['throughput_rps']:6.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 "
                              f"{r['p99_ms']:7.1f} ms  CPU {r['cpu_ms_per_request']:5.2f} ms/req  errors "
                              f"{r['errors']}", flush=True)
        finally:
            for server in procs.values():
                server.stop()
    return results


def render(results: dict, args: argparse.Namespace) -> str:
    rows = [[r["server"], f"`/{r['endpoint'].replace('_json', '')}`" + (" (JSON)" if "json" in r["endpoint"] else ""),
             str(r["clients"]), f"{r['throughput_rps']:,.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
             f"**{r['cpu_ms_per_request']:.2f}**", str(r["errors"])] for r in results.values()]
    note = f" {args.note}" if args.note else ""
    return "\n".join([
        *page_header("Server CPU per request", f" Load generator and servers share the cores.{note}"),
        f"Model `{_shown(args.model)}`, the clients sending the {_gallery_size(args.gallery)} images of "
        f"`{_shown(args.gallery)}`; the service seeded with its shipped gallery for that model"
        f"{'' if args.no_plain else f', the plain baselines with {args.gallery_items} items'}; flat index, "
        f"closed-loop clients, {args.seconds:g} s "
        "per cell, servers alternating cell by cell. Server CPU: user + system time of the server process, all "
        "threads (/proc/PID/stat), per successful request. `likeness@REV` is the service code of that commit on "
        f"{'the model that commit shipped' if args.baseline_model else 'the same model'}; `likeness (LABEL)` is this tree serving another model file (`--extra-model`), "
        "`... unbatched)` the same with dynamic batching off (`--unbatched`, `LIKENESS_BATCHING=false`); "
        "`plain` is a plain FastAPI app doing the core work (multipart, Pillow, one ONNX Runtime call per image, "
        "spinning off); `naive` is PyTorch eager (bench/naive_server.py).",
        "",
        markdown_table(["server", "endpoint", "clients", "req/s", "p50 (ms)", "p99 (ms)", "server CPU (ms/req)",
                        "errors"], rows),
        "",
    ])


def _gallery_size(gallery: Path) -> int:
    return len(json.loads((gallery / "manifest.json").read_text())["items"])


def _shown(path: Path) -> str:
    """A path as the page shows it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _label_and_path(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=PATH of a model file")
    return label, Path(path)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("serving-cpu", __doc__)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default.onnx")
    parser.add_argument("--baseline", help="a commit whose service code runs beside this tree's")
    parser.add_argument("--baseline-model", action="store_true", help="the baseline serves the model file of the "
                        "same name that its commit shipped (a change to the code and the model together)")
    parser.add_argument("--extra-model", action="append", default=[], type=_label_and_path, metavar="LABEL=PATH",
                        help="this tree serving another model file too, as 'likeness (LABEL)' (repeatable), "
                             "e.g. int8=models/default-int8.onnx")
    parser.add_argument("--unbatched", action="store_true", help="each likeness server also runs with batching off "
                        "(LIKENESS_BATCHING=false), as 'likeness (unbatched)': what dynamic batching gains")
    parser.add_argument("--no-plain", action="store_true", help="leave out the plain and naive baselines")
    parser.add_argument("--gallery", type=Path, help="the images the clients send (a folder with a manifest.json; "
                        "default: the gallery the service seeds for --model, service/gallery-photos for a photo model)")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--endpoints", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS))
    parser.add_argument("--gallery-items", type=int, default=300, help="items the baselines search (the gallery's)")
    parser.add_argument("--start-timeout", type=float, default=180,
                        help="seconds each server may take to load (more on a starved machine)")
    parser.add_argument("--note", default="", help="a sentence about the conditions, added to the page")
    parser.add_argument("--output", type=Path, default=DOCS / "serving-cpu.md")
    args = parser.parse_args(argv)
    if args.gallery is None:
        from bench.serving import load_spec
        from service.gallery import shipped_gallery

        args.gallery = shipped_gallery(load_spec(args.model).input)
    results = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results, args))
    write_json(args.output, {"results": results, "baseline": args.baseline, "note": args.note})
    print(f"wrote {args.output}")
