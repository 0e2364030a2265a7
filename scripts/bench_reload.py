"""Model-file faults against the real daemon: what a reload of each bad file does to it.

    .venv/bin/python scripts/bench_reload.py

Starts ``robot-daemon run`` (20 ms ticks, one BLAS thread as deployed) on a copy of the
default model, with a publisher sending a frame every 5 ms, so that every tick has
frames to answer. Then, for each fault, it puts the file in place of the model file
(rename, as a deploy does), sends SIGHUP and waits for the daemon's verdict. Per fault
it prints the verdict (``refused``, ``reloaded``), whether the daemon is still alive,
the longest gap between two ``pred`` messages from the SIGHUP to 0.3 s after the
verdict (in ticks: 1 is every tick; a publisher that the machine holds up also makes
gaps), the daemon's own count of the ticks it missed and of late ticks (its own work /
the OS) over the same time, how long the verdict took, and the daemon's peak RSS
(``VmHWM``, reset before each fault through ``/proc/PID/clear_refs``; needs root or the
same user) beside its RSS just before. Between two faults the default model file is put
back and reloaded. The first row is a control: the same watch with no file and no
SIGHUP, for what the machine alone does to the ticks.

A storm of these files, a SIGHUP after each, is one of ``scripts/bench_faults.py``'s faults.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robot_daemon import model as model_file  # noqa: E402
from robot_daemon import wire  # noqa: E402
from robot_daemon.nn import MLP  # noqa: E402
from robot_daemon.serve.daemon import SERVING_ENV  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "default.npz"
INTERVAL_MS = 20
FRAME_PERIOD_S = 0.005
AFTER_S = 0.3


class Daemon:
    """The daemon process, a frame publisher thread and a pred/status subscriber."""

    def __init__(self, workdir: Path, model: Path) -> None:
        self.workdir = workdir
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"ipc://{workdir}/frames")
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(f"ipc://{workdir}/pred")
        self.sub.subscribe(b"")
        cmd = [sys.executable, "-m", "robot_daemon", "run", "--model", str(model),
               "--frames", f"ipc://{workdir}/frames", "--pred", f"ipc://{workdir}/pred",
               "--interval-ms", str(INTERVAL_MS), "--status-interval", "0.1"]
        self.log = (workdir / "daemon.log").open("wb")
        self.proc = subprocess.Popen(cmd, stderr=self.log, cwd=ROOT,
                                     env={**os.environ, **SERVING_ENV})
        if not self.pub.poll(10_000):
            raise RuntimeError("the daemon never subscribed")
        self.pub.recv()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stream)
        self._thread.start()

    def _stream(self) -> None:
        default = model_file.load(DEFAULT_MODEL)
        X = (default.mean + default.scale
             * np.random.default_rng(0).standard_normal((1000, default.d))).astype(np.float32)
        seq = 0
        while not self._stop.is_set():
            frame = wire.encode_frame(seq, 0.0, X[seq % len(X)])
            self.pub.send_multipart([wire.TOPIC_FRAME, frame])
            seq += 1
            time.sleep(FRAME_PERIOD_S)

    def messages(self, timeout_s: float) -> Iterator[tuple[bytes, Any]]:
        """(topic, decoded) until ``timeout_s`` passes without a message."""
        while self.sub.poll(round(timeout_s * 1000)):
            topic, payload = self.sub.recv_multipart()
            decode = wire.decode_pred if topic == wire.TOPIC_PRED else wire.decode_status
            yield topic, decode(payload)

    def drain(self) -> None:
        """Drop what waits in our queue: what follows is from now on."""
        while self.sub.poll(0):
            self.sub.recv_multipart()

    def status(self) -> dict[str, Any]:
        """The daemon's next status (not one that waited in our queue)."""
        self.drain()
        for topic, message in self.messages(5.0):
            if topic == wire.TOPIC_STATUS:
                return dict(message)
        raise RuntimeError("no status")

    def memory_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.log.close()
        self.ctx.destroy(linger=0)


