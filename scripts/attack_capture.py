"""Attack ``run --capture`` with a real daemon (issue 30) and print what held.

    .venv/bin/python scripts/attack_capture.py [--duration 60] [--kills 20] [--only 1,2,4]

1. **flood**: every frame captured (margin 0.5, rate unlimited) at 1,000 frames/s into
   ``--capture-max-mb 1``; DIR's total sampled every 50 ms; ticks and CPU beside the
   same daemon without a capture.
2. **full disk** (root only: a 2 MB tmpfs): full from the start, freed, filled again by
   someone else, freed, then read-only (a bind mount) and back: ERROR lines, frames
   written at each step, ticks.
4. **kill -9** at random moments, ``--kills`` times: every ``.mcap`` left readable, at
   most one ``.partial``, the bound held, the next start counting DIR right.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robot_daemon import wire  # noqa: E402
from robot_daemon.bag import BagReader  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
MODEL = ROOT / "models" / "default.npz"
FLOOD = ("--capture-max-mb", "1", "--capture-margin", "0.5", "--capture-rate", "1000000")
TICK_KEYS = ("ticks", "ticks_missed", "ticks_late", "ticks_late_os")


def dir_bytes(directory: Path) -> int:
    """Bytes of every file in ``directory`` (not following links), as a sampler sees it."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


class Daemon:
    """``robot-daemon run`` as a subprocess, fed frames at ``rate`` by a thread of ours."""

    def __init__(self, work: Path, args: tuple[str, ...], rate: float = 1000.0) -> None:
        self.frames_ep, pred_ep = f"ipc://{work}/frames", f"ipc://{work}/pred"
        self.log_path = work / "daemon.log"
        self.log = self.log_path.open("ab")
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind(self.frames_ep)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "robot_daemon", "run", "--model", str(MODEL),
             "--frames", self.frames_ep, "--pred", pred_ep, "--status-interval", "0.5",
             "--max-batch", "65536", "--log-level", "INFO", *args],
            stderr=self.log, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.connect(pred_ep)
        self.sub.subscribe(wire.TOPIC_STATUS)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._publish, args=(rate,), daemon=True)
        self.thread.start()

    def _publish(self, rate: float) -> None:
        x = np.random.default_rng(0).standard_normal(16).astype(np.float32)
        start, seq = time.monotonic(), 0
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * rate)
            while seq < due:
                self.pub.send_multipart([wire.TOPIC_FRAME, wire.encode_frame(seq, time.time(), x)])
                seq += 1
            time.sleep(0.001)

    def status(self, timeout_s: float = 20.0) -> dict[str, Any]:
        while self.sub.poll(0):  # the newest, not a stale one
            self.sub.recv_multipart()
        if not self.sub.poll(round(timeout_s * 1000)):
            raise RuntimeError(f"no status from the daemon (exit {self.proc.poll()})")
        return wire.decode_status(self.sub.recv_multipart()[1])

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def close(self, kill: bool = False) -> int | None:
        self.stop.set()
        self.thread.join()
        (self.proc.kill if kill else self.proc.terminate)()
        code = self.proc.wait(20)
        self.ctx.destroy(linger=0)
        self.log.close()
        return code

    def errors(self) -> list[str]:
        return [ln for ln in self.log_path.read_text().splitlines() if " ERROR " in ln]


def measure(daemon: Daemon, seconds: float, directory: Path | None,
            events: list[tuple[float, Callable[[], None]]] | None = None) -> dict[str, Any]:
    """Run for ``seconds`` (``events``: (at s, action)); tick counters, CPU, largest DIR."""
    before, cpu0, t0 = daemon.status(), daemon.cpu_s(), time.monotonic()
    largest, pending = 0, sorted(events or [], key=lambda e: e[0])
    while (elapsed := time.monotonic() - t0) < seconds:
        while pending and pending[0][0] <= elapsed:
            pending.pop(0)[1]()
        if directory is not None:
            largest = max(largest, dir_bytes(directory))
        time.sleep(0.05)
    after = daemon.status()
    out = {k: after[k] - before[k] for k in TICK_KEYS}
    out |= {"tick_p99_ms": after["tick_ms_p99"], "largest": largest,
            "cpu": (daemon.cpu_s() - cpu0) / (time.monotonic() - t0), "status": after}
    return out


def ticks_line(name: str, m: dict[str, Any]) -> str:
    return (f"  {name}: ticks {m['ticks']}, missed {m['ticks_missed']}, late {m['ticks_late']}"
            f" (os {m['ticks_late_os']}), tick p99 {m['tick_p99_ms']:.2f} ms,"
            f" CPU {100 * m['cpu']:.0f} %")


def capture_line(status: dict[str, Any]) -> str:
    return (f"  capture: frames {status['capture_frames']:,}, dropped"
            f" {status['capture_dropped']}, errors {status['capture_errors']},"
            f" bags {status['capture_bags']}, bytes {status['capture_bytes']:,}")


