"""How many times more matmul FLOPs training costs than inference: the question of
``docs/spec.md``, derived and measured.

Training is ``MLP.sgd`` with the reference schedule of ``docs/spec.md`` on ``n`` examples
(10 epochs of minibatch SGD, batch 100); inference is one forward pass over the same
``n`` examples. Only matrix multiplications count. :func:`closed_form` gives the
derivation of ``docs/flops.md`` as code; :func:`measure` runs the real code inside
:func:`robot_daemon.nn.count_flops`, which every matmul of the network reports to
(:mod:`robot_daemon.nn.counting`), and reports what was executed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from robot_daemon.errors import ConfigError
from robot_daemon.nn import MLP, count_flops

#: ``MLP.sgd`` makes this many passes over the data (the reference schedule, docs/spec.md).
REFERENCE_EPOCHS = 10
#: What :func:`measure` may allocate, checked before it allocates anything.
MAX_BYTES = 2 * 2**30
#: Training FLOPs :func:`measure` may execute: a few minutes at the 50 GFLOP/s a laptop
#: core reaches on these float32 matmuls.
MAX_TRAINING_FLOPS = 10**13


@dataclass(frozen=True)
class FlopCount:
    """Matmul FLOPs of inference on n examples and of training on the same n examples."""

    inference_flops: int
    training_flops: int

    @property
    def ratio(self) -> float:
        return self.training_flops / self.inference_flops

    @property
    def answer(self) -> int:
        """The ratio rounded to the nearest integer: the answer to the question of docs/spec.md."""
        return round(self.ratio)


def closed_form(
    n: int,
    d: int,
    h: int,
    c: int,
    *,
    epochs: int = REFERENCE_EPOCHS,
    input_grad: bool = True,
    recompute: bool = False,
) -> FlopCount:
    """The derivation of ``docs/flops.md``.

    A product ``(m, k) @ (k, p)`` costs ``2 m k p``. Per example, the forward pass costs
    ``F = 2 (d h + h h + h c)``. The backward pass of each Linear costs two products of
    the same size as its forward one (``dW = X.T @ G`` and ``dX = G @ W.T``), so ``2 F``;
    minus ``2 d h`` if the first layer skips its input gradient; recompute adds the
    forward products of the two first layers again, ``2 (d h + h h)``. Every epoch sees
    each of the ``n`` examples once, whatever the batch size, so training costs
    ``epochs * n * (3 F ...)`` against ``n * F`` for inference.
    """
    forward = 2 * n * (d * h + h * h + h * c)
    per_epoch = 3 * forward
    if not input_grad:
        per_epoch -= 2 * n * d * h
    if recompute:
        per_epoch += 2 * n * (d * h + h * h)
    return FlopCount(inference_flops=forward, training_flops=epochs * per_epoch)


@dataclass(frozen=True)
class FlopReport:
    """What :func:`measure` counted, beside the closed form for the same settings."""

    n: int
    d: int
    h: int
    c: int
    epochs: int
    batch_size: int
    input_grad: bool
    recompute: bool
    measured: FlopCount
    inference_matmuls: int
    training_matmuls: int
    expected: FlopCount

    def as_dict(self) -> dict[str, object]:
        """The ``--json`` object: the four keys the issue names, then the context."""
        return {
            "inference_flops": self.measured.inference_flops,
            "training_flops": self.measured.training_flops,
            "ratio": self.measured.ratio,
            "answer": self.measured.answer,
            "per_epoch_ratio": self.measured.ratio / self.epochs,
            "closed_form": asdict(self.expected),
            "matches_closed_form": self.measured == self.expected,
            "inference_matmuls": self.inference_matmuls,
            "training_matmuls": self.training_matmuls,
            "config": {
                "n": self.n,
                "d": self.d,
                "h": self.h,
                "c": self.c,
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "input_grad": self.input_grad,
                "recompute": self.recompute,
            },
        }

    def describe(self) -> str:
        """A human-readable report."""
        m = self.measured
        batches = -(-self.n // self.batch_size)
        mode = []
        if not self.input_grad:
            mode.append("first layer skips its input gradient")
        if self.recompute:
            mode.append("recompute checkpointing")
        verdict = "matches" if m == self.expected else "DOES NOT MATCH"
        rows = [
            (f"inference: forward on {self.n} examples", m.inference_flops,
             self.inference_matmuls),
            (f"training: MLP.sgd, {self.epochs} epochs x {batches} batches of {self.batch_size}",
             m.training_flops, self.training_matmuls),
        ]
        width = max(len(label) for label, _, _ in rows)
        lines = [
            f"matmul FLOPs, n={self.n}, d={self.d}, h={self.h}, c={self.c}"
            + (f" ({', '.join(mode)})" if mode else "")
        ]
        lines += [f"  {label:<{width}}  {value:>18,}  ({k} matmuls)" for label, value, k in rows]
        lines += [
            f"  per epoch: {m.ratio / self.epochs:.4f} x inference",
            f"  ratio training / inference: {m.ratio:.4f}",
            f"  answer (rounded): {m.answer}",
            f"  closed form (docs/flops.md): {verdict}"
            f" ({self.expected.training_flops:,} / {self.expected.inference_flops:,})",
        ]
        return "\n".join(lines)


def footprint_bytes(n: int, d: int, h: int, c: int) -> int:
    """Roughly the peak bytes :func:`measure` holds (an upper estimate, all float32).

    The data (X, and Y as uint8), each weight with its gradient and one temporary of the
    update (12 bytes) and the two (n, h) activations of inference on all n examples; the
    activations of a training batch of 100 are small beside them.
    """
    weights = d * h + h * h + h * c
    return 4 * n * d + n * c + 12 * weights + 8 * n * h + 4 * n * c


def check_size(
    n: int, d: int, h: int, c: int, *, input_grad: bool = True, recompute: bool = False
) -> None:
    """Refuse settings whose measurement would exhaust memory or run for hours.

    Raises:
        ConfigError: above :data:`MAX_BYTES` or :data:`MAX_TRAINING_FLOPS`; the message
            gives the closed form's answer, which needs neither.
    """
    expected = closed_form(n, d, h, c, input_grad=input_grad, recompute=recompute)
    answer = f"the closed form (docs/flops.md) answers without running: ratio {expected.ratio:.4f}"
    need = footprint_bytes(n, d, h, c)
    if need > MAX_BYTES:
        raise ConfigError(
            f"measuring n={n}, d={d}, h={h}, c={c} needs about {need / 2**30:.3g} GiB, over"
            f" the {MAX_BYTES / 2**30:g} GiB this command allows: lower --n or --h; {answer}"
        )
    if expected.training_flops > MAX_TRAINING_FLOPS:
        raise ConfigError(
            f"measuring n={n}, d={d}, h={h}, c={c} runs {expected.training_flops:.3g} training"
            f" FLOPs, over the {MAX_TRAINING_FLOPS:.0e} (minutes) this command allows: lower"
            f" --n or --h; {answer}"
        )


def measure(
    n: int,
    d: int,
    h: int,
    c: int,
    *,
    skip_input_grad: bool = False,
    recompute: bool = False,
    seed: int = 0,
) -> FlopReport:
    """Run inference and the reference ``MLP.sgd`` on ``n`` random examples, counting matmuls.

    The counts do not depend on the data, only on the shapes, so random readings and
    labels are as good as real ones. Runs in float32 to halve the time it takes.

    Raises:
        ConfigError: the settings exceed what :func:`check_size` allows.
    """
    check_size(n, d, h, c, input_grad=not skip_input_grad, recompute=recompute)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    Y = rng.integers(0, 2, size=(n, c), dtype=np.uint8)
    mlp = MLP(d, h, c, rng=rng, dtype=np.float32, recompute=recompute,
              input_grad=not skip_input_grad)
    with count_flops() as inference:
        mlp.predict_proba(X)
    with count_flops() as training:
        mlp.sgd(X, Y)
    return FlopReport(
        n=n,
        d=d,
        h=h,
        c=c,
        epochs=REFERENCE_EPOCHS,
        batch_size=100,
        input_grad=not skip_input_grad,
        recompute=recompute,
        measured=FlopCount(inference.flops, training.flops),
        inference_matmuls=inference.matmuls,
        training_matmuls=training.matmuls,
        expected=closed_form(
            n, d, h, c, input_grad=not skip_input_grad, recompute=recompute
        ),
    )