def trial(daemon: Daemon, path: Path, make: Callable[[Path], None] | None) -> dict[str, Any]:
    """Put what ``make`` writes in place, SIGHUP, and watch until the verdict.

    ``make=None``: the control, no file and no SIGHUP, watched for as long as a reload.
    """
    if make is not None:
        _staged(path, make)  # first: writing a 1 GiB file stalls the whole machine a while
    before = daemon.status()
    Path(f"/proc/{daemon.proc.pid}/clear_refs").write_text("5")  # reset VmHWM
    rss_kb = daemon.memory_kb("VmRSS")
    daemon.drain()
    start = time.monotonic()
    if make is not None:
        daemon.proc.send_signal(signal.SIGHUP)
    verdict, verdict_s, ticks = "none", float("nan"), []
    if make is None:
        verdict, verdict_s = "-", 0.7  # watched for 1 s, longer than any reload here
    for topic, message in daemon.messages(10.0):
        now = time.monotonic()
        if topic == wire.TOPIC_PRED:
            ticks.append(message.tick)
        elif verdict == "none":
            if message["reload_failures"] > before["reload_failures"]:
                verdict, verdict_s = "refused", now - start
            elif message["reloads"] > before["reloads"]:
                verdict, verdict_s = "reloaded", now - start
        if verdict != "none" and now - start > verdict_s + AFTER_S:
            break
    gaps = np.diff(ticks)
    alive = daemon.proc.poll() is None
    after = daemon.status() if alive else before
    return {"verdict": verdict, "alive": alive,
            "gap_ticks": int(gaps.max()) if gaps.size else None, "verdict_s": verdict_s,
            "missed": after["ticks_missed"] - before["ticks_missed"],
            "late_own": (after["ticks_late"] - after["ticks_late_os"])
            - (before["ticks_late"] - before["ticks_late_os"]),
            "late_os": after["ticks_late_os"] - before["ticks_late_os"],
            "rss_mb": rss_kb / 1024, "peak_mb": daemon.memory_kb("VmHWM") / 1024}


# ---- the files -------------------------------------------------------------------------


def _members(model: model_file.Model) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(model.to_bytes())) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _default() -> model_file.Model:
    return model_file.load(DEFAULT_MODEL)


