"""Where a request's server CPU goes: py-spy samples the running service under load.

    python -m bench.serving_profile [--endpoint search] [--clients 8] [--seconds 5] [--rev REV]

Starts the service (this tree, or the service code of commit REV) on the shipped model and the demo
gallery, attaches ``py-spy record`` to it, drives one endpoint with closed-loop clients, and prints:

- the server's CPU per request (all threads, /proc/PID/stat) and how it splits between its threads
  (the event loop is the thread whose id is the process id; ONNX Runtime's own pool threads are
  invisible to py-spy, so only /proc shows what their spinning costs);
- the functions holding the most CPU samples (inclusive, with the share of all samples), so each
  share times the per-request CPU is roughly its milliseconds per request.

py-spy needs to be installed (``pip install py-spy``; the dev extra has it) and allowed to ptrace
the server (same user; in a container, CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.common import REPO
from bench.load import measure
from bench.server import ServerProcess
from bench.serving_cpu import checkout


def thread_cpu(pid: int) -> dict[int, float]:
    """utime + stime (ticks) of every thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = int(fields[11]) + int(fields[12])
    return out


def summarise_stacks(raw: Path) -> tuple[int, Counter, Counter, set[int]]:
    """Total samples, inclusive and self sample counts per function, and the native thread ids seen."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    tids: set[int] = set()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        # With --threads the first frame names the thread: 'thread (0x7f..)' or with --native ids.
        if frames and frames[0].startswith("thread ("):
            head = frames.pop(0)
            for part in head.replace("(", " ").replace(")", " ").split():
                if part.isdigit():
                    tids.add(int(part))
        names = [_short(frame) for frame in frames if frame]
        total += n
        for name in set(names):
            inclusive[name] += n
        if names:
            own[names[-1]] += n
    return total, inclusive, own, tids


def _short(frame: str) -> str:
    """'function (path/to/module.py:123)' -> 'function (module.py)' so lines of one function merge."""
    name, _, where = frame.partition(" (")
    module = where.rstrip(")").rsplit(":", 1)[0]
    for prefix in (str(REPO) + "/", "/usr/lib/python3", "site-packages/"):
        if prefix in module:
            module = module.split(prefix, 1)[1]
    return f"{name} ({module})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default.onnx")
    parser.add_argument("--endpoint", default="search", choices=["search", "similarity", "search_json"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--rev", help="profile the service code of this commit instead of the working tree")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--output", type=Path, help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = checkout(args.rev, Path(tmp) / "code") if args.rev else REPO
        server = ServerProcess(Path(tmp) / "data", cwd=cwd, LIKENESS_MODEL_PATH=str(args.model)).start(timeout=180)
        raw = args.output or Path(tmp) / "stacks.txt"
        try:
            pid = server.process.pid
            before = thread_cpu(pid)
            recorder = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                                         "--rate", str(args.rate), "--format", "raw", "--threads", "--nonblocking",
                                         "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            records, cpu = measure(server, args.clients, args.seconds, seed=1, mix={args.endpoint: 1.0})
            after = thread_cpu(pid)
            _, err = recorder.communicate(timeout=120)
            if recorder.returncode != 0:
                raise SystemExit(f"py-spy failed: {err.decode()[-2000:]}")
        finally:
            server.stop()
        total, inclusive, own, _ = summarise_stacks(raw)  # before the temp folder, and py-spy's output, go
    ok = sum(1 for r in records if 200 <= r[2] < 300)
    ticks = {tid: after.get(tid, 0) - before.get(tid, 0) for tid in after}
    busy = sorted(((t, tid) for tid, t in ticks.items() if t > 0), reverse=True)
    per_request = cpu * 1000 / max(ok, 1)
    print(f"{args.endpoint}, {args.clients} clients, {args.seconds:g} s, code {args.rev or 'working tree'}: "
          f"{ok} requests, server CPU {per_request:.2f} ms/request")
    tick_total = sum(t for t, _ in busy) or 1
    print("threads by CPU (tid = pid is the event loop):")
    for t, tid in busy[:8]:
        print(f"  tid {tid}{' (main)' if tid == pid else ''}: {100 * t / tick_total:5.1f}% "
              f"= {per_request * t / tick_total:.2f} ms/request")
    print(f"py-spy: {total} samples of Python threads while busy; top functions, inclusive (self):")
    for name, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}% ({100 * own[name] / total:4.1f}%)  {name}")


if __name__ == "__main__":
    main()
