"""Measure the cost of wire protocol v1 per message: encode and decode a frame (d=16).

Run: .venv/bin/python scripts/bench_wire.py [--d 16] [--number 100000] [--json PATH]

Prints the best of 5 timeit repeats, in microseconds per call, for the bin form of ``x``
(what our encoders send) and for the array-of-numbers form (what a hand-written publisher
in another language might send), plus a label and a typical pred, beside bare
``msgpack.packb`` / ``msgpack.unpackb`` of the same map: the price of the checks.
"""

from __future__ import annotations

import argparse
import platform
import timeit
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
from benchlib import Figure, write_json

from robot_daemon import wire


def best_us(fn: Callable[[], object], number: int) -> float:
    """Best of 5 repeats of ``number`` calls, in microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--c", type=int, default=8)
    parser.add_argument("--number", type=int, default=100_000, help="calls per repeat")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    d, c, number = args.d, args.c, args.number

    rng = np.random.default_rng(0)
    x = rng.standard_normal(d).astype(np.float32)
    y = (rng.random(c) < 0.3).astype(np.uint8)
    frame = wire.encode_frame(12345, 1_700_000_000.25, x, src="robot-7")
    frame_list = msgpack.packb({"seq": 12345, "t": 1_700_000_000.25, "x": x.tolist()})
    frame_map = {"seq": 12345, "t": 1_700_000_000.25, "x": x.astype("<f4").tobytes()}
    label = wire.encode_label(12345, 1_700_000_000.25, x, y)
    p = rng.random((5, c)).astype(np.float32)
    pred = wire.encode_pred(99, 1_700_000_000.3, list(range(5)), p, "default-1")

    cases: list[tuple[str, Callable[[], object]]] = [
        ("encode_frame (bin x)", lambda: wire.encode_frame(12345, 1_700_000_000.25, x)),
        ("decode_frame (bin x)", lambda: wire.decode_frame(frame, d)),
        ("decode_frame_raw (bin x)", lambda: wire.decode_frame_raw(frame, d)),
        ("decode_frame (array x)", lambda: wire.decode_frame(frame_list, d)),
        ("encode+decode frame", lambda: wire.decode_frame(wire.encode_frame(1, 2.0, x), d)),
        ("encode_label", lambda: wire.encode_label(12345, 1_700_000_000.25, x, y)),
        ("decode_label", lambda: wire.decode_label(label, d, c)),
        ("encode_pred (n=5)", lambda: wire.encode_pred(99, 1.0, [0, 1, 2, 3, 4], p, "m")),
        ("decode_pred (n=5)", lambda: wire.decode_pred(pred)),
        ("sensor_time (frame)", lambda: wire.sensor_time(frame)),
        ("msgpack.packb alone", lambda: msgpack.packb(frame_map, use_bin_type=True)),
        ("msgpack.unpackb alone", lambda: msgpack.unpackb(frame)),
    ]
    print(f"wire v{wire.PROTOCOL_VERSION}, d={d}, c={c}, python {platform.python_version()}, "
          f"numpy {np.__version__}, msgpack {'.'.join(map(str, msgpack.version))}")
    print(f"frame payload: {len(frame)} bytes (bin x, with src), "
          f"{len(frame_list)} bytes (array x)")
    us = {}
    for name, fn in cases:
        us[name] = best_us(fn, number)
        print(f"{name:26s} {us[name]:6.2f} us")
    if args.json:
        write_json(args.json, "bench_wire", [
            Figure.compare(f"encode one frame (d={d}, bin x)", us["encode_frame (bin x)"], "us",
                           "msgpack.packb of the same map", us["msgpack.packb alone"],
                           "the rest is checking and converting x"),
            Figure.compare(f"decode one frame (d={d}, bin x)", us["decode_frame (bin x)"], "us",
                           "msgpack.unpackb of the same payload", us["msgpack.unpackb alone"],
                           "the rest is validation"),
            Figure.compare(f"decode one frame as the daemon does (d={d}, bin x, x left as "
                           "bytes)", us["decode_frame_raw (bin x)"], "us",
                           "msgpack.unpackb of the same payload", us["msgpack.unpackb alone"],
                           "the rest is validation"),
            Figure.compare(f"decode one frame (d={d}, array x)", us["decode_frame (array x)"],
                           "us", "decode_frame with bin x", us["decode_frame (bin x)"],
                           "what a publisher sending a list of numbers costs"),
        ])


if __name__ == "__main__":
    main()
