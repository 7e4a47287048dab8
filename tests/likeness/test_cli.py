"""The installed `likeness` command: it lists its commands, each answers --help, and the service's
commands never import torch (the service image has none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from likeness.cli import COMMANDS

LIKENESS = Path(sys.executable).parent / "likeness"  # the console script pip wrote beside python


def likeness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert LIKENESS.exists(), "the likeness command is not installed: pip install -e . (make test does)"
    return subprocess.run([str(LIKENESS), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_lists_every_command(tmp_path):
    done = likeness("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("positional arguments:")[1]
    for name in ("serve", "index", "train", "export", "evaluate", "demo-data"):
        assert f"\n    {name} " in listed
    assert set(COMMANDS) == {"serve", "index", "train", "export", "evaluate", "demo-data"}


@pytest.mark.parametrize(("command", "shows"), [
    ("serve", "LIKENESS_PORT="),
    ("index", "add-folder"),
    ("train", "--config"),
    ("export", "--checkpoint"),
    ("evaluate", "--split"),
    ("demo-data", "--per-class"),
])
def test_each_command_has_help(command, shows, tmp_path):
    done = likeness(command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ") and shows in done.stdout


def test_without_a_command_it_says_so(tmp_path):
    done = likeness(cwd=tmp_path)
    assert done.returncode == 2 and "required: COMMAND" in done.stderr
    done = likeness("nonsense", cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice: 'nonsense'" in done.stderr


def test_python_m_service_help_does_not_start_a_server(tmp_path):
    done = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m service")


@pytest.mark.parametrize("command", ["serve", "index"])
def test_service_commands_do_not_import_torch(command, tmp_path):
    probe = "\n".join([
        "import sys",
        "from likeness.cli import main",
        "try:",
        f"    main([{command!r}, '--help'])",
        "except SystemExit:",
        "    pass",
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training')))",
    ])
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--near-duplicates", "0", "0 is below the minimum, 1"),
    ("--pairs", "99", "99 is below the minimum, 100"),
    ("--pairs", "many", "'many' is not an integer"),
])
def test_evaluate_refuses_counts_it_cannot_use(flag, value, says, tmp_path):
    """Checked before the model or data is loaded: a one-line usage error, not a traceback."""
    done = likeness("evaluate", "missing.onnx", flag, value, cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
