"""What ``likeness export`` is asked for: its flags, checked before any long step, and the
command line that reproduces them (the card prints it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.export_record import ExportError

QUANTIZATIONS = ("int8",)


@dataclass
class ExportOptions:
    """What ``likeness export`` was asked for (its flags, one field each)."""

    checkpoint: str | Path
    output: str | Path
    name: str | None = None
    version: str | None = None
    data_dir: str | None = None
    command: list[str] | None = None  # the command line as run; rebuilt from the fields when None
    pairs: int | None = None
    open_set_checkpoint: str | Path | None = None
    device: str = "auto"
    quantize: str | None = None
    pixel_pca: int = 0
    pixel_share: float = 0.0
    pixel_side: int = 0
    instance_share: float | None = None
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Refuse what cannot work before any long step (one line each)."""
        self.notes = [note.strip() for note in self.notes or []]
        if not all(self.notes):
            raise ExportError("--note: a card note needs some text")
        if (self.pixel_pca or self.pixel_share) and not (self.pixel_pca > 0 and 0 < self.pixel_share < 1):
            raise ExportError(f"--pixel-pca {self.pixel_pca} --pixel-share {self.pixel_share}: the pixel subspace "
                              "needs both, dimensions > 0 and a share in (0, 1)")
        if self.pixel_side and not self.pixel_pca:
            raise ExportError(f"--pixel-side {self.pixel_side}: a pixel layout needs --pixel-pca and --pixel-share")
        if self.pixel_side < 0:
            raise ExportError(f"--pixel-side {self.pixel_side}: a side is a positive number of blocks")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ExportError(f"unknown quantization {self.quantize!r}; choose from {', '.join(QUANTIZATIONS)}")
        if self.instance_share is not None and not 0 <= self.instance_share <= 1:
            raise ExportError(f"--instance-share {self.instance_share}: a share is in [0, 1]")

    def command_line(self) -> list[str]:
        """The command as run, or, called as a library, the equivalent command line."""
        if self.command is not None:
            return self.command
        command = ["python", "-m", "training", "export", "--checkpoint", str(self.checkpoint), "--output",
                   str(self.output)]
        for flag, value in (("--name", self.name), ("--version", self.version), ("--data-dir", self.data_dir),
                            ("--open-set-checkpoint", self.open_set_checkpoint),
                            ("--device", self.device if self.device != "auto" else None), ("--quantize", self.quantize),
                            ("--pixel-pca", self.pixel_pca), ("--pixel-share", self.pixel_share),
                            ("--pixel-side", self.pixel_side),
                            ("--instance-share", self.instance_share)):
            if value or (flag == "--instance-share" and value is not None):
                command += [flag, str(value)]
        for note in self.notes:
            command += ["--note", note]
        return command


def pixel_subspace(options: ExportOptions) -> tuple[int, float, int]:
    """The pixel subspace asked for, as :func:`with_pixel_pca` takes it: dims, share, side."""
    return options.pixel_pca, options.pixel_share, options.pixel_side


__all__ = ["QUANTIZATIONS", "ExportOptions", "pixel_subspace"]
