"""A run's logs: one line per step (steps.jsonl), one per epoch (metrics.jsonl), and TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Per-epoch metrics to ``metrics.jsonl``, per-step loss to ``steps.jsonl``, and TensorBoard when
    it is installed."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.steps_path = run_dir / "steps.jsonl"
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # TensorBoard is optional; the JSONL log is the record.
                self.writer = None

    def restart_from(self, history: list[dict[str, Any]], step: int) -> None:
        """After a resume, make the logs say exactly what the checkpoint holds (no epoch twice)."""
        if not self.enabled:
            return
        self.path.write_text("".join(json.dumps(row) + "\n" for row in history))
        if self.steps_path.is_file():
            kept = [line for line in self.steps_path.read_text().splitlines() if json.loads(line)["step"] <= step]
            self.steps_path.write_text("".join(line + "\n" for line in kept))

    def step(self, step: int, loss: float) -> None:
        if self.enabled:
            with self.steps_path.open("a") as handle:
                handle.write(json.dumps({"step": step, "loss": round(loss, 6)}) + "\n")

    def write(self, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({"epoch": epoch, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, epoch)
            self.writer.flush()


