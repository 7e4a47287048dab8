"""``likeness COMMAND``: the installed command (``[project.scripts]`` in pyproject.toml).

    likeness serve                                the API, configured by LIKENESS_* variables
    likeness index stats|rebuild|add-folder DIR|load --url URL DIR
    likeness train --config default               (the train extra)
    likeness export --checkpoint runs/NAME/best.pt --output models/NAME.onnx
    likeness evaluate models/NAME.onnx
    likeness demo-data DIR                        a demo shop catalogue to try your-own-data (docs/own-data.md)

Each command hands its arguments to the entry point that already parses them (``python -m service``,
``python -m service.jobs``, ``python -m training``), and imports it only when it runs: the service
image has no torch and the training image no FastAPI, yet both install this command.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version

# name: (summary for --help, (the extra it needs, modules of that extra it imports))
SERVICE = ("service", ["service", "fastapi", "uvicorn", "onnxruntime", "faiss"])
TRAIN = ("train", ["training", "torch", "onnx", "onnxruntime"])
COMMANDS = {
    "serve": ("start the API on LIKENESS_HOST:LIKENESS_PORT", SERVICE),
    "index": ("index batch jobs: rebuild, add-folder, load, stats", SERVICE),
    "train": ("train an embedding model from a TOML config", TRAIN),
    "export": ("export a checkpoint to ONNX with its spec and model card", TRAIN),
    "evaluate": ("evaluate an exported ONNX model (or a checkpoint)", TRAIN),
    "demo-data": ("write a demo shop catalogue of RGB photos to try training on your own data", TRAIN),
}


class _CommandsFormatter(argparse.HelpFormatter):
    """argparse measures command names one indent short of where it prints them, so the longest
    (demo-data) would go on a line of its own; this measures them where they are printed."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        for command in getattr(action, "_choices_actions", []):
            self._action_max_length = max(self._action_max_length, len(command.dest) + self._current_indent + 2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="likeness", description="Image similarity: serve a model, index images, "
                                     "train, export and evaluate models.",
                                     epilog="`likeness COMMAND --help` shows each command's options.",
                                     formatter_class=_CommandsFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, _) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def _version() -> str:
    try:
        return version("likeness")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _missing_extra(command: str) -> str | None:
    """One line naming the extra to install, when the command's modules are not importable."""
    extra, modules = COMMANDS[command][1]
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (f"likeness {command}: needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install 'likeness[{extra}]'")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only the first word is ours; everything after it belongs to the command's own parser.
    command = _parser().parse_args(argv[:1]).command
    rest = argv[1:]
    problem = _missing_extra(command)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if command == "serve":
        from service.__main__ import main as serve

        return serve(rest, prog="likeness serve")
    if command == "index":
        from service.jobs import main as index

        return index(rest, prog="likeness index")
    from training.cli import main as training

    return training([command, *rest], prog="likeness")
