"""``python -m bench all``: every benchmark with its documented defaults, one after another.

Each writes its own page under ``docs/`` (table, plot where there is one, the exact command and
the machine) and its raw numbers under ``docs/results/``; ``docs/benchmarks.md`` summarises them.
The training benchmarks (nsl-ablation, openset, csn) take hours on 2 cores; ``--skip`` leaves
some out and ``--only`` runs a subset.
"""

from __future__ import annotations

import importlib
import sys
import time

from bench.common import make_parser

# Fast first, so a partial run still refreshes the serving and quality pages.
ORDER = ["quality", "nsl-kernels", "serving", "load", "index", "csn", "openset", "nsl-ablation"]


def main(argv: list[str] | None = None) -> None:
    from bench.__main__ import BENCHMARKS

    parser = make_parser("all", __doc__)
    parser.add_argument("--only", nargs="+", choices=ORDER)
    parser.add_argument("--skip", nargs="+", choices=ORDER, default=[])
    args = parser.parse_args(argv)
    for name in args.only or ORDER:
        if name in args.skip:
            continue
        started = time.perf_counter()
        print(f"== python -m bench {name}", file=sys.stderr, flush=True)
        importlib.import_module(BENCHMARKS[name]).main([])
        print(f"== {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
