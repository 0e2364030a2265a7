"""The demo's options: what ``robot-daemon demo`` was asked to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoOptions:
    """What ``robot-daemon demo`` was asked to do (see its ``--help``)."""

    model: Path
    workdir: Path
    bag: Path | None = None
    duration_s: float = 60.0
    rate: float = 1.0
    seed: int = 7
    png: Path | None = None
    live: bool = True

    @property
    def default_bag(self) -> Path:
        return self.workdir / f"demo-{self.seed}-{self.duration_s:g}s.mcap"

    @property
    def png_path(self) -> Path:
        return self.png if self.png is not None else self.workdir / "demo.png"
