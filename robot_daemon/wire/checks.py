"""Checks of single fields, shared by the encoders and the decoders, and the one way
they fail: :func:`fail` raises :class:`~robot_daemon.errors.WireError` with a reason."""

from __future__ import annotations

import math
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from robot_daemon.errors import WireError
from robot_daemon.wire.messages import INT64_MAX, MAX_C


def fail(reason: str, message: str) -> NoReturn:
    raise WireError(reason, message)


def all_finite(a: NDArray[Any]) -> bool:
    # For a frame (d = 16) the Python sum of tolist() is ~4x faster than np.isfinite().all():
    # a sum of finite float32 values cannot overflow a float64, and NaN/inf propagate
    # (inf + -inf is NaN), so the sum is finite exactly when every value is.
    if a.size <= 64:
        return math.isfinite(sum(a.tolist() if a.ndim == 1 else a.ravel().tolist()))
    return bool(np.isfinite(a).all())


def int_field(value: Any, name: str, negative_reason: str) -> int:
    # type() rather than isinstance(): bool is a subclass of int and must be refused.
    if type(value) is not int:
        fail("wrong_type", f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        fail(negative_reason, f"{name} must be >= 0, got {value}")
    if value > INT64_MAX:
        fail("out_of_range", f"{name} must fit in int64, got {value}")
    return value


def str_field(value: Any, name: str) -> str:
    if type(value) is not str:
        fail("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    return value


def src_field(value: Any, name: str = "src") -> str:
    """A publisher's name: a string (:func:`printable_src`)."""
    return printable_src(str_field(value, name), name)


def printable_src(src: str, name: str = "src") -> str:
    """``src`` if every character of it is printable (``str.isprintable``), else refused.

    A ``src`` travels on into ``pred``, ``status``, the log and every terminal that shows
    them; a control character in it (an ESC sequence that clears a screen, a bidi override
    that reorders a line) would act there, so it is refused where it enters.
    """
    if not src.isprintable():
        # repr() escapes what is not printable: the message is safe to log and show.
        fail("bad_src", f"{name} {src!r} holds a character that is not printable "
             "(a control character, a bidi override or a line separator): send a plain name")
    return src


def pred_src_field(value: Any) -> None:
    """Check the names in the ``src`` extra of a ``pred`` (open: any other shape is left
    alone): a string, or a list whose strings are names, each printable (``bad_src``)."""
    if type(value) is str:
        src_field(value)
    elif type(value) is list:
        try:
            names = set(value)  # a tick's rows share a few names: check each once
        except TypeError:  # an unhashable entry (a list, a map) is no name: skip it
            names = {name for name in value if type(name) is str}
        for name in names:
            if type(name) is str:
                src_field(name, "a src entry")


def check_probs(p: NDArray[np.float32]) -> None:
    c = p.shape[1]
    if not 1 <= c <= MAX_C:
        fail("wrong_c", f"p must have 1..{MAX_C} classes, got {c}")
    # Two reductions where most payloads pass: a NaN makes min() NaN and an infinity lies
    # outside [0, 1], so the finiteness check runs only to name the reason.
    if not (p.min() >= 0.0 and p.max() <= 1.0):
        if not all_finite(p):
            fail("non_finite", "p holds NaN or infinity")
        fail("out_of_range", "p must hold probabilities in [0, 1]")
