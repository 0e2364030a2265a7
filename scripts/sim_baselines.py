"""MLP vs logistic regression on the sidewalk simulator (the figures of docs/simulator.md).

Run: .venv/bin/python scripts/sim_baselines.py [--train-s 7200] [--test-s 1200] [--rate 5]
         [--epochs 30] [--json PATH]

Trains on one simulated run (seed 1) and evaluates on another (seed 2: a different day,
street and set of obstacles), on inputs standardised with the training statistics.
Prints held-out macro-F1 at threshold 0.5 and with per-class thresholds tuned on the
training run, and the per-class F1 of both models.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchlib import Figure, write_json

from robot_daemon import nn, sim
from robot_daemon.offline import metrics
from robot_daemon.offline.logreg import LogisticRegression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-s", type=float, default=7200.0)
    parser.add_argument("--test-s", type=float, default=1200.0)
    parser.add_argument("--rate", type=float, default=5.0, help="readings per second")
    parser.add_argument("--h", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="seed of both models")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()

    t0 = time.perf_counter()
    train = sim.simulate(args.train_s, args.rate, seed=1)
    test = sim.simulate(args.test_s, args.rate, seed=2)
    print(f"simulated {train.n} + {test.n} readings in {time.perf_counter() - t0:.1f} s")
    mean, std = train.X.mean(axis=0), train.X.std(axis=0)
    Xtr = (train.X - mean) / std
    Xte = (test.X - mean) / std

    t0 = time.perf_counter()
    mlp = nn.MLP(sim.D, args.h, sim.C, rng=args.seed)
    mlp.sgd(Xtr, train.Y, epochs=args.epochs, shuffle=True)
    print(f"MLP(h={args.h}) {args.epochs} epochs in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    lr = LogisticRegression(sim.D, sim.C, rng=args.seed, epochs=args.epochs).fit(
        train.X, train.Y
    )
    print(f"logistic regression {args.epochs} epochs in {time.perf_counter() - t0:.1f} s")

    rows = {}
    for name, p_train, p_test in (
        ("mlp", mlp.predict_proba(Xtr), mlp.predict_proba(Xte)),
        ("logreg", lr.predict_proba(train.X), lr.predict_proba(test.X)),
    ):
        th = metrics.tune_thresholds(train.Y, p_train)
        at_half = metrics.per_class_scores(test.Y, p_test >= 0.5)
        tuned = metrics.per_class_scores(test.Y, p_test >= th)
        rows[name] = (at_half, tuned)
        print(f"{name:7s} held-out macro-F1: {at_half.macro_f1:.3f} at 0.5, "
              f"{tuned.macro_f1:.3f} tuned (train macro-F1 "
              f"{metrics.macro_f1(train.Y, p_train >= th):.3f})")
    print(f"\n{'class':12s} {'present':>7s} {'MLP F1':>7s} {'LR F1':>7s}   (tuned thresholds)")
    for k, name in enumerate(sim.CLASSES):
        print(f"{name:12s} {test.Y[:, k].mean():7.1%} {rows['mlp'][1].f1[k]:7.3f} "
              f"{rows['logreg'][1].f1[k]:7.3f}")
    if args.json:
        setup = (f"trained on {train.n:,} simulated readings, tested on {test.n:,} of another"
                 f" day, {args.epochs} epochs")
        write_json(args.json, "sim_baselines", [
            Figure.compare(f"MLP(h={args.h}) held-out macro-F1, {how}", rows["mlp"][i].macro_f1,
                           "macro-F1", f"logistic regression, {how}",
                           rows["logreg"][i].macro_f1, setup)
            for i, how in enumerate(("threshold 0.5", "tuned thresholds"))
        ])


if __name__ == "__main__":
    main()
