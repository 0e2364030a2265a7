"""What the demo saw while the bag played: frames sent, ``pred`` and ``status`` messages
received, and the latencies between them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from robot_daemon import wire
from robot_daemon.demo.recording import BagContents
from robot_daemon.demo.view import LiveView
from robot_daemon.errors import WireError
from robot_daemon.liveview import RateMeter
from robot_daemon.model import Model

_MS: Final = 1e-6


class Stream:
    """What went out and what came back, by bag row (one row per valid frame).

    sent_ns : ndarray (n,) int64, when the tap saw the frame (monotonic), -1 before.
    answered_ns : ndarray (n,) int64, when its ``pred`` arrived, -1 before.
    P : ndarray (n, c) float32, its streamed probabilities, NaN before.
    """

    def __init__(self, contents: BagContents, c: int) -> None:
        self.contents = contents
        self._rows = contents.rows()
        self.sent_ns = np.full(contents.n, -1, dtype=np.int64)
        self.answered_ns = np.full(contents.n, -1, dtype=np.int64)
        self.P = np.full((contents.n, c), np.nan, dtype=np.float32)
        self.sent = 0  # frame messages seen by the tap, invalid ones included
        self.sent_valid = 0  # of which frames of the bag (rows)
        self.answered = 0
        self.unknown_answers = 0  # pred rows whose seq is not a frame of the bag
        self.newest_row: int | None = None
        self.status: dict[str, Any] | None = None
        self.model_versions: set[str] = set()
        self._rate = RateMeter()

    def on_frame(self, payload: bytes | memoryview, now_ns: int) -> None:
        self.sent += 1
        with contextlib.suppress(WireError):  # invalid frames are only counted
            row = self._rows.get(wire.decode_frame(payload).seq)
            if row is not None and self.sent_ns[row] < 0:
                self.sent_ns[row] = now_ns
                self.sent_valid += 1

    def on_pred(self, payload: bytes | memoryview, now_ns: int) -> None:
        pred = wire.decode_pred(payload)
        self.model_versions.add(pred.model)
        for seq, p in zip(pred.seq.tolist(), pred.p, strict=True):
            row = self._rows.get(seq)
            if row is None:
                self.unknown_answers += 1
                continue
            if self.answered_ns[row] < 0:
                self.answered += 1
            self.answered_ns[row] = now_ns
            self.P[row] = p
            self.newest_row = row

    def on_status(self, payload: bytes | memoryview) -> None:
        self.status = wire.decode_status(payload)

    def answered_rows(self) -> npt.NDArray[np.intp]:
        return np.flatnonzero(self.answered_ns >= 0)

    def latencies_ms(self) -> npt.NDArray[np.float64]:
        """Pred arrival minus frame arrival at the tap, ms, for every answered frame."""
        both = (self.answered_ns >= 0) & (self.sent_ns >= 0)
        return (self.answered_ns[both] - self.sent_ns[both]).astype(np.float64) * _MS

    def frames_per_s(self, now_ns: int) -> float:
        """Frames answered per second over about the last second."""
        return self._rate.rate(self.answered, now_ns)

    def view(self, model: Model, rate: float, elapsed_s: float, now_ns: int) -> LiveView:
        latencies = self.latencies_ms()
        p50, p99 = np.percentile(latencies, [50, 99]) if latencies.size else (0.0, 0.0)
        row = self.newest_row
        c = self.contents
        return LiveView(
            class_names=model.class_names,
            thresholds=model.thresholds,
            rate=rate,
            elapsed_s=elapsed_s,
            playback_s=c.span_s / rate,
            total=c.messages,
            sent=self.sent,
            answered=self.answered,
            frames_per_s=self.frames_per_s(now_ns),
            latency_ms=(float(p50), float(p99)) if latencies.size else None,
            newest_seq=None if row is None else int(c.seq[row]),
            probs=None if row is None else self.P[row],
            truth=None if row is None or not c.labelled[row] else c.Y[row],
            status=self.status,
        )
