"""``python -m service.milvus_lite_server FILE [--address 127.0.0.1:19530]``: Milvus Lite as a real
gRPC server on a local port, so several API workers (LIKENESS_WORKERS) can share one index file
on a laptop or in tests. Point the service at it with LIKENESS_MILVUS_URI=http://ADDRESS. For
production use Milvus Standalone or Distributed (docs/scaling.md)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.milvus_lite_server", description=__doc__)
    parser.add_argument("file", help="the Milvus Lite database file (created if missing)")
    parser.add_argument("--address", default="127.0.0.1:19530", help="host:port to listen on")
    args = parser.parse_args(argv)
    from milvus_lite.server import Server

    from service.index_store.milvus import ensure_home_for_milvus_lite

    ensure_home_for_milvus_lite()
    server = Server(args.file, address=args.address)
    if not server.init() or not server.start():
        print(f"milvus-lite: cannot start on {args.address} with {args.file} (in use by another process, or the "
              "port is taken)", file=sys.stderr)
        return 1
    print(f"milvus-lite: serving {args.file} at http://{args.address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    # In server mode the engine does not watch Server's lock file, and stop() kills it with SIGKILL
    # after 2 s: ask it to shut down first.
    if server._p is not None:
        server._p.terminate()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
