#!/usr/bin/env python3
"""Fleet jobs on Dask: dataset, eval and training on simulated bags, one worker and two.

    .venv/bin/python scripts/bench_fleet.py                 # 20 bags, 1,000,000 frames
    .venv/bin/python scripts/bench_fleet.py --quick         # 4 bags of 5,000 frames
    .venv/bin/python scripts/bench_fleet.py --cache /data/bench-fleet --json out.json

The bags (``--bags`` of ``--seconds`` at 50 Hz each, a frame and a label per reading) are
simulated once into ``--cache`` (default ``~/.cache/robot-daemon/bench-fleet``) and
reused. Each worker count gets a fresh ``LocalCluster`` of one-thread worker processes
(BLAS pinned to one thread by Dask's worker environment, checked with threadpoolctl); the
cluster's start is not timed. Measured, per worker count:

* ``dataset``: the bags into a Parquet dataset, frames/s (frames of the frame table);
* ``eval`` of the bags and of the dataset: labelled frames/s, the model alone
  (models/default.npz) without the baseline, and whether every figure is identical
  across worker counts and between bags and dataset;
* peak memory per worker (the largest resident set of a worker process);
* training: ``train`` streamed from the dataset (``--epochs``), its time, the driver's
  peak memory over its start and its held-out macro-F1, beside one-process training
  (``read_labelled`` of the bags, then ``train``) in this process, BLAS pinned to one
  thread.

Beside them, the bare ``mcap`` reader (``make_reader(f).iter_messages()``) over the same
bags in this process, messages/s. The goals of issue 16: two workers at least 1.7x one
for dataset and eval; eval of a dataset at least 1,000,000 frames/s per worker; eval of
bags at least 0.7x the bare reader's message rate (eval reads every message of a bag,
the frames it skips and the labels it scores: its rate in bag messages/s is twice its
labelled frames/s).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import Figure, write_json  # noqa: E402

MODEL = ROOT / "models" / "default.npz"
RATE_HZ = 50.0


def bag_path(cache: Path, i: int, seconds: float) -> Path:
    return cache / f"fleet-{seconds:g}s-{i:02d}.mcap"


def _simulate_one(job: tuple[str, float, int]) -> str:
    from robot_daemon import sim

    path, seconds, seed = job
    tmp = Path(path).with_suffix(".tmp")
    sim.write_bag(tmp, sim.simulate(seconds, RATE_HZ, seed=seed))
    os.replace(tmp, path)
    return path


def ensure_bags(cache: Path, n: int, seconds: float) -> list[Path]:
    """The ``n`` bags, simulated (two processes) where missing."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = [bag_path(cache, i, seconds) for i in range(n)]
    missing = [(str(p), seconds, 1000 + i) for i, p in enumerate(paths) if not p.exists()]
    if missing:
        print(f"simulating {len(missing)} bag(s) of {seconds:g} s into {cache} ...",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pool.map(_simulate_one, missing)
        print(f"  done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return paths


def bare_reader_rate(paths: list[Path]) -> tuple[int, float]:
    """Messages and seconds of the bare mcap reader over every bag."""
    from mcap.reader import make_reader

    n = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            for _ in make_reader(f).iter_messages():
                n += 1
    return n, time.perf_counter() - start


class PeakRss:
    """The peak resident set of this process while the block runs, above its start."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def above_start(self) -> int:
        return self.peak - self.base


def _worker_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _worker_blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]


def _warm() -> None:
    """Import what the jobs import, as a cluster that has run a job before would have."""
    import pyarrow.parquet  # noqa: F401

    import robot_daemon.bag
    import robot_daemon.fleet.dataset
    import robot_daemon.fleet.evaluate
    import robot_daemon.fleet.train  # noqa: F401


@contextmanager
def cluster(workers: int) -> Iterator[Any]:
    """A fresh LocalCluster of ``workers`` one-thread processes and its DaskRunner."""
    from distributed import Client, LocalCluster

    from robot_daemon.fleet.cluster import DaskRunner

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as local, Client(local) as client:
        client.run(_warm)
        yield DaskRunner(client)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run_workers(
    workers: int, bags: list[Path], tmp: Path, epochs: int,
) -> dict[str, Any]:
    """Every fleet measurement on a fresh cluster of ``workers`` processes."""
    from robot_daemon import model
    from robot_daemon.fleet import dataset
    from robot_daemon.fleet import evaluate as fleet_eval
    from robot_daemon.fleet import train as fleet_train
    from robot_daemon.fleet.sources import Source, partitions
    from robot_daemon.offline.train import TrainConfig

    loaded = model.load(MODEL)
    scorers = [fleet_eval.Scorer("mlp", loaded, loaded.thresholds)]
    names = list(loaded.class_names)
    out: dict[str, Any] = {}
    with cluster(workers) as runner:
        out["blas_threads"] = sorted({n for v in runner.client.run(_worker_blas_threads).values()
                                      for n in v})
        ds = tmp / f"ds-{workers}"
        ds.mkdir()
        items = [(str(p), i) for i, p in enumerate(bags)]

        def make() -> dataset.DatasetSummary:
            written = [w for _, w in runner.map_unordered(dataset.write_indexed, items,
                                                          out=str(ds))]
            return dataset.finish(str(ds), written)

        summary, out["dataset_s"] = timed(make)
        out["frames"] = summary.frames
        bag_parts = [Source(str(p), "bag") for p in bags]
        ds_parts = partitions([Source(str(ds), "dataset")])
        result, out["eval_bags_s"] = timed(lambda: fleet_eval.evaluate(
            runner, bag_parts, scorers, loaded.d, loaded.c, names))
        out["eval_bags"] = [e.as_dict() for e in result.evaluations]
        out["labels"] = result.evaluations[0].n
        result, out["eval_dataset_s"] = timed(lambda: fleet_eval.evaluate(
            runner, ds_parts, scorers, loaded.d, loaded.c, names))
        out["eval_dataset"] = [e.as_dict() for e in result.evaluations]
        out["peak_rss_eval"] = max(runner.client.run(_worker_peak_rss).values())
        config = _comparable(TrainConfig, epochs)
        with PeakRss() as driver:
            trained, out["train_s"] = timed(lambda: fleet_train.train(
                runner, ds_parts, config, [str(ds)]))
        out["train_driver_rss"] = driver.above_start
        out["train_f1"] = trained.training["validation"]["macro_f1"]
        out["n_train"] = trained.training["n_train"]
        out["peak_rss"] = max(runner.client.run(_worker_peak_rss).values())
        shutil.rmtree(ds)
    return out


def _comparable(config: Any, epochs: int) -> Any:
    """The training settings under which streamed and one-process training see the same
    batches in the same order: examples in order, every epoch run and the last kept. (With
    the command line's shuffling, each side draws its own order: two models of one recipe,
    not one model computed twice.)"""
    return config(epochs=epochs, shuffle=False, keep_best=False, patience=0)


def one_process_training(bags: list[Path], epochs: int) -> dict[str, Any]:
    """``robot-daemon train BAG...`` as it runs today, in this process, BLAS one thread."""
    from threadpoolctl import threadpool_limits

    from robot_daemon.offline import train

    with threadpool_limits(limits=1, user_api="blas"), PeakRss() as rss:
        model, seconds = timed(lambda: train.train(train.read_labelled(bags),
                                                   _comparable(train.TrainConfig, epochs)))
    return {"train_s": seconds, "rss": rss.above_start,
            "f1": model.training["validation"]["macro_f1"], "n_train": model.training["n_train"]}


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=20, help="bags (default 20)")
    parser.add_argument("--seconds", type=float, default=1000.0,
                        help="seconds of each bag at 50 Hz (default 1000: 50,000 frames)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "robot-daemon" / "bench-fleet",
                        help="where the simulated bags are kept between runs")
    parser.add_argument("--quick", action="store_true", help="4 bags of 100 s, 1 epoch")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    if args.quick:
        args.bags, args.seconds, args.epochs = 4, 100.0, 1
    bags = ensure_bags(args.cache, args.bags, args.seconds)
    bare_n, bare_s = bare_reader_rate(bags)
    bare_rate = bare_n / bare_s
    with tempfile.TemporaryDirectory(prefix="rd-bench-fleet-") as tmp:
        runs = {w: run_workers(w, bags, Path(tmp), args.epochs) for w in (1, 2)}
    alone = one_process_training(bags, args.epochs)

    one, two = runs[1], runs[2]
    frames, labels = one["frames"], one["labels"]
    rate = {w: {"dataset": r["frames"] / r["dataset_s"],
                "eval_bags": r["labels"] / r["eval_bags_s"],
                "eval_dataset": r["labels"] / r["eval_dataset_s"],
                "train": r["n_train"] * args.epochs / r["train_s"]} for w, r in runs.items()}
    identical = (one["eval_bags"] == two["eval_bags"] == one["eval_dataset"]
                 == two["eval_dataset"])
    speedup_dataset = rate[2]["dataset"] / rate[1]["dataset"]
    speedup_eval = rate[2]["eval_bags"] / rate[1]["eval_bags"]
    speedup_eval_ds = rate[2]["eval_dataset"] / rate[1]["eval_dataset"]
    per_worker_ds = max(rate[1]["eval_dataset"], rate[2]["eval_dataset"] / 2)
    eval_msgs = 2 * rate[1]["eval_bags"]  # eval reads a frame and a label per labelled frame
    f1_gap = abs(two["train_f1"] - alone["f1"])

    print(f"{len(bags)} simulated bags in {args.cache}: {frames:,} frames, {labels:,} labelled,"
          f" {bare_n:,} messages")
    print(f"workers: LocalCluster of one-thread processes, BLAS threads per worker:"
          f" {one['blas_threads']} / {two['blas_threads']}; cluster start not timed")
    print()
    print(f"bare mcap reader, this process: {bare_rate:,.0f} messages/s")
    print()
    print(f"{'':<28} {'1 worker':>14} {'2 workers':>14} {'speed-up':>9}")
    for key, label in (("dataset", "dataset (frames/s)"), ("eval_bags", "eval of bags (frames/s)"),
                       ("eval_dataset", "eval of dataset (frames/s)"),
                       ("train", "train (examples/s)")):
        print(f"{label:<28} {rate[1][key]:>14,.0f} {rate[2][key]:>14,.0f}"
              f" {rate[2][key] / rate[1][key]:>8.2f}x")
    print(f"{'peak memory per worker':<28} {mb(one['peak_rss']):>14} {mb(two['peak_rss']):>14}")
    print(f"{'train: driver peak (+start)':<28} {mb(one['train_driver_rss']):>14}"
          f" {mb(two['train_driver_rss']):>14}")
    print()
    print(f"eval figures identical for 1 and 2 workers, bags and dataset: {identical}")
    print(f"eval of bags, 1 worker, in bag messages/s: {eval_msgs:,.0f}"
          f" = {eval_msgs / bare_rate:.2f}x the bare reader"
          f" (labelled frames/s: {rate[1]['eval_bags'] / bare_rate:.2f}x)")
    print(f"training, {args.epochs} epoch(s): streamed on 2 workers {two['train_s']:.1f} s,"
          f" held-out macro-F1 {two['train_f1']:.4f}; one process {alone['train_s']:.1f} s"
          f" (decode included), macro-F1 {alone['f1']:.4f}, peak +{mb(alone['rss'])}")
    print()
    goals = [
        ("dataset: 2 workers >= 1.7x one", speedup_dataset >= 1.7, f"{speedup_dataset:.2f}x"),
        ("eval of bags: 2 workers >= 1.7x one", speedup_eval >= 1.7, f"{speedup_eval:.2f}x"),
        ("eval of a dataset >= 1,000,000 frames/s per worker", per_worker_ds >= 1e6,
         f"{per_worker_ds:,.0f} frames/s (2 workers: {speedup_eval_ds:.2f}x one)"),
        ("eval of bags >= 0.7x the bare reader's messages/s", eval_msgs >= 0.7 * bare_rate,
         f"{eval_msgs / bare_rate:.2f}x"),
        ("training macro-F1 within 0.01 of one process", f1_gap <= 0.01, f"gap {f1_gap:.4f}"),
        ("eval identical across worker counts and inputs", identical, str(identical)),
    ]
    for goal, met, value in goals:
        print(f"goal {'MET' if met else 'NOT MET'}: {goal}: {value}")

    if args.json:
        write_json(args.json, "bench_fleet", [
            Figure.compare("dataset, 2 workers vs 1, frames/s", rate[2]["dataset"], "frames/s",
                           "1 worker", rate[1]["dataset"], note="goal >= 1.7x"),
            Figure.compare("eval of bags, 2 workers vs 1, labelled frames/s",
                           rate[2]["eval_bags"], "frames/s", "1 worker", rate[1]["eval_bags"],
                           note="goal >= 1.7x"),
            Figure.compare("eval of a Parquet dataset, per worker", per_worker_ds, "frames/s",
                           "goal", 1e6, note=f"2 workers {speedup_eval_ds:.2f}x one"),
            Figure.compare("eval of bags, 1 worker, bag messages/s", eval_msgs, "messages/s",
                           "bare mcap reader, same bags", bare_rate, note="goal >= 0.7x"),
            Figure.compare("streamed training on 2 workers, held-out macro-F1", two["train_f1"],
                           "", "one-process training", alone["f1"], note="goal: within 0.01"),
            Figure("peak memory per worker (2 workers)", two["peak_rss"] / 2**20, "MB"),
        ])


if __name__ == "__main__":
    main()
