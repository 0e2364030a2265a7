"""The reference network (``docs/spec.md``): the ``MLP`` that trains and serves.

Its ``forward``, ``sgd`` and ``single_step_sgd`` are the specification's text (plus
keyword-only options), so code written against that class runs on this one. Around it:
constructors from saved parameters (the model file, :mod:`robot_daemon.model`), and the
serving path :meth:`MLP.predict_proba`, which keeps nothing and makes as few NumPy calls
as it can: one reading goes through each layer as ``[x, 1]`` times the layer's block
``[W; b]``, a batch through this thread's reused buffers (:mod:`robot_daemon.nn.buffers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from robot_daemon.errors import ShapeError
from robot_daemon.nn.activations import scaled_relu_, sigmoid
from robot_daemon.nn.arrays import Array, DTypeLike, float_dtype
from robot_daemon.nn.buffers import SCRATCH
from robot_daemon.nn.counting import affine, matmul
from robot_daemon.nn.layers import Layer, Linear, ScaledReLU, Seed, Sigmoid, to_generator
from robot_daemon.nn.loss import get_grad_log_loss, log_loss


class MLP:
    """The reference network (``docs/spec.md``), with optional seed, dtype and memory modes.

    ``MLP(d, h, c)`` behaves exactly as the class in ``docs/spec.md``; the keyword-only
    additions are:

    rng : int seed or ``np.random.Generator`` for the Kaiming initialisation (and the
        shuffling of :meth:`sgd`); ``None`` draws from NumPy's global state, so that
        ``np.random.seed(s)`` before ``MLP(d, h, c)`` reproduces a run.
    dtype : float64 (default) or float32, used for parameters, activations and gradients.
    recompute : keep no ScaledReLU masks; recompute them in backward (lower peak memory,
        one more forward matmul per hidden layer and step).
    input_grad : ``False`` lets the first layer skip the gradient of its input, which the
        reference loop computes and throws away (``True``, the default, is the
        specification's text).
    """

    def __init__(
        self,
        d: int,
        h: int,
        c: int,
        *,
        rng: Seed = None,
        dtype: DTypeLike = np.float64,
        recompute: bool = False,
        input_grad: bool = True,
    ) -> None:
        generator = to_generator(rng)
        self.rng = generator
        self.dtype = float_dtype(dtype)
        self.d, self.h, self.c = d, h, c
        l1 = Linear(d, h, rng=generator, dtype=dtype, input_grad=input_grad)
        l2 = Linear(h, h, rng=generator, dtype=dtype)
        l3 = Linear(h, c, rng=generator, dtype=dtype)
        self._stack(l1, l2, l3, recompute=recompute)

    @classmethod
    def from_params(
        cls, W1: Array, b1: Array, W2: Array, b2: Array, W3: Array, b3: Array, *,
        rng: Seed = None,
    ) -> MLP:
        """An MLP with copies of saved parameters (nothing drawn).

        W1 (d, h), b1 (h,), W2 (h, h), b2 (h,), W3 (h, c), b3 (c,), all float32 or all
        float64, each pair copied into its layer's block (:class:`Linear`).
        ``MLP(d, h, c)`` followed by assignments would first draw a random network of the
        same size: twice the time of the load itself. ``rng`` as for ``MLP(d, h, c)`` (it
        shuffles in :meth:`sgd`). Raises ShapeError if the shapes do not chain or the
        dtypes differ.
        """
        return cls._around(Linear.from_params(W1, b1), Linear.from_params(W2, b2),
                           Linear.from_params(W3, b3), rng=rng)

    @classmethod
    def from_blocks(cls, Wb1: Array, Wb2: Array, Wb3: Array, *, rng: Seed = None) -> MLP:
        """An MLP around parameter blocks, used as they are (nothing drawn, nothing copied).

        Wb1 (d + 1, h), Wb2 (h + 1, h), Wb3 (h + 1, c): each layer's W above its b (see
        :class:`Linear`), all float32 or all float64. A model file read straight into
        blocks loads with no second copy of its parameters in memory. ``rng`` and errors
        as for :meth:`from_params`.
        """
        return cls._around(Linear.from_block(Wb1), Linear.from_block(Wb2),
                           Linear.from_block(Wb3), rng=rng)

    @classmethod
    def _around(cls, l1: Linear, l2: Linear, l3: Linear, *, rng: Seed) -> MLP:
        """An MLP of these three layers, once their shapes chain and their dtypes agree."""
        (d, h), c = l1.shape, l3.shape[1]
        if (l2.shape != (h, h) or l3.shape[0] != h
                or len({lin.Wb.dtype for lin in (l1, l2, l3)}) != 1):
            raise ShapeError("MLP parameters do not chain: " + ", ".join(
                f"W{i} {lin.Wb.dtype} {lin.shape}" for i, lin in enumerate((l1, l2, l3), 1)))
        mlp = cls.__new__(cls)
        mlp.rng = to_generator(rng)
        mlp.dtype = float_dtype(l1.Wb.dtype)
        mlp.d, mlp.h, mlp.c = d, h, c
        mlp._stack(l1, l2, l3, recompute=False)
        return mlp

    def _stack(self, l1: Linear, l2: Linear, l3: Linear, *, recompute: bool) -> None:
        """The six layers around the three Linear ones (recompute: see the class)."""
        h, c = l2.shape[0], l3.shape[1]
        r1, r2 = (l1, l2) if recompute else (None, None)
        self.layers: list[Layer] = [
            l1, ScaledReLU(h, inplace=True, recompute_from=r1),  # input_layer
            l2, ScaledReLU(h, inplace=True, recompute_from=r2),  # hidden_layer
            l3, Sigmoid(c, inplace=True),  # output_layer
        ]  # fmt: skip

    @property
    def linears(self) -> tuple[Linear, Linear, Linear]:
        """The three ``Linear`` layers, input to output."""
        l1, _, l2, _, l3, _ = self.layers
        if not (isinstance(l1, Linear) and isinstance(l2, Linear) and isinstance(l3, Linear)):
            raise TypeError("MLP.layers no longer has Linear layers at positions 0, 2 and 4")
        return l1, l2, l3

    def copy_params(self) -> list[Array]:
        """Copies of W1, b1, W2, b2, W3, b3, to put back later with :meth:`set_params`."""
        return [a.copy() for lin in self.linears for a in (lin.W, lin.b)]

    def set_params(self, params: Sequence[Array]) -> None:
        """Write ``params`` (as :meth:`copy_params` gives them) into the weights, in place."""
        values = iter(params)
        for lin in self.linears:
            lin.W[...] = next(values)
            lin.b[...] = next(values)

    def clear_caches(self) -> None:
        """Drop what a forward pass kept, e.g. after a training step abandoned half-way."""
        for layer in self.layers:
            if isinstance(layer, Linear):
                layer.X = None
            elif isinstance(layer, ScaledReLU):
                layer.mask = None
            else:
                layer.P = None

    def forward(self, X: Array) -> Array:
        """Predict classes for a batch of n examples"""
        out = X  # in R^{n x d}
        for layer in self.layers:
            out = layer.forward(out)
        return out

    def logits(self, X: npt.ArrayLike) -> Array:
        """The logits (n, c) for readings X (n, d): :meth:`predict_proba` before its
        sigmoid, on the same path (one reading, or a batch). For the model checks."""
        readings = self._readings(X)
        l1, l2, l3 = self.linears
        if readings.shape[0] == 1:
            return self._logits_one(readings, l1, l2, l3)[None]
        return self._logits(readings, l1, l2, l3)

    def predict_proba(self, X: npt.ArrayLike) -> Array:
        """Probabilities (n, c) for readings X (n, d); keeps no activation anywhere.

        This is the serving path: nothing is cached, so the daemon can call it many
        times a second without holding training memory (each thread reuses two buffers of
        at most :data:`~robot_daemon.nn.buffers.SCRATCH_MAX_BYTES` for the hidden
        activations of a batch; the array returned is new). The parameters are read from
        the layers on every call: a change to them shows in the very next prediction.
        """
        # The layers' predict() in a row, flattened: at one reading per call, the per-layer
        # dispatch and input checks cost as much as the arithmetic (so _readings' lines, not
        # a call of it).
        readings = np.asarray(X, dtype=self.dtype)
        if readings.ndim != 2 or readings.shape[1] != self.d:
            raise ShapeError(f"MLP expects readings of shape (n, {self.d}), got"
                             f" {readings.shape}")
        l1, l2, l3 = self.linears
        if readings.shape[0] == 1:
            z = self._logits_one(readings, l1, l2, l3)
            return sigmoid(z, out=z)[None]
        Z = self._logits(readings, l1, l2, l3)
        return sigmoid(Z, out=Z)

    def _readings(self, X: npt.ArrayLike) -> Array:
        """``X`` as (n, d) readings of the network's dtype (a copy only to convert)."""
        readings = np.asarray(X, dtype=self.dtype)
        if readings.ndim != 2 or readings.shape[1] != self.d:
            raise ShapeError(f"MLP expects readings of shape (n, {self.d}), got"
                             f" {readings.shape}")
        return readings

    def _logits(self, readings: Array, l1: Linear, l2: Linear, l3: Linear) -> Array:
        """The batch path: readings (n, d) -> logits (n, c), a new array."""
        A1, A2 = SCRATCH.hidden(self.dtype, readings.shape[0], self.h) or (None, None)
        Z = matmul(readings, l1.W, out=A1)
        Z += l1.b
        Z = matmul(scaled_relu_(Z), l2.W, out=A2)
        Z += l2.b
        Z = matmul(scaled_relu_(Z), l3.W)  # a new array: the only one returned
        Z += l3.b
        return Z

    def _logits_one(self, x: Array, l1: Linear, l2: Linear, l3: Linear) -> Array:
        """x (1, d) -> logits (c,), a new array: the batch path's on a vector.

        At one reading the time goes to NumPy calls, not arithmetic, so this path makes
        the fewest: the reading and each hidden activation go into this thread's
        augmented vectors ``[v, 1]``
        (:class:`~robot_daemon.nn.buffers.Scratch`), whose product with a layer's
        block ``Wb`` is ``v @ W + b`` in one matrix-vector product, and 1-D ufuncs skip
        the 2-D bookkeeping. The products and sums are the batch path's, but BLAS may add
        the bias inside its sum rather than after it: a logit can then differ in its last
        bit or two (at (16, 64, 8) the probabilities are identical here).
        """
        x1, x_part, a1, a1_part, a2, a2_part = SCRATCH.vectors(self.dtype, self.d, self.h)
        x_part[...] = x  # (1, d) into (d,): indexing x[0] first would cost a call more
        scaled_relu_(affine(x1, l1.Wb, out=a1_part))
        scaled_relu_(affine(a1, l2.Wb, out=a2_part))
        return affine(a2, l3.Wb)  # a new array: the only one this function returns

    def loss(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> float:
        """Mean negative log-likelihood of labels Y (n, c) given readings X (n, d)."""
        return log_loss(Y, self.predict_proba(X))

    def sgd(
        self,
        X_train: Array,
        Y_train: npt.NDArray[Any],
        *,
        epochs: int = 10,
        bs: int = 100,
        lr: float = 0.1,
        shuffle: bool = False,
    ) -> None:
        # Train each layer of the MLP with SGD
        """Train with minibatch SGD: ``epochs`` passes over the data in batches of ``bs``.

        The defaults are the reference schedule of ``docs/spec.md`` (10 epochs, batch 100,
        lr 0.1, data in order).
        ``shuffle=True`` visits the examples in a new order each epoch, drawn from
        ``self.rng`` (NumPy's global state when it is None). X_train : (n, d);
        Y_train : (n, c).
        """
        n_train = len(X_train)
        for _ in range(epochs):
            order = self._permutation(n_train) if shuffle else None
            for b_idx in range(0, n_train, bs):
                if order is None:
                    X_batch = X_train[b_idx:b_idx + bs]
                    Y_batch = Y_train[b_idx:b_idx + bs]
                else:
                    rows = order[b_idx:b_idx + bs]
                    X_batch, Y_batch = X_train[rows], Y_train[rows]
                # update all parameters
                self.single_step_sgd(X_batch, Y_batch, lr=lr)

    def _permutation(self, n: int) -> npt.NDArray[np.intp]:
        return np.random.permutation(n) if self.rng is None else self.rng.permutation(n)  # noqa: NPY002

    def single_step_sgd(self, X: Array, Y: npt.ArrayLike, *, lr: float = 0.1) -> None:
        # X in R^{n x d}, Y in R^{n x c}
        """Train the MLP with a single step of batched SGD."""
        loss_nabla_O: Any  # an (n, .) array; None below a first layer with input_grad=False
        Y_hat = self.forward(X)  # in R^{n x c}
        loss_nabla_O = get_grad_log_loss(Y, Y_hat)
        for layer in self.layers[::-1]:  # backward pass reverses layers
            loss_nabla_O, *param_grads = layer.backward(loss_nabla_O)
            layer.update_params_(*param_grads, lr=lr)
