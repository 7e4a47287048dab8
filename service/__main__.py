"""``python -m service`` (``likeness serve``): run the API with uvicorn on LIKENESS_HOST:LIKENESS_PORT."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from service.app import create_app, load_state
from service.http_server import uvicorn_options
from service.index_store import IndexLocked, IndexMismatch
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
    parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_json, settings.log_level)
    try:
        # Load before serving: an unusable model or index ends the process here, with one line.
        state = load_state(settings)
    except (ModelLoadError, IndexMismatch, IndexLocked) as exc:
        print(f"likeness: cannot start: {exc}", file=sys.stderr)
        return 1
    # Our middleware writes the access log (with request ids); uvicorn's would repeat it. The
    # protocol options bound the time and bytes a client may take before its headers are complete.
    uvicorn.run(create_app(settings, preloaded=state), host=settings.host, port=settings.port,
                log_config=None, access_log=False, **uvicorn_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
