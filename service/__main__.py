"""``python -m service`` (``likeness serve``): run the API with uvicorn on LIKENESS_HOST:LIKENESS_PORT,
in LIKENESS_WORKERS processes (``--workers N``), each with its own model session and batcher."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app, load_state
from service.generations import GenerationError
from service.http_server import HEADER_LIMITED_PROTOCOL, uvicorn_options
from service.index_store import IndexLocked, IndexMismatch, IndexUnavailable
from service.model_runner import ModelLoadError
from service.observability import configure_logging
from service.settings import Settings, get_settings


def _settings_help() -> str:
    lines = ["settings (environment variables, or a .env file in the working directory):"]
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else field.default
        default = str(default).lower() if isinstance(default, bool) else default
        lines.append(f"  LIKENESS_{name.upper()}={default}" + (f"  ({field.description})" if field.description else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m service") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, epilog=_settings_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, help="API processes on one port (default: LIKENESS_WORKERS); more "
                        "than 1 needs LIKENESS_INDEX_BACKEND=milvus at a server URI")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"likeness: cannot start: {settings_problem(exc)}", file=sys.stderr)
        return 1
    if args.workers is not None:
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        settings = settings.model_copy(update={"workers": args.workers})
        os.environ["LIKENESS_WORKERS"] = str(args.workers)  # what each worker process reads
    configure_logging(settings.log_json, settings.log_level)
    problem = settings.workers_problem()
    if problem:
        print(f"likeness: cannot start: {problem}", file=sys.stderr)
        return 1
    try:
        # Load before serving: an unusable model or index ends the process here, with one line.
        state = load_state(settings)
    except (ModelLoadError, IndexMismatch, IndexLocked, IndexUnavailable, GenerationError) as exc:
        print(f"likeness: cannot start: {exc}", file=sys.stderr)
        return 1
    # Our middleware writes the access log (with request ids); uvicorn's would repeat it. The
    # protocol options bound the time and bytes a client may take before its headers are complete.
    options = {"host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
               **uvicorn_options()}
    if settings.workers == 1:
        uvicorn.run(create_app(settings, preloaded=state), **options)
        return 0
    # Several processes: the check above has loaded the model and reached the index (and seeded an
    # empty one); each worker now loads its own. uvicorn starts them by import string.
    state.close()
    del state
    options["http"] = HEADER_LIMITED_PROTOCOL
    uvicorn.run("service.app:create_app_from_environment", factory=True, workers=settings.workers, **options)
    return 0


def settings_problem(exc: ValidationError) -> str:
    """A settings error as one line naming the variables: "LIKENESS_PORT: ...; LIKENESS_X: ..."."""
    parts = []
    for error in exc.errors():
        names = [f"LIKENESS_{str(part).upper()}" for part in error.get("loc", ()) if part != "__root__"]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{names[0]}: {message}" if names else message)
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
