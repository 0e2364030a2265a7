#!/usr/bin/env python3
"""Speed and memory of the numerical core, beside baselines measured in the same run.

    .venv/bin/python scripts/bench_nn.py            # everything, BLAS at 1 and 2 threads
    .venv/bin/python scripts/bench_nn.py --quick    # smoke run: 1 epoch, few repeats, 1 thread
    .venv/bin/python scripts/bench_nn.py --json F   # also the headline figures (benchlib.py)

Prints, per BLAS thread count (1 thread is the headline: 2-thread timings on these shared
2-core machines swing 3-30x from run to run):
- the reference ``sgd`` (n = 10,000, 10 epochs, batch 100) at three sizes and both dtypes:
  ours as specified, ours with the first layer skipping its input gradient (what PyTorch
  does), and PyTorch CPU with identical initial weights when it is installed, with the
  relative difference of the trained weights;
- inference on 10,000 readings; single-reading and 32-reading forward latency beside a
  plain NumPy forward written the obvious way;
- the time of one training step on 10,000 readings over one inference on them, beside
  the FLOP ratio of the same two;
- the peak memory of one training step (tracemalloc) for our default and recompute
  modes and for the textbook design (every layer keeps its input, pre-activation and a
  float mask, nothing in place).

Needs threadpoolctl (``pip install -e '.[bench]'``); PyTorch is optional
(``pip install torch==2.13.0``) and never imported by the package.
"""

from __future__ import annotations

import argparse
import re
import time
import timeit
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import Figure, machine, write_json
from threadpoolctl import threadpool_limits

from robot_daemon import flops, nn
from robot_daemon.nn import MLP

try:
    import torch
except ImportError:  # optional baseline
    torch = None

N = 10_000
SIZES = [(16, 64, 8), (16, 256, 8), (64, 1024, 16)]
DTYPES = [np.float64, np.float32]


def data(d: int, c: int, dtype: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d)).astype(dtype)
    Y = (rng.random((N, c)) < 0.3).astype(dtype)
    return X, Y


# ---- PyTorch baseline -------------------------------------------------------------------


def torch_sgd(mlp: MLP, X: np.ndarray, Y: np.ndarray, epochs: int) -> tuple[float, list]:
    """The reference schedule in PyTorch from ``mlp``'s weights; returns (seconds, [W1, W2, W3])."""
    dtype = torch.float64 if X.dtype == np.float64 else torch.float32
    layers = []
    for lin in mlp.linears:
        layer = torch.nn.Linear(*lin.W.shape, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(lin.W.T.copy()))
            layer.bias.copy_(torch.from_numpy(lin.b.copy()))
        layers.append(layer)
    params = [p for layer in layers for p in layer.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)

    def srelu(z: Any) -> Any:
        return 2 * z * (z > 1)

    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(Xt), 100):
            xb, yb = Xt[i : i + 100], Yt[i : i + 100]
            opt.zero_grad(set_to_none=True)
            logits = layers[2](srelu(layers[1](srelu(layers[0](xb)))))
            loss = loss_fn(logits, yb) / len(xb)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    return seconds, [layer.weight.detach().numpy().T for layer in layers]


def torch_forward(mlp: MLP) -> Callable[[np.ndarray], Any]:
    Ws = [torch.from_numpy(lin.W.copy()) for lin in mlp.linears]
    bs = [torch.from_numpy(lin.b.copy()) for lin in mlp.linears]

    def forward(X: np.ndarray) -> Any:
        with torch.inference_mode():
            z = torch.from_numpy(X)
            for i in range(2):
                z = z @ Ws[i] + bs[i]
                z = 2 * z * (z > 1)
            return torch.sigmoid(z @ Ws[2] + bs[2])

    return forward


# ---- plain NumPy reference: the obvious forward pass ---------------------------------------


def plain_forward(mlp: MLP) -> Callable[[np.ndarray], np.ndarray]:
    (W1, b1), (W2, b2), (W3, b3) = [(lin.W, lin.b) for lin in mlp.linears]

    def forward(X: np.ndarray) -> np.ndarray:
        Z = X @ W1 + b1
        A = np.where(Z > 1, 2 * Z, 0.0)
        Z = A @ W2 + b2
        A = np.where(Z > 1, 2 * Z, 0.0)
        return 1 / (1 + np.exp(-(A @ W3 + b3)))

    return forward


# ---- the textbook design, for the memory comparison -----------------------------------------


class TextbookMLP:
    """Every layer keeps its input, its pre-activation and a float mask; nothing in place."""

    def __init__(self, mlp: MLP) -> None:
        self.params = [(lin.W.copy(), lin.b.copy()) for lin in mlp.linears]

    def single_step_sgd(self, X: np.ndarray, Y: np.ndarray, lr: float = 0.1) -> None:
        cache = []
        A = X
        for i, (W, b) in enumerate(self.params):
            Z = A @ W + b
            if i < 2:
                mask = (Z > 1).astype(Z.dtype)
                cache.append((A, Z, mask))
                A = 2 * Z * mask
            else:
                cache.append((A, Z, None))
                A = 1 / (1 + np.exp(-Z))
        P = A
        G = (P - Y) / (P * (1 - P)) / len(X)
        G = G * P * (1 - P)
        for i in reversed(range(3)):
            A_in, Z, mask = cache[i]
            W, b = self.params[i]
            if mask is not None:
                G = G * 2 * mask
            dW, db = A_in.T @ G, G.sum(axis=0)
            G = G @ W.T
            self.params[i] = (W - lr * dW, b - lr * db)


