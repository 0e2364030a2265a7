"""The demo's bag: simulated (or an existing one reused when it reads back whole), then
read into memory with its labels.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

import numpy as np
import numpy.typing as npt

from robot_daemon import sim, wire
from robot_daemon.bag import BagReader
from robot_daemon.demo.options import DemoOptions
from robot_daemon.errors import BagError, WireError
from robot_daemon.model import Model

SIM_RATE_HZ: Final = 50.0


@dataclass(frozen=True, eq=False)
class BagContents:
    """The valid frames of a bag in play order, with their labels.

    seq : ndarray (n,) int64, the frames' sequence numbers (unique).
    t : ndarray (n,) float64, sensor times, seconds.
    X : ndarray (n, d) float32, the raw readings.
    Y : ndarray (n, c) uint8, the labels of the same seq (0 where there is none).
    labelled : ndarray (n,) bool, whether the bag holds a label for the frame.
    messages : the bag's ``frame`` messages, invalid ones included (what the player sends).
    span_s : receive time of the last frame minus the first's.
    """

    path: Path
    seq: npt.NDArray[np.int64]
    t: npt.NDArray[np.float64]
    X: npt.NDArray[np.float32]
    Y: npt.NDArray[np.uint8]
    labelled: npt.NDArray[np.bool_]
    messages: int
    span_s: float

    @property
    def n(self) -> int:
        return len(self.seq)

    def rows(self) -> dict[int, int]:
        """seq -> row."""
        return {int(s): i for i, s in enumerate(self.seq)}


def bag_problem(path: Path, model: Model) -> str | None:
    """Why the bag at ``path`` cannot be played to ``model``, or ``None`` if it can."""
    try:
        with BagReader(path) as reader:
            info = reader.info()
    except BagError as exc:
        return str(exc)
    if not info.complete:
        return f"bag {path} is damaged at byte {info.damaged_at}; see robot-daemon bag info"
    frames = info.topics.get(wire.TOPIC_FRAME.decode())
    if frames is None or frames.count == 0:
        return f"bag {path} has no 'frame' messages"
    for name, bag_value, model_value in (("d", info.meta.d, model.d), ("c", info.meta.c, model.c)):
        if bag_value is not None and bag_value != model_value:
            return f"bag {path} has {name}={bag_value}, the model expects {name}={model_value}"
    return None


def prepare_bag(options: DemoOptions, model: Model, out: TextIO) -> Path:
    """The bag to play: ``--bag`` (which must be usable), else the default path, simulated
    unless a usable bag is there already.

    Raises:
        BagError: ``--bag`` names a bag that cannot be played.
    """
    if options.bag is not None:
        problem = bag_problem(options.bag, model)
        if problem is not None:
            raise BagError(problem)
        part = "" if options.duration_s is None else f" (its first {options.duration_s:g} s)"
        print(f"bag: {options.bag}{part}", file=out, flush=True)
        return options.bag
    path = options.default_bag
    if path.exists():
        problem = bag_problem(path, model)
        if problem is None:
            print(f"bag: reusing {path}", file=out, flush=True)
            return path
        print(f"bag: {problem}; simulating it again", file=out, flush=True)
    simulate_bag(path, options.sim_duration_s, options.seed, out)
    return path


def simulate_bag(path: Path, duration_s: float, seed: int, out: TextIO) -> None:
    """Simulate ``duration_s`` seconds at 50 Hz into ``path``, atomically (temp + rename)."""
    print(f"bag: simulating {duration_s:g} s of sidewalk driving at {SIM_RATE_HZ:g} Hz"
          f" (seed {seed}) ...", file=out, flush=True)
    start = time.monotonic()
    data = sim.simulate(duration_s, SIM_RATE_HZ, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        sim.write_bag(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"bag: wrote {path} ({data.n} frames) in {time.monotonic() - start:.1f} s",
          file=out, flush=True)


def read_bag(path: Path, model: Model, duration_s: float | None = None) -> BagContents:
    """Every valid frame of the bag (of its first ``duration_s`` seconds, as the player
    plays them: see :class:`~robot_daemon.bag.play.PlayOptions`) and the label of the
    same seq.

    Raises:
        BagError: no valid frame, or two frames with the same seq (predictions could not
            be matched to frames).
    """
    frame_topic = wire.TOPIC_FRAME.decode()
    frames: list[wire.Frame] = []
    labels: dict[int, npt.NDArray[np.uint8]] = {}
    recv_ns: list[int] = []  # of every frame message: the span the player plays
    window_ns = None if duration_s is None else round(duration_s * 1e9)
    with BagReader(path) as reader:
        for message in reader.messages([frame_topic, wire.TOPIC_LABEL.decode()]):
            try:
                if message.topic == frame_topic:
                    if window_ns is not None and recv_ns and (
                            message.recv_ns - recv_ns[0] >= window_ns):
                        continue  # after the window the player plays
                    recv_ns.append(message.recv_ns)
                    frames.append(wire.decode_frame(message.payload, d=model.d))
                else:
                    label = wire.decode_label(message.payload, d=model.d, c=model.c)
                    labels[label.seq] = label.y
            except WireError:
                continue  # the daemon rejects it too, and counts it in its status
    seq = np.array([f.seq for f in frames], dtype=np.int64)
    if not frames:
        raise BagError(f"bag {path} holds no valid frame with d={model.d}")
    if len(np.unique(seq)) != len(seq):
        raise BagError(f"bag {path} has frames with the same seq: the demo matches"
                       " predictions to frames by seq, so it needs them unique")
    no_label = np.zeros(model.c, dtype=np.uint8)
    return BagContents(
        path=path,
        seq=seq,
        t=np.array([f.t for f in frames], dtype=np.float64),
        X=np.stack([f.x for f in frames]),
        Y=np.stack([labels.get(f.seq, no_label) for f in frames]),
        labelled=np.array([f.seq in labels for f in frames], dtype=bool),
        messages=len(recv_ns),
        span_s=(max(recv_ns) - min(recv_ns)) / 1e9,
    )
