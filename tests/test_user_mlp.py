"""The MLP class of docs/spec.md, pasted unchanged, trains with our layers.

Nothing between the two ``---- docs/spec.md ----`` markers may be edited: it is the contract.
"""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from robot_daemon import nn
from robot_daemon.nn import Linear, ScaledReLU, Sigmoid, get_grad_log_loss


# ---- docs/spec.md, verbatim ------------------------------------------------------------
class MLP:
    def __init__(self, d, h, c):
        self.layers = [
            Linear(d, h), ScaledReLU(h),  # input_layer
            Linear(h, h), ScaledReLU(h),  # hidden_layer
            Linear(h, c), Sigmoid(c)  # output_layer
        ]

    def forward(self, X):
        """Predict classes for a batch of n examples"""
        out = X  # in R^{n x d}
        for layer in self.layers:
            out = layer.forward(out)
        return out

    def sgd(self, X_train, Y_train):
        # Train each layer of the MLP with SGD
        n_train = len(X_train)
        epochs = 10
        bs = 100  # batch_size
        for _ in range(epochs):
            for b_idx in range(0, n_train, bs):
                X_batch = X_train[b_idx:b_idx + bs]
                Y_batch = Y_train[b_idx:b_idx + bs]
                # update all parameters
                self.single_step_sgd(X_batch, Y_batch)

    def single_step_sgd(self, X, Y):  # X in R^{n x d}, Y in R^{n x c}
        """Train the MLP with a single step of batched SGD."""
        Y_hat = self.forward(X)  # in R^{n x c}
        loss_nabla_O = get_grad_log_loss(Y, Y_hat)
        for layer in self.layers[::-1]:  # backward pass reverses layers
            loss_nabla_O, *param_grads = layer.backward(loss_nabla_O)
            layer.update_params_(*param_grads, lr=0.1)
# ---- end of docs/spec.md ---------------------------------------------------------------


def _toy_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Readings (n, 4) and 3 labels that need the hidden layers (a product and a band)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    Y = np.stack(
        [X[:, 0] * X[:, 1] > 0, np.abs(X[:, 2]) < 0.7, X[:, 3] > 0.5], axis=1
    ).astype(np.float64)
    return X, Y


def _copy_weights(src: nn.MLP, dst: MLP) -> None:
    for ours, theirs in zip(src.linears, [lay for lay in dst.layers if isinstance(lay, Linear)],
                            strict=True):
        theirs.W[...] = ours.W
        theirs.b[...] = ours.b


def test_the_spec_class_trains_with_our_layers() -> None:
    X, Y = _toy_problem(3000, seed=1)
    mlp = MLP(4, 32, 3)
    before = nn.log_loss(Y, mlp.forward(X))
    mlp.sgd(X, Y)
    after = nn.log_loss(Y, mlp.forward(X))
    accuracy = ((mlp.forward(X) > 0.5) == Y).mean()
    assert after < 0.6 * before
    assert accuracy > 0.85


def test_the_spec_class_and_ours_take_identical_steps() -> None:
    # Same initial weights, same data: the spec's loop over our layers and our MLP
    # (in place, boolean masks) must compute exactly the same updates.
    X, Y = _toy_problem(1000, seed=2)
    ours = nn.MLP(4, 16, 3, rng=3)
    theirs = MLP(4, 16, 3)
    _copy_weights(ours, theirs)
    ours.sgd(X, Y)
    theirs.sgd(X, Y)
    for a, b in zip(ours.linears, [lay for lay in theirs.layers if isinstance(lay, Linear)],
                    strict=True):
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.b, b.b)


def test_the_spec_loop_leaves_no_batch_sized_cache() -> None:
    X, Y = _toy_problem(500, seed=4)
    mlp = MLP(4, 8, 3)
    mlp.single_step_sgd(X, Y)
    for layer in mlp.layers:
        for name, value in vars(layer).items():
            if isinstance(value, np.ndarray):
                assert value.shape[0] != len(X), f"{type(layer).__name__}.{name} kept a batch"


@pytest.mark.parametrize("layer", [ScaledReLU(3), Sigmoid(3)])
def test_parameterless_backward_is_a_one_tuple(layer: ScaledReLU | Sigmoid) -> None:
    # A bare (n, h) array would be unpacked row by row by the spec's loop.
    X = np.array([[0.5, 1.5, 3.0], [2.0, -1.0, 1.0]])
    layer.forward(X.copy())
    result = layer.backward(np.ones_like(X))
    assert isinstance(result, tuple)
    assert len(result) == 1
    grad_in, *param_grads = result
    assert grad_in.shape == X.shape
    assert param_grads == []
    layer.update_params_(*param_grads, lr=0.1)


@pytest.mark.parametrize("layer", [ScaledReLU(3), Sigmoid(3)])
def test_rows_passed_as_gradients_fail_loudly(layer: ScaledReLU | Sigmoid) -> None:
    # If backward ever returned a bare array, the loop would hand its rows to
    # update_params_: that must raise, not be silently ignored.
    rows = list(np.ones((2, 3)))
    with pytest.raises(TypeError):
        layer.update_params_(*rows, lr=0.1)


def test_np_random_seed_reproduces_the_spec_class() -> None:
    # As with np.random.randn initialisation: the global seed fixes the initial weights.
    np.random.seed(7)  # noqa: NPY002 - how the spec's class is seeded
    first = [lay.W.copy() for lay in MLP(4, 8, 3).layers if isinstance(lay, Linear)]
    np.random.seed(7)  # noqa: NPY002
    second = [lay.W for lay in MLP(4, 8, 3).layers if isinstance(lay, Linear)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    third = [lay.W for lay in MLP(4, 8, 3).layers if isinstance(lay, Linear)]
    assert not np.array_equal(first[0], third[0])  # no seed again: other weights


@pytest.mark.slow
def test_the_spec_class_training_step_keeps_little_beyond_two_activations() -> None:
    """The issue's yardstick on the spec's class as written: n=10,000, (64, 1024, 16)."""
    n, d, h, c = 10_000, 64, 1024, 16
    rng = np.random.default_rng(12)
    X = rng.standard_normal((n, d))
    Y = (rng.random((n, c)) < 0.3).astype(np.float64)
    mlp = MLP(d, h, c)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        mlp.single_step_sgd(X, Y)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    ratio = peak / (2 * n * h * 8)  # the two hidden activations, the unavoidable part
    print(f"spec's class: peak / two activations {ratio:.3f}")
    assert ratio <= 1.1


def test_the_class_above_is_the_one_in_docs_spec() -> None:
    # The contract is docs/spec.md's text: the class in this file must be exactly that block.
    root = Path(__file__).resolve().parents[1]
    spec = (root / "docs" / "spec.md").read_text()
    block = re.search(r"```python\n(class MLP:.*?)```", spec, re.S)
    assert block is not None
    ours = Path(__file__).read_text()
    start = ours.index("class MLP:")
    end = ours.index("# ---- end of docs/spec.md")
    assert ours[start:end] == block.group(1)
