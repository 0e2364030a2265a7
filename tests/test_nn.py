"""The numerical core against independent oracles: finite differences, hand-worked values."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from robot_daemon import nn
from robot_daemon.errors import ShapeError
from robot_daemon.nn import MLP, Linear, ScaledReLU, Sigmoid, get_grad_log_loss, log_loss

FLOATS = [np.float64, np.float32]


def _labels(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    return (rng.random((n, c)) < 0.4).astype(np.float64)


def _backward_grads(mlp: MLP, X: np.ndarray, Y: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Parameter gradients [dW1, db1, dW2, db2, dW3, db3] and dX, without updating."""
    grad = get_grad_log_loss(Y, mlp.forward(X))
    grads: list[np.ndarray] = []
    for layer in mlp.layers[::-1]:
        grad, *param_grads = layer.backward(grad)
        grads = [g.copy() for g in param_grads] + grads
    return grads, grad


def _numerical_grad(f: Callable[[], float], A: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of f with respect to every entry of A (modified in place)."""
    G = np.zeros_like(A)
    for i in np.ndindex(A.shape):
        saved = A[i]
        A[i] = saved + eps
        up = f()
        A[i] = saved - eps
        down = f()
        A[i] = saved
        G[i] = (up - down) / (2 * eps)
    return G


def _rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


# ---- finite differences ---------------------------------------------------------------------


def _clear_of_the_jump(seed: int, recompute: bool) -> tuple[MLP, np.ndarray, np.ndarray] | None:
    """A small net and batch whose pre-activations all stay 1e-3 away from 1, or None.

    ScaledReLU jumps at 1: a finite difference across the jump is meaningless.
    """
    rng = np.random.default_rng(seed)
    n, d, h, c = 6, 4, 7, 3
    mlp = MLP(d, h, c, rng=rng, recompute=recompute)
    # Shift the biases so that a good share of units is active (Kaiming pre-activations
    # rarely exceed the ScaledReLU threshold of 1 in a tiny net).
    mlp.linears[0].b[:] = 0.8
    mlp.linears[1].b[:] = 0.5
    X = rng.standard_normal((n, d))
    Y = _labels(rng, n, c)
    Z1 = X @ mlp.linears[0].W + mlp.linears[0].b
    Z2 = (2 * Z1 * (Z1 > 1)) @ mlp.linears[1].W + mlp.linears[1].b
    for Z in (Z1, Z2):
        if np.abs(Z - 1).min() < 1e-3 or not 0.2 < (Z > 1).mean() < 0.8:
            return None
    return mlp, X, Y


@pytest.mark.parametrize("recompute", [False, True])
def test_gradients_match_finite_differences(recompute: bool) -> None:
    found = (_clear_of_the_jump(seed, recompute) for seed in range(100))
    mlp, X, Y = next(case for case in found if case is not None)
    grads, dX = _backward_grads(mlp, X, Y)
    params = [a for lin in mlp.linears for a in (lin.W, lin.b)]

    def loss() -> float:
        return log_loss(Y, mlp.predict_proba(X))

    for name, param, grad in zip(["W1", "b1", "W2", "b2", "W3", "b3"], params, grads,
                                 strict=True):
        assert _rel_error(grad, _numerical_grad(loss, param)) < 1e-6, name
    numerical_dX = _numerical_grad(lambda: log_loss(Y, mlp.predict_proba(X)), X)
    assert _rel_error(dX, numerical_dX) < 1e-6


def test_log_loss_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    Y = _labels(rng, 5, 4)
    P = rng.uniform(0.05, 0.95, size=(5, 4))
    numerical = _numerical_grad(lambda: log_loss(Y, P), P, eps=1e-7)
    assert _rel_error(get_grad_log_loss(Y, P), numerical) < 1e-7


def test_log_loss_hand_worked() -> None:
    # Two examples, two classes: -(1/2) [log .8 + log(1 - .4) + log(1 - .1) + log .7]
    Y = np.array([[1, 0], [0, 1]])
    P = np.array([[0.8, 0.4], [0.1, 0.7]])
    expected = -(np.log(0.8) + np.log(0.6) + np.log(0.9) + np.log(0.7)) / 2
    assert log_loss(Y, P) == pytest.approx(expected, rel=1e-15)


# ---- ScaledReLU -------------------------------------------------------------------------------


def test_scaled_relu_at_and_around_the_boundary() -> None:
    above = np.nextafter(1.0, 2.0)
    below = np.nextafter(1.0, 0.0)
    X = np.array([[-3.0, 0.0, 0.5, below, 1.0, above, 1.5, 10.0]])
    layer = ScaledReLU(8)
    out = layer.forward(X.copy())
    np.testing.assert_array_equal(out, [[0, 0, 0, 0, 0, 2 * above, 3.0, 20.0]])
    (grad,) = layer.backward(np.ones_like(X))
    np.testing.assert_array_equal(grad, [[0, 0, 0, 0, 0, 2, 2, 2]])


def test_scaled_relu_does_not_touch_its_input_unless_in_place() -> None:
    X = np.array([[0.5, 2.0]])
    ScaledReLU(2).forward(X)
    np.testing.assert_array_equal(X, [[0.5, 2.0]])
    ScaledReLU(2, inplace=True).forward(X)
    np.testing.assert_array_equal(X, [[0.0, 4.0]])


def test_a_linear_hands_its_output_to_the_next_layer_once() -> None:
    # The contract (nn's docstring): a Linear's output may be overwritten by the layer it
    # is passed to, once; the caller's own arrays never are.
    linear = Linear(2, 2, rng=0)
    linear.W[...] = np.eye(2)
    Z = linear.forward(np.array([[0.5, 2.0]]))
    out = ScaledReLU(2).forward(Z)
    assert out is Z  # in place: no second activation allocated
    again = ScaledReLU(2).forward(Z)
    assert again is not Z  # no longer a hand-off: left as it is
    np.testing.assert_array_equal(Z, [[0.0, 4.0]])
    grad = np.ones((1, 2))
    relu = ScaledReLU(2)
    relu.forward(np.array([[0.5, 2.0]]))
    (grad_in,) = relu.backward(grad)
    np.testing.assert_array_equal(grad, [[1.0, 1.0]])  # the caller's gradient is untouched
    np.testing.assert_array_equal(grad_in, [[0.0, 2.0]])


def test_sigmoid_leaves_the_callers_logits_alone() -> None:
    Z = np.array([[0.0, 1.0]])
    Sigmoid(2).forward(Z)
    np.testing.assert_array_equal(Z, [[0.0, 1.0]])


# ---- Sigmoid and the loss -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_is_stable_at_extreme_logits(dtype: type) -> None:
    Z = np.array([[-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4]], dtype=dtype)
    with np.errstate(all="raise"):
        P = Sigmoid(7).forward(Z)
    assert P.dtype == dtype
    assert np.isfinite(P).all()
    assert 0 < P[0, 0] < 1e-30
    assert P[0, 3] == 0.5
    assert P[0, -1] == 1.0
    assert np.all(np.diff(P[0]) >= 0)


def test_sigmoid_matches_the_formula() -> None:
    z = np.linspace(-30, 30, 601).reshape(1, -1)
    np.testing.assert_allclose(nn.sigmoid(z), 1 / (1 + np.exp(-z)), rtol=1e-15)


def test_sigmoid_keeps_relative_accuracy_far_below_one_half() -> None:
    z = np.array([[-50.0, -200.0, -700.0]])
    np.testing.assert_allclose(nn.sigmoid(z), np.exp(z), rtol=1e-13)


def test_loss_then_sigmoid_gradient_is_p_minus_y_over_n() -> None:
    rng = np.random.default_rng(2)
    n, c = 400, 5
    # Logits spanning the whole range where Y_hat is in [1e-6, 1 - 1e-6].
    Z = rng.uniform(-13.8, 13.8, size=(n, c))
    Y = _labels(rng, n, c)
    sig = Sigmoid(c)
    P = sig.forward(Z)
    assert P.min() >= 1e-6
    assert P.max() <= 1 - 1e-6
    (grad,) = sig.backward(get_grad_log_loss(Y, P))
    np.testing.assert_allclose(grad, (P - Y) / n, rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOATS)
def test_saturated_sigmoid_still_gets_the_full_gradient(dtype: type) -> None:
    Z = np.array([[50.0, -50.0], [1e4, -1e4]], dtype=dtype)
    Y = np.array([[0, 1], [0, 1]])  # every unit saturated on the wrong side
    sig = Sigmoid(2)
    P = sig.forward(Z)
    with np.errstate(all="raise"):
        (grad,) = sig.backward(get_grad_log_loss(Y, P))
    np.testing.assert_allclose(grad, (P - Y) / 2, rtol=1e-6)
    assert np.isfinite(log_loss(Y, P))


def test_network_saturated_on_the_wrong_side_recovers() -> None:
    rng = np.random.default_rng(3)
    n, d, h, c = 200, 4, 16, 2
    X = rng.standard_normal((n, d))
    Y = np.tile([1.0, 0.0], (n, 1))
    mlp = MLP(d, h, c, rng=rng)
    out = mlp.linears[2]
    out.W[:] = 0.0
    out.b[:] = [-50.0, 50.0]  # logits pushed to -+50 against the labels
    before = mlp.predict_proba(X)
    assert before[:, 0].max() < 1e-20
    assert before[:, 1].min() > 1 - 1e-15
    with np.errstate(all="raise"):
        mlp.sgd(X, Y, epochs=300)
    after = mlp.predict_proba(X)
    assert (after[:, 0] > 0.5).all()
    assert (after[:, 1] < 0.5).all()
    assert log_loss(Y, after) < 0.1 * log_loss(Y, before)


# ---- Linear -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_kaiming_statistics_on_a_large_layer(dtype: type) -> None:
    d_in, d_out = 1000, 2000
    layer = Linear(d_in, d_out, rng=0, dtype=dtype)
    assert layer.W.shape == (d_in, d_out)
    assert layer.b.shape == (d_out,)
    assert layer.W.dtype == dtype
    assert layer.b.dtype == dtype
    std = np.sqrt(2 / d_in)
    # 2e6 samples: the sample std is within 0.2 % of the true one, the mean within 0.1 std.
    assert abs(layer.W.std() / std - 1) < 0.005
    assert abs(layer.W.mean()) < 0.002 * std
    np.testing.assert_array_equal(layer.b, 0)
    # The columns are independent: their correlation is noise.
    corr = np.corrcoef(layer.W[:, :50].T)
    assert np.abs(corr[np.triu_indices(50, 1)]).max() < 0.2


def test_linear_rejects_wrong_width() -> None:
    with pytest.raises(ShapeError, match=r"expects X of shape \(n, 3\), got \(2, 4\)"):
        Linear(3, 2).forward(np.zeros((2, 4)))


def test_linear_backward_without_forward_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="without a forward pass"):
        Linear(3, 2).backward(np.zeros((1, 2)))


def test_only_float32_and_float64() -> None:
    with pytest.raises(ShapeError, match="float32 or float64"):
        MLP(2, 3, 1, dtype=np.float16)


# ---- MLP --------------------------------------------------------------------------------------


def test_seed_reproduces_weights_and_training() -> None:
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((300, 5)), _labels(rng, 300, 3)
    a, b = MLP(5, 8, 3, rng=11), MLP(5, 8, 3, rng=np.random.default_rng(11))
    a.sgd(X, Y, shuffle=True)
    b.sgd(X, Y, shuffle=True)
    for la, lb in zip(a.linears, b.linears, strict=True):
        np.testing.assert_array_equal(la.W, lb.W)
    assert not np.array_equal(MLP(5, 8, 3, rng=12).linears[0].W, MLP(5, 8, 3, rng=11).linears[0].W)


def test_predict_proba_equals_forward_and_keeps_nothing() -> None:
    rng = np.random.default_rng(5)
    mlp = MLP(5, 16, 3, rng=rng)
    X = rng.standard_normal((50, 5))
    P = mlp.predict_proba(X)
    _assert_no_caches(mlp)
    np.testing.assert_array_equal(P, mlp.forward(X))
    assert P.shape == (50, 3)


@pytest.mark.parametrize("recompute", [False, True])
def test_no_layer_holds_a_batch_after_a_step(recompute: bool) -> None:
    rng = np.random.default_rng(6)
    mlp = MLP(5, 16, 3, rng=rng, recompute=recompute)
    mlp.single_step_sgd(rng.standard_normal((64, 5)), _labels(rng, 64, 3))
    _assert_no_caches(mlp)


def _assert_no_caches(mlp: MLP) -> None:
    for layer in mlp.layers:
        for name, value in vars(layer).items():
            if isinstance(value, np.ndarray):
                assert name in ("W", "b"), f"{type(layer).__name__}.{name} is still held"


def test_recompute_gives_the_same_gradients() -> None:
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((300, 6)), _labels(rng, 300, 4)
    plain = MLP(6, 32, 4, rng=8)
    lean = MLP(6, 32, 4, rng=8, recompute=True)
    g_plain, dX_plain = _backward_grads(plain, X, Y)
    g_lean, dX_lean = _backward_grads(lean, X, Y)
    for a, b in zip(g_plain, g_lean, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dX_plain, dX_lean, rtol=1e-12, atol=1e-15)


def test_skipping_the_input_gradient_changes_nothing_else() -> None:
    rng = np.random.default_rng(9)
    X, Y = rng.standard_normal((200, 6)), _labels(rng, 200, 4)
    full, lean = MLP(6, 16, 4, rng=1), MLP(6, 16, 4, rng=1, input_grad=False)
    g_full, _ = _backward_grads(full, X, Y)
    g_lean, dX = _backward_grads(lean, X, Y)
    assert dX is None
    for a, b in zip(g_full, g_lean, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float32_end_to_end() -> None:
    rng = np.random.default_rng(10)
    mlp = MLP(5, 16, 3, rng=rng, dtype=np.float32)
    X = rng.standard_normal((40, 5))  # float64 readings: converted once, at the input
    Y = _labels(rng, 40, 3)  # float64 labels must not upcast the gradient
    outputs = []
    out = X
    for layer in mlp.layers:
        out = layer.forward(out)
        outputs.append(out)
    grad = get_grad_log_loss(Y, out)
    grads = [grad]
    for layer in mlp.layers[::-1]:
        grad, *param_grads = layer.backward(grad)
        grads += [grad, *param_grads]
        layer.update_params_(*param_grads, lr=0.1)
    assert {a.dtype for a in outputs + grads} == {np.dtype(np.float32)}
    assert {a.dtype for lin in mlp.linears for a in (lin.W, lin.b)} == {np.dtype(np.float32)}
    assert mlp.predict_proba(X).dtype == np.float32


def test_float32_trains_like_float64() -> None:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((2000, 4))
    Y = np.stack([X[:, 0] * X[:, 1] > 0, X[:, 2] > 0.3], axis=1).astype(float)
    losses = {}
    for dtype in FLOATS:
        mlp = MLP(4, 32, 2, rng=5, dtype=dtype)
        mlp.sgd(X, Y)
        losses[dtype] = mlp.loss(X, Y)
    # Rounding sends the two runs down slightly different paths; they end as good.
    assert losses[np.float32] == pytest.approx(losses[np.float64], rel=5e-2)
    assert losses[np.float64] < 0.5 * 2 * np.log(2)


# ---- memory -----------------------------------------------------------------------------------


def _peak_step_memory(mlp: MLP, X: np.ndarray, Y: np.ndarray) -> int:
    """Bytes allocated at the peak of one single_step_sgd beyond what existed before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        mlp.single_step_sgd(X, Y)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_peak_memory_of_a_training_step() -> None:
    """The issue's yardstick: n=10,000, d=64, h=1024, c=16, float64."""
    n, d, h, c = 10_000, 64, 1024, 16
    rng = np.random.default_rng(12)
    X = rng.standard_normal((n, d))
    Y = _labels(rng, n, c)
    activations = 2 * n * h * 8  # the two hidden activations: the unavoidable part
    default = _peak_step_memory(MLP(d, h, c, rng=0), X, Y) / activations
    recompute = _peak_step_memory(MLP(d, h, c, rng=0, recompute=True), X, Y) / activations
    print(f"peak / 2nh floats: default {default:.3f}, recompute {recompute:.3f}")
    # Bit-packed masks: the default keeps 1/64 of an activation per mask beyond the two.
    assert default <= 1.1
    assert recompute <= default


def test_from_params_wraps_the_arrays_without_drawing_or_copying() -> None:
    net = MLP(3, 5, 2, rng=4, dtype=np.float32)
    params = [a for lin in net.linears for a in (lin.W, lin.b)]
    rebuilt = MLP.from_params(*params)
    assert (rebuilt.d, rebuilt.h, rebuilt.c, rebuilt.dtype) == (3, 5, 2, np.float32)
    assert all(a is b for a, b in zip(params, [a for lin in rebuilt.linears
                                                for a in (lin.W, lin.b)], strict=True))
    X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.predict_proba(X), net.predict_proba(X))
    params[2] = np.zeros((4, 5), dtype=np.float32)  # W2 (h, h) with h = 5: does not chain
    with pytest.raises(ShapeError, match="do not chain"):
        MLP.from_params(*params)
