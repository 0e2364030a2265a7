"""Captured frames for the capture tests: what the daemon's tick would hand over."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from robot_daemon.capture import CapturedFrame

D, C = 16, 8
#: A wall time in ns (2025-12-06): the bags' log times.
T0_NS = 1_765_000_000_000_000_000


def captured(n: int, *, start: int = 0, labelled: bool = True, shadow: bool = True,
             reasons: tuple[str, ...] = ("uncertain",), seed: int = 0) -> list[CapturedFrame]:
    """``n`` captured frames of d = 16, c = 8 at 50 Hz, seq ``start``, ``start + 1``, ..."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)).astype(np.float32)
    P = rng.random((n, C), dtype=np.float32)
    Q = rng.random((n, C), dtype=np.float32)
    frames = []
    for i in range(n):
        seq = start + i
        y = (P[i] > 0.5).astype(np.uint8) if labelled else None
        frames.append(CapturedFrame(
            seq=seq, t=100.0 + seq / 50, x=X[i], src="lidar", recv_ns=T0_NS + seq * 20_000_000,
            p=P[i], model="serving-1", shadow_p=Q[i] if shadow else None,
            shadow_model="shadow-2" if shadow else None, y=y, reasons=reasons, tick=seq))
    return frames


def on_disk(directory: Path) -> int:
    """Bytes of the files in ``directory`` now; a file renamed or deleted between the
    listing and its stat (the writer rotating meanwhile) is skipped: it is counted under
    its new name or is gone."""
    total = 0
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total