def user_mlp_class() -> type:
    """The reference ``MLP`` class, run from its text in docs/spec.md on our layers."""
    spec = (Path(__file__).resolve().parents[1] / "docs" / "spec.md").read_text()
    block = re.search(r"```python\n(class MLP:.*?)```", spec, re.S)
    if block is None:
        raise SystemExit("docs/spec.md: the reference MLP class block is missing")
    namespace = {name: getattr(nn, name) for name in
                 ("Linear", "ScaledReLU", "Sigmoid", "get_grad_log_loss")}
    exec(block.group(1), namespace)  # the specification's text, unchanged
    return namespace["MLP"]  # type: ignore[no-any-return]


def peak_ratio(step: Callable[[], None], n: int, h: int) -> float:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        step()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak / (2 * n * h * 8)


# ---- sections: each prints its table and returns its headline figures ---------------------------


def _torch_name() -> str:
    return f"PyTorch {torch.__version__}"


def bench_training(epochs: int) -> list[Figure]:
    per = f"{epochs} epoch{'s' if epochs > 1 else ''}"
    print(f"\nreference sgd, n={N}, batch 100, {per}")
    head = f"{'(d,h,c)':>14} {'dtype':>7} {'ep':>3} {'ours':>9} {'ours*':>9}"
    if torch:
        head += f" {'torch':>9} {'ours*/torch':>11} {'max |dW|/|W|':>13}"
    print(head)
    figures = []
    for d, h, c in SIZES:
        for dtype in DTYPES:
            X, Y = data(d, c, dtype)
            times = []
            for input_grad in (True, False):
                mlp = MLP(d, h, c, rng=0, dtype=dtype, input_grad=input_grad)
                start = time.perf_counter()
                mlp.sgd(X, Y, epochs=epochs)
                times.append(time.perf_counter() - start)
            row = f"{(d, h, c)!s:>14} {np.dtype(dtype).name:>7} {epochs:>3}"
            row += f" {times[0]:>8.3f}s {times[1]:>8.3f}s"
            figure = (f"reference sgd, n={N:,}, {per}, {(d, h, c)} {np.dtype(dtype).name},"
                      " first layer without input gradient")
            note = f"as specified, with the input gradient: {times[0]:.3f} s"
            if torch:
                ref = MLP(d, h, c, rng=0, dtype=dtype)
                t_torch, Ws = torch_sgd(ref, X, Y, epochs)
                diff = max(
                    float(np.abs(lin.W - W).max() / np.abs(W).max())
                    for lin, W in zip(mlp.linears, Ws, strict=True)
                )
                row += f" {t_torch:>8.3f}s {times[1] / t_torch:>11.2f} {diff:>13.1e}"
                figures.append(Figure.compare(
                    figure, times[1], "s", f"{_torch_name()}, same initial weights", t_torch,
                    f"{note}; trained weights differ by {diff:.0e}, relative"))
            else:
                figures.append(Figure.compare(figure, times[1], "s", note=note))
            print(row)
    print("ours = MLP as specified (every layer computes its input gradient);")
    print("ours* = input_grad=False, the first layer skips it, as PyTorch does for data.")
    return figures


