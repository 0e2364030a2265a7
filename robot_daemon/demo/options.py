"""The demo's options: what ``robot-daemon demo`` was asked to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Seconds of driving the demo simulates unless told otherwise.
SIM_DURATION_S: Final = 60.0


@dataclass(frozen=True)
class DemoOptions:
    """What ``robot-daemon demo`` was asked to do (see its ``--help``)."""

    model: Path
    workdir: Path
    bag: Path | None = None
    #: Seconds to simulate (default :data:`SIM_DURATION_S`), or with ``bag`` the seconds
    #: of it to play (default: all of it).
    duration_s: float | None = None
    rate: float = 1.0
    seed: int = 13
    png: Path | None = None
    live: bool = True

    @property
    def sim_duration_s(self) -> float:
        """Seconds of driving to simulate when no ``bag`` is given."""
        return SIM_DURATION_S if self.duration_s is None else self.duration_s

    @property
    def default_bag(self) -> Path:
        return self.workdir / f"demo-{self.seed}-{self.sim_duration_s:g}s.mcap"

    @property
    def png_path(self) -> Path:
        return self.png if self.png is not None else self.workdir / "demo.png"
