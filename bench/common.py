"""What every benchmark shares: the machine description, timing, and writing results."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    }


def machine_line() -> str:
    m = machine()
    return f"{m['cores']} cores, {m['cpu']}, Python {m['python']}, measured {m['date']}"


def command_line() -> str:
    return "python -m bench " + shlex.join(sys.argv[1:])


def page_header(title: str, machine_note: str = "") -> list[str]:
    """The top of every benchmark page: title, the exact command, and the machine."""
    return [f"# {title}", "", "```", command_line(), "```", "", f"Machine: {machine_line()}.{machine_note}", ""]


def make_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"python -m bench {name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def median_rate(fn: Callable[[], int], repeats: int, min_seconds: float = 0.3) -> float:
    """Items per second: the median over ``repeats`` timed rounds of ``fn`` (which returns items done)."""
    rates = []
    for _ in range(repeats):
        items, started = 0, time.perf_counter()
        while True:
            items += fn()
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        rates.append(items / elapsed)
    return statistics.median(rates)


def interleaved_rates(fns: dict[str, Callable[[], int]], repeats: int, min_seconds: float = 0.3) -> dict[str, float]:
    """Like :func:`median_rate` for several candidates, alternating them round by round, so a noisy
    neighbour on a shared machine hits all of them alike and their ratios stay meaningful."""
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rates[name].append(median_rate(fn, 1, min_seconds))
    return {name: statistics.median(values) for name, values in rates.items()}


def train_or_reuse(config, resume: bool = False) -> Path:
    """The run directory of ``config``: a finished run there (``summary.json`` written) is reused,
    so a long benchmark given ``--work-dir`` can be interrupted and rerun without retraining.

    A finished run of another configuration in that folder is an error, not a silent reuse (an
    entry whose overrides changed keeps its folder name). Only ``output_dir`` (a work folder may
    have moved) and ``optim.threads`` (it sets the speed, not the recipe; the run's own count stays
    in its config.toml) may differ.
    """
    import tomllib

    from training.config import TrainConfig
    from training.trainer import train

    if (config.run_dir / "summary.json").is_file():
        saved = TrainConfig.model_validate(tomllib.loads((config.run_dir / "config.toml").read_text()))
        ignored = {"output_dir": True, "optim": {"threads"}}
        if saved.model_dump(exclude=ignored) != config.model_dump(exclude=ignored):
            raise SystemExit(f"{config.run_dir} holds a run of another configuration; "
                             "remove it or use another --work-dir")
        return config.run_dir
    return train(config, resume=resume, progress=False)


def write_json(markdown: Path, payload: dict) -> Path:
    """Raw results beside a benchmark's page: docs/X.md -> docs/results/X.json, headed by the
    command that made them and the machine."""
    path = markdown.parent / "results" / f"{markdown.stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command_line(), "machine": machine_line(), **payload}, indent=2) + "\n")
    return path


def slug(name: str) -> str:
    """A benchmark entry's name as a folder or file name: every non-alphanumeric character -> '-'."""
    return "".join(c if c.isalnum() else "-" for c in name)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