def bench_inference(repeat: int) -> list[Figure]:
    print(f"\ninference, predict_proba on {N} readings (best of {repeat})")
    figures = []
    for d, h, c in SIZES:
        for dtype in DTYPES:
            mlp = MLP(d, h, c, rng=0, dtype=dtype)
            X, _ = data(d, c, dtype)
            ours = min(timeit.repeat(partial(mlp.predict_proba, X), number=1, repeat=repeat))
            row = f"{(d, h, c)!s:>14} {np.dtype(dtype).name:>7} ours {ours * 1e3:8.2f} ms"
            theirs = None
            if torch:
                fwd = torch_forward(mlp)
                theirs = min(timeit.repeat(partial(fwd, X), number=1, repeat=repeat))
                row += f"   torch {theirs * 1e3:8.2f} ms   ours/torch {ours / theirs:5.2f}"
            print(row)
            if (d, h, c) == SIZES[-1]:
                figures.append(Figure.compare(
                    f"inference on {N:,} readings, {(d, h, c)} {np.dtype(dtype).name}",
                    ours * 1e3, "ms", _torch_name() if torch else None,
                    None if theirs is None else theirs * 1e3))
    return figures


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, number: int) -> dict[str, float]:
    """Best time per call of each function, the functions taking turns round by round.

    On a shared VM the speed drifts over seconds; taking turns exposes every function to
    the same drift, so their ratio means something even when the absolute figures swing.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], timeit.timeit(fn, number=number) / number)
    return best


def bench_latency(rounds: int) -> list[Figure]:
    d, h, c = SIZES[0]
    mlp = MLP(d, h, c, rng=0)
    print(f"\nforward latency at {(d, h, c)}, float64"
          f" (best of {rounds} interleaved rounds of 2000)")
    figures = []
    for n in (1, 32):
        X = np.random.default_rng(1).standard_normal((n, d))
        fns: dict[str, Callable[[], object]] = {
            "ours": partial(mlp.predict_proba, X),
            "plain numpy": partial(plain_forward(mlp), X),
        }
        if torch:
            fns["torch"] = partial(torch_forward(mlp), X)
        best = {k: v * 1e6 for k, v in interleaved(fns, rounds=rounds, number=2000).items()}
        row = f"  n={n:>2}: " + "   ".join(f"{k} {v:6.1f} us" for k, v in best.items())
        row += "   ours/" + "   ours/".join(
            f"{k.split()[0]} {best['ours'] / v:4.2f}" for k, v in best.items() if k != "ours")
        print(row)
        note = f"{_torch_name()}: {best['torch']:.1f} us" if torch else ""
        figures.append(Figure.compare(
            f"forward latency, {n} reading{'s' if n > 1 else ''}, {(d, h, c)} float64",
            best["ours"], "us", "plain NumPy forward written the obvious way",
            best["plain numpy"], note))
    return figures


def bench_step_ratio(rounds: int) -> list[Figure]:
    d, h, c = SIZES[-1]
    X, Y = data(d, c, np.float64)
    print(f"\none training step on {N} readings / one inference on them, {(d, h, c)}, float64"
          f" (best of {rounds} interleaved)")
    figures = []
    for input_grad in (True, False):
        mlp = MLP(d, h, c, rng=0, input_grad=input_grad)
        best = interleaved(
            {
                "infer": partial(mlp.predict_proba, X),
                "train": partial(mlp.single_step_sgd, X, Y, lr=0.0),
            },
            rounds=rounds,
            number=1,
        )
        count = flops.closed_form(N, d, h, c, epochs=1, input_grad=input_grad)
        print(
            f"  input_grad={input_grad!s:>5}: train {best['train']:.3f} s / infer"
            f" {best['infer']:.3f} s = {best['train'] / best['infer']:.2f}"
            f"   FLOP ratio {count.ratio:.2f}"
        )
        figures.append(Figure.compare(
            f"time of one training step / one inference, n={N:,}, {(d, h, c)} float64"
            + ("" if input_grad else ", first layer without input gradient"),
            best["train"] / best["infer"], "x", "the same ratio in matmul FLOPs", count.ratio,
            f"train {best['train']:.3f} s, infer {best['infer']:.3f} s"))
    return figures


def bench_memory() -> list[Figure]:
    d, h, c = SIZES[-1]
    X, Y = data(d, c, np.float64)
    print(f"\npeak memory of one training step, n={N}, {(d, h, c)}, float64,")
    print(f"  in units of the two hidden activations (2*n*h floats = {2 * N * h * 8 / 1e6:.0f} MB)")
    peaks = {}
    for name, model in [
        ("reference class as written", user_mlp_class()(d, h, c)),
        ("ours, default", MLP(d, h, c, rng=0)),
        ("ours, recompute=True", MLP(d, h, c, rng=0, recompute=True)),
    ]:
        peaks[name] = peak_ratio(lambda m=model: m.single_step_sgd(X, Y), N, h)
        print(f"  {name:<22} {peaks[name]:.3f}x")
    book = TextbookMLP(MLP(d, h, c, rng=0))
    textbook = peak_ratio(lambda: book.single_step_sgd(X, Y), N, h)
    print(f"  {'textbook design':<22} {textbook:.3f}x")
    return [
        Figure.compare(
            f"peak memory of one training step, n={N:,}, {(d, h, c)} float64, {name}",
            peak, "x two hidden activations",
            "textbook design (keeps input, pre-activation, float mask)", textbook,
            "tracemalloc")
        for name, peak in peaks.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 epoch, fewer repeats, 1 thread")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="BLAS threads")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    threads = args.threads or ([1] if args.quick else [1, 2])
    print("\n".join(f"{label}: {text}" for label, text in machine().items()))
    figures = bench_memory()
    by_threads = []
    for n_threads in threads:
        print(f"\n===== BLAS threads: {n_threads} =====")
        with threadpool_limits(n_threads):
            if torch:
                torch.set_num_threads(n_threads)
            measured = [
                *bench_latency(5 if args.quick else 15),
                *bench_inference(2 if args.quick else 5),
                *bench_step_ratio(2 if args.quick else 5),
                *bench_training(1 if args.quick else 10),
            ]
        suffix = f", BLAS {n_threads} thread{'s' if n_threads > 1 else ''}"
        by_threads.append([replace(f, figure=f.figure + suffix) for f in measured])
    # Each figure at every thread count, side by side: the first count is the headline.
    figures += [f for same in zip(*by_threads, strict=True) for f in same]
    if args.json:
        write_json(args.json, "bench_nn", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
