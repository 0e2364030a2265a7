"""What the fleet tests share: a directory of simulated bags (with a cut bag and a file
that is not a bag), a small trained model, and a real Dask cluster on loopback started
with the ``dask scheduler`` and ``dask worker`` commands, once for the whole session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from robot_daemon import sim
from robot_daemon.offline import train

DASK = Path(sys.executable).with_name("dask")
BAG_SECONDS = (20.0, 16.0, 12.0)


@dataclass(frozen=True)
class Bags:
    """``root`` holds run0..run2.mcap, cut.mcap (run0 cut at 60 %) and notes.txt."""

    root: Path
    good: list[Path]
    cut: Path
    foreign: Path

    @property
    def readable(self) -> list[Path]:
        """The bags in the order ``expand`` lists the directory."""
        return [self.cut, *self.good]


@pytest.fixture(scope="session")
def bags(tmp_path_factory: pytest.TempPathFactory) -> Bags:
    root = tmp_path_factory.mktemp("fleet-bags")
    good = []
    for i, seconds in enumerate(BAG_SECONDS):
        path = root / f"run{i}.mcap"
        sim.write_bag(path, sim.simulate(seconds, seed=20 + i))
        good.append(path)
    data = good[0].read_bytes()
    cut = root / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    foreign = root / "notes.txt"
    foreign.write_text("not a bag\n")
    return Bags(root, good, cut, foreign)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for two epochs on a bag of its own (recorded as its training data)."""
    root = tmp_path_factory.mktemp("fleet-model")
    bag = root / "train.mcap"
    sim.write_bag(bag, sim.simulate(30.0, seed=4))
    path = root / "model.npz"
    train.train(train.read_labelled([bag]), train.TrainConfig(h=32, epochs=2)).save(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def scheduler() -> Iterator[str]:
    """``tcp://127.0.0.1:PORT`` of a scheduler and two one-thread worker processes."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    procs = [subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", "127.0.0.1:0", "--no-show"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        _wait_for_port(port)
        procs.append(subprocess.Popen(
            [str(DASK), "worker", address, "--nworkers", "2", "--nthreads", "1",
             "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(logs)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        _wait_for_workers(address, 2)
        yield address
    finally:
        # Nothing to save: stop at once rather than wait for a graceful retirement.
        for proc in procs:
            proc.kill()
            proc.wait()


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no Dask scheduler on port {port} after {timeout} s")


def _wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(n, timeout=60)


def label_count(bag: Path, topic: str = "label") -> int:
    """Messages of ``topic`` in ``bag`` as ``bag info`` counts them (complete chunks)."""
    from robot_daemon.bag import BagReader

    with BagReader(bag) as reader:
        info = reader.info()
    return info.topics[topic].count if topic in info.topics else 0
