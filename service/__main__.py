"""``python -m service``: run the API with uvicorn on LIKENESS_HOST:LIKENESS_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn

from service.app import create_app, load_state
from service.index_store import IndexMismatch
from service.model_runner import ModelLoadError
from service.settings import get_settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    try:
        # Load before serving: an unusable model or index ends the process here, with one line.
        state = load_state(settings)
    except (ModelLoadError, IndexMismatch) as exc:
        print(f"likeness: cannot start: {exc}", file=sys.stderr)
        return 1
    uvicorn.run(create_app(settings, preloaded=state), host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
