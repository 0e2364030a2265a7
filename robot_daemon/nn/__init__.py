"""The multi-label MLP of ``docs/spec.md``, forward and backward written by hand in NumPy.

For a batch of ``n`` readings::

    X (n, d) -> Linear -> ScaledReLU -> (n, h) -> Linear -> ScaledReLU -> (n, h)
             -> Linear -> logits (n, c) -> Sigmoid -> Y_hat (n, c)

The robot's software cannot host a deep-learning framework, so the network and its
gradients are written here by hand, and every matrix product counts its FLOPs, so that
the answer of ``docs/flops.md`` is measured on the code that runs. Import from here
(``from robot_daemon.nn import MLP``); the modules, top down:

* :mod:`~robot_daemon.nn.mlp`: the network, its training loop and its serving path;
* :mod:`~robot_daemon.nn.layers`: ``Linear``, ``ScaledReLU`` and ``Sigmoid``, each keeping
  only what its backward needs;
* :mod:`~robot_daemon.nn.activations` and :mod:`~robot_daemon.nn.loss`: the functions
  the layers and the training step apply;
* :mod:`~robot_daemon.nn.counting`: the matrix products, counted;
* :mod:`~robot_daemon.nn.buffers`: memory written over instead of allocated (hand-offs
  between layers, each thread's scratch for serving);
* :mod:`~robot_daemon.nn.arrays`: the two float dtypes.
"""

from __future__ import annotations

from robot_daemon.nn.activations import logit_limit, logits_within, scaled_relu_, sigmoid
from robot_daemon.nn.arrays import Array, DTypeLike
from robot_daemon.nn.buffers import SCRATCH_MAX_BYTES
from robot_daemon.nn.counting import FlopCounter, affine, count_flops, matmul
from robot_daemon.nn.layers import (
    RECOMPUTE_BLOCK_ELEMENTS,
    Layer,
    Linear,
    ScaledReLU,
    Seed,
    Sigmoid,
)
from robot_daemon.nn.loss import get_grad_log_loss, log_loss, log_loss_rows
from robot_daemon.nn.mlp import MLP

__all__ = [
    "MLP",
    "RECOMPUTE_BLOCK_ELEMENTS",
    "SCRATCH_MAX_BYTES",
    "Array",
    "DTypeLike",
    "FlopCounter",
    "Layer",
    "Linear",
    "ScaledReLU",
    "Seed",
    "Sigmoid",
    "affine",
    "count_flops",
    "get_grad_log_loss",
    "log_loss",
    "log_loss_rows",
    "logit_limit",
    "logits_within",
    "matmul",
    "scaled_relu_",
    "sigmoid",
]