def flood(work: Path, seconds: float) -> None:
    print(f"1. flood: every frame captured at 1,000 frames/s, --capture-max-mb 1, {seconds:g} s")
    directory = work / "flood"
    base = Daemon(work, ())
    try:
        print(ticks_line("without capture", measure(base, seconds, None)))
    finally:
        base.close()
    daemon = Daemon(work, ("--capture", str(directory), *FLOOD))
    try:
        m = measure(daemon, seconds, directory)
    finally:
        daemon.close()
    print(ticks_line("with the flood  ", m))
    print(capture_line(m["status"]))
    names = sorted(p.name for p in directory.iterdir())
    print(f"  largest total sampled every 50 ms: {m['largest']:,} bytes of 1,000,000"
          f" ({'held' if m['largest'] <= 1_000_000 else 'PASSED'}); {len(names)} bags left,"
          f" {names[0]} to {names[-1]}; ERROR lines {len(daemon.errors())}")


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full (someone else's file)."""
    with contextlib.suppress(OSError), path.open("ab", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)


def full_disk(work: Path, seconds: float) -> None:
    print("2. full disk: a 2 MB tmpfs filled by another file; 3. read-only (remount)")
    if os.geteuid() != 0:
        print("  skipped: mounting a tmpfs needs root (run as root to attack a full disk)")
        return
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        directory, filler = mnt / "captures", mnt / "filler"
        directory.mkdir()
        fill(filler)
        daemon = Daemon(work, ("--capture", str(directory), *FLOOD))
        step = seconds / 6
        marks: list[tuple[str, int, int]] = []

        def mark(name: str) -> Callable[[], None]:
            return lambda: marks.append(
                (name, daemon.status()["capture_frames"], len(daemon.errors())))

        def read_only() -> None:  # over the directory: the open bag's fd stays writable
            subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)

        def read_write() -> None:
            subprocess.run(["umount", str(directory)], check=False)

        events = [(step - 0.5, mark("full from the start")), (step, filler.unlink),
                  (2 * step - 0.5, mark("freed")), (2 * step, lambda: fill(filler)),
                  (3 * step - 0.5, mark("filled by someone else")), (3 * step, filler.unlink),
                  (3.5 * step, mark("freed again")), (3.5 * step + 0.1, read_only),
                  (4.5 * step, mark("read-only")), (4.5 * step + 0.1, read_write)]
        try:
            m = measure(daemon, seconds, directory, events)
            marks.append(("read-write again", m["status"]["capture_frames"],
                          len(daemon.errors())))
        finally:
            daemon.close()
            while directory.is_mount():
                read_write()
        for name, frames, errors in marks:
            print(f"  {name:<24} frames written {frames:>7,}, ERROR lines so far {errors}")
        print(ticks_line("during the run", m))
        print(capture_line(m["status"]))
        print(f"  largest total of DIR: {m['largest']:,} bytes; ERROR lines:")
        for line in daemon.errors():
            print(f"    {line[:150]}")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def kills(work: Path, n: int) -> None:
    print(f"4. kill -9 at random moments, {n} times (flood into --capture-max-mb 1)")
    directory, rng = work / "killed", random.Random(4)
    logging.disable(logging.WARNING)  # the reader's line about each cut bag: expected
    bad: list[str] = []
    counted: list[tuple[int, int]] = []
    for i in range(n):
        daemon = Daemon(work, ("--capture", str(directory), *FLOOD))
        status = daemon.status()
        counted.append((status["capture_bytes"], dir_bytes(directory)))
        time.sleep(rng.uniform(0.0, 3.0))
        daemon.close(kill=True)
        for path in (p for p in directory.iterdir() if not p.name.endswith(".partial")):
            try:
                with BagReader(path) as bag:
                    bag.info()
            except Exception as exc:  # any failure is a finding
                bad.append(f"kill {i + 1}: {path.name}: {exc}")
        partials = [p for p in directory.iterdir() if p.name.endswith(".partial")]
        if len(partials) > 1 or dir_bytes(directory) > 1_000_000:
            bad.append(f"kill {i + 1}: {dir_bytes(directory):,} bytes, {partials}")
    daemon = Daemon(work, ("--capture", str(directory), *FLOOD))
    counted.append((daemon.status()["capture_bytes"], dir_bytes(directory)))
    daemon.close()
    worst = max(c for c, _ in counted)
    print(f"  bags unreadable or bound passed: {len(bad)}; at each start capture_bytes"
          f" <= DIR: {all(c <= d for c, d in counted)}, largest counted {worst:,}")
    for line in bad:
        print(f"    {line[:150]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--only", default="1,2,4")
    args = parser.parse_args()
    attacks = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="attack-capture-"))
    try:
        if "1" in attacks:
            flood(work, args.duration)
        if "2" in attacks:
            full_disk(work, max(args.duration / 2, 30.0))
        if "4" in attacks:
            kills(work, args.kills)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
