"""A simulated run written as a bag: a ``frame`` and a ``label`` message per reading."""

from __future__ import annotations

import os

from robot_daemon import wire
from robot_daemon.sim.reading import CLASSES, FEATURE_NAMES, C, D
from robot_daemon.sim.run import PROGRESS_EVERY, Progress, SimData


def write_bag(
    path: str | os.PathLike[str], data: SimData, *, progress: Progress | None = None
) -> int:
    """Write ``data`` as a bag: a ``frame`` and a ``label`` message per reading.

    Both messages of a reading carry the same ``seq`` (its index) and sensor time; the
    receive time is the sensor time (a simulated robot has no transport delay).
    ``progress`` is called as in :func:`robot_daemon.sim.simulate`, with readings written.

    Returns:
        The number of messages written (``2 * data.n``).

    Raises:
        BagError: the bag cannot be written.
    """
    from robot_daemon.bag import BagMeta, BagWriter  # the optional "bag" extra

    meta = BagMeta(
        d=D,
        c=C,
        feature_names=list(FEATURE_NAMES),
        class_names=list(CLASSES),
        extra={"source": "robot_daemon.sim", "seed": str(data.seed),
               "rate_hz": repr(data.rate_hz)},
    )
    frame_topic, label_topic = wire.TOPIC_FRAME.decode(), wire.TOPIC_LABEL.decode()
    with BagWriter(path, meta=meta) as bag:
        for seq in range(data.n):
            t = float(data.t[seq])
            t_ns = round(t * 1e9)
            x = data.X[seq]
            bag.write(frame_topic, wire.encode_frame(seq, t, x, src="sim"), t_ns, t_ns)
            bag.write(label_topic, wire.encode_label(seq, t, x, data.Y[seq], src="sim"),
                      t_ns, t_ns)
            if progress is not None and (seq + 1) % PROGRESS_EVERY == 0:
                progress(seq + 1, data.n)
    if progress is not None:
        progress(data.n, data.n)
    return 2 * data.n
