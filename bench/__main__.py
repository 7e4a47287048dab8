"""``python -m bench NAME [options]``: run one benchmark (``python -m bench --help`` lists them)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "nsl-ablation": "bench.nsl_ablation",
    "similarity-ablation": "bench.similarity_ablation",
    "instance-share": "bench.instance_share",
    "pixel-share": "bench.pixel_share",
    "nsl-kernels": "bench.nsl_kernels",
    "index": "bench.index_bench",
    "milvus": "bench.milvus_bench",
    "load": "bench.load",
    "openset": "bench.openset",
    "csn": "bench.csn",
    "quality": "bench.quality",
    "dedup": "bench.dedup",
    "pixel-check": "bench.pixel_check",
    "migration": "bench.migration",
    "photos": "bench.photos",
    "serving": "bench.serving",
    "serving-cpu": "bench.serving_cpu",
    "all": "bench.all",
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or sys.argv[1] not in BENCHMARKS:
        print("usage: python -m bench {" + ",".join(BENCHMARKS) + "} [options]", file=sys.stderr)
        return 0 if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help") else 2
    name = sys.argv[1]
    importlib.import_module(BENCHMARKS[name]).main(sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