def _replaced(member: str, data: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        members = _members(_default())
        members[member] = data
        path.write_bytes(_zip(members))
    return make


def _huge_meta(path: Path) -> None:
    members = _members(_default())
    meta = json.loads(str(np.load(io.BytesIO(members["meta.npy"]))))
    meta.update(d=65536, h=65536)
    members["meta.npy"] = _npy(np.array(json.dumps(meta)))
    path.write_bytes(_zip(members))


def _zip_bomb(path: Path) -> None:
    """1 MB on disk, 1 GiB inflated: W2 declared as (16384, 8192) float64 zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in _members(_default()).items():
            if name != "W2.npy":
                z.writestr(name, data)
        with z.open("W2.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f8", "fortran_order": False, "shape": (16384, 8192)})
            member.write(header.getvalue())
            for _ in range(1024):
                member.write(bytes(1 << 20))


def _junk_with_a_zip_tail(path: Path) -> None:
    """The worst a file under the size limit can do: read whole, then refused."""
    tail = _zip({"meta.npy": b""})
    with path.open("wb") as f:
        f.truncate(model_file.MAX_FILE_BYTES - len(tail))
        f.seek(0, os.SEEK_END)
        f.write(tail)


def _many_members(path: Path) -> None:
    path.write_bytes(_zip({f"x{i}.npy": b"" for i in range(5000)}))


def _other(d: int = 16, h: int = 64, c: int = 8, dtype: type = np.float64,
           deflate: bool = False) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        default = _default()
        mean = default.mean if d == default.d else None
        scale = default.scale if d == default.d else None
        model = model_file.from_mlp(MLP(d, h, c, rng=3, dtype=dtype), mean=mean, scale=scale)
        path.write_bytes(_zip(_members(model), zipfile.ZIP_DEFLATED if deflate
                              else zipfile.ZIP_STORED))
    return make


def _wide(path: Path) -> None:
    """A float32 h = 16384 model file (1 GiB), written from zero pages (cheap).

    No Model can hold it (its size is refused), so its members are written directly.
    """
    h = 16384
    arrays = model_file._to_arrays(_default())
    meta = json.loads(str(arrays["meta"]))
    meta.update(h=h, dtype="float32")
    arrays.update(
        W1=np.zeros((16, h), np.float32), b1=np.zeros(h, np.float32),
        W2=np.zeros((h, h), np.float32), b2=np.zeros(h, np.float32),
        W3=np.zeros((h, 8), np.float32), b3=np.zeros(8, np.float32),
        meta=np.array(json.dumps(meta)),
    )
    with path.open("wb") as f:
        model_file._write_npz(f, arrays)


def _truncated(path: Path) -> None:
    path.write_bytes(DEFAULT_MODEL.read_bytes()[:20_000])


FAULTS: list[tuple[str, Callable[[Path], None] | None]] = [
    ("control: no file, no SIGHUP", None),
    ("symlink to /dev/zero", lambda p: p.symlink_to("/dev/zero")),
    ("FIFO", lambda p: os.mkfifo(p)),
    ("directory", lambda p: p.mkdir()),
    ("truncated file", _truncated),
    ("member not .npy", _replaced("W2.npy", b"junk")),
    ("object array", _replaced("class_names.npy", _npy(np.array(["a", 1], dtype=object)))),
    ("npy header of 60 kB", _replaced(
        "W2.npy", b"\x93NUMPY\x02\x00" + (60_000).to_bytes(4, "little") + b" " * 60_000)),
    ("meta d = h = 65536", _huge_meta),
    ("zip bomb 1 MB -> 1 GiB", _zip_bomb),
    ("zip of 5,000 members", _many_members),
    ("133 MiB junk, zip tail", _junk_with_a_zip_tail),
    ("float32 h = 16384 (1 GiB)", _wide),
    ("another d (17)", _other(d=17)),
    ("another c (9)", _other(c=9)),
    ("valid: float32 h=2048 deflated", _other(h=2048, dtype=np.float32, deflate=True)),
    ("valid: float64 h=2048", _other(h=2048)),
]


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        description="Model-file faults against the real daemon: each bad file reloaded"
        " with SIGHUP, the verdict and what it did to the ticks (see the module doc)."
    ).parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rd-reload-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        path = workdir / "model.npz"
        path.write_bytes(DEFAULT_MODEL.read_bytes())
        daemon = Daemon(workdir, path)
        try:
            daemon.status()
            time.sleep(0.5)
            print(f"{'fault':32} {'verdict':9} {'alive':5} {'gap':>4} {'missed':>6}"
                  f" {'late own/os':>11} {'took s':>6} {'RSS MB':>7} {'peak MB':>8}")
            for name, make in FAULTS:
                r = trial(daemon, path, make)
                late = f"{r['late_own']}/{r['late_os']}"
                print(f"{name:32} {r['verdict']:9} {r['alive']!s:5} {r['gap_ticks']!s:>4}"
                      f" {r['missed']:6} {late:>11} {r['verdict_s']:6.2f} {r['rss_mb']:7.1f}"
                      f" {r['peak_mb']:8.1f}", flush=True)
                if not r["alive"]:
                    return 1
                if make is not None:
                    trial(daemon, path, lambda p: p.write_bytes(DEFAULT_MODEL.read_bytes()))
        finally:
            daemon.close()
    return 0


#: The bad files of scripts/bench_faults.py's reload storm: cheap to make, refused quickly.
STORM = [make for _, make in FAULTS[1:11] if make is not None]


def _staged(path: Path, make: Callable[[Path], None]) -> None:
    """Build a file with ``make`` beside the model file and rename it over (as a deploy)."""
    staged = path.with_name(".fault")
    make(staged)
    rename_over(staged, path)


def rename_over(staged: Path, path: Path) -> None:
    """Rename ``staged`` (a file, a directory, a FIFO, a symlink) over ``path``."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()  # rename cannot replace a directory by a file
    elif staged.is_dir() and not staged.is_symlink():
        path.unlink()  # nor a file by a directory
    os.replace(staged, path)


if __name__ == "__main__":
    sys.exit(main())
