"""The deployable model file: one ``.npz`` that loads without pickle and is validated.

A :class:`Model` is the reference :class:`~robot_daemon.nn.MLP` plus what it needs to face
raw sensor readings: the input normalisation, the feature and class names, per-class
thresholds and the training metadata, in one ``.npz`` of plain arrays (format version 1).
:meth:`Model.save` writes atomically; :func:`load` treats the file as hostile
(:mod:`robot_daemon.npz`) and raises :class:`~robot_daemon.errors.ModelError` naming the
problem, whatever the bytes.

Design: docs/architecture.md, "The model file".
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from robot_daemon import nn, npz
from robot_daemon.errors import ModelError
from robot_daemon.moments import scale_of
from robot_daemon.nn import MLP, Array
from robot_daemon.printable import printable
from robot_daemon.wire import messages as wire_messages

FORMAT_VERSION = 1
#: Longest feature or class name accepted.
MAX_NAME_LENGTH = 64
#: Widest hidden layer accepted. A tick's forward pass costs about 2 h^2 FLOPs per frame:
#: at h = 4096, 34 MFLOP, tens of ms for one frame on a robot's core, so a wider model
#: could not serve a 20 ms tick anyway; it is a mistake or an attack, refused from ``meta``.
MAX_H = 4096
#: Most features and classes: those of the wire protocol (``MAX_D``, ``MAX_C`` in
#: :mod:`robot_daemon.wire`); no frame could feed a wider model, no pred carry its answer.
MAX_D = wire_messages.MAX_D
MAX_C = wire_messages.MAX_C
#: Largest network, in bytes of parameters (W1 b1 W2 b2 W3 b3). A reload holds the old
#: model, the new file and the new arrays at once: about 3 x 128 MiB at this limit. It
#: admits h = 4096 in float32 (64 MiB), about h = 4000 in float64.
MAX_PARAM_BYTES = 128 << 20
#: Longest ``meta`` JSON, in characters (the training metadata: a few hundred in practice).
MAX_META_CHARS = 1 << 16
#: Largest total the members may declare (zip bombs): the parameters at their limit, plus
#: names, normalisation, thresholds and meta at theirs (under 2 MiB), plus headers.
MAX_UNCOMPRESSED_BYTES = MAX_PARAM_BYTES + (4 << 20)
#: Largest model file read (a stored member is its data plus about 200 bytes of headers;
#: deflate can grow incompressible data by 0.03 %).
MAX_FILE_BYTES = MAX_UNCOMPRESSED_BYTES + (1 << 20)

_PARAMS = ("W1", "b1", "W2", "b2", "W3", "b3")
_MEMBERS = frozenset(
    (*_PARAMS, "mean", "scale", "thresholds", "feature_names", "class_names", "meta")
)
#: Members an archive may declare before its directory is read (12 are needed; the rest
#: to name the unexpected ones).
_MAX_MEMBERS = 64


@dataclass
class Model:
    """An MLP with its input normalisation, names, thresholds and training metadata.

    mlp : the network, trained on normalised readings.
    mean, scale : ndarray (d,) float64; ``x_norm = (x_raw - mean) / scale``, scale > 0.
    feature_names : d names; class_names : c names.
    thresholds : ndarray (c,) float64 in [0, 1], per-class decision thresholds.
    training : JSON-serialisable description of how the model was made.
    """

    mlp: MLP
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    feature_names: list[str]
    class_names: list[str]
    thresholds: npt.NDArray[np.float64]
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def d(self) -> int:
        return self.mlp.d

    @property
    def h(self) -> int:
        return self.mlp.h

    @property
    def c(self) -> int:
        return self.mlp.c

    def normalize(self, X_raw: npt.ArrayLike) -> Array:
        """Raw readings (n, d) -> normalised readings (n, d) in the model's dtype."""
        # Subtract in float64: raw readings with large offsets (a temperature in kelvin)
        # would lose their significant digits in float32 before the mean is removed.
        X = np.asarray(X_raw, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.d:
            raise ModelError(f"the model expects readings of shape (n, {self.d}), got {X.shape}")
        X_norm: Array = X - self.mean
        X_norm /= self.scale  # in place: one array of (n, d) the fewer
        return X_norm.astype(self.mlp.dtype, copy=False)

    def predict_proba(self, X_raw: npt.ArrayLike) -> Array:
        """Raw readings (n, d) -> probabilities (n, c); keeps no activation."""
        return self.mlp.predict_proba(self.normalize(X_raw))

    def predict(self, X_raw: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Raw readings (n, d) -> obstacle present (n, c) bool, per-class thresholds."""
        return self.predict_proba(X_raw) >= self.thresholds

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path`` atomically: the old file or the new one, never half."""
        data = self.to_bytes()
        write_atomically(Path(path), lambda f: f.write(data))

    def to_bytes(self) -> bytes:
        """The model file's bytes, validated: what :meth:`save` writes (about 40 KB at h=64)."""
        _validate(self)
        buffer = io.BytesIO()
        _write_npz(buffer, _to_arrays(self))
        return buffer.getvalue()


def _write_npz(f: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` made byte-for-byte reproducible: fixed member timestamps and order.

    ``np.savez`` stamps every member with the current time, so two saves of the same
    model differ; the default model must regenerate bit for bit.
    """
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arrays[name], allow_pickle=False)


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file is fsynced before the rename and the directory after it, so that
    after a crash (power loss included) ``path`` holds either its old or its new content.
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    directory = path.parent
    mode = _file_mode(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600: the daemon's user could not read it
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _file_mode(path: Path) -> int:
    """The permissions a replaced file keeps, or those ``open()`` would give a new one."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def from_mlp(
    mlp: MLP,
    *,
    mean: npt.ArrayLike | None = None,
    scale: npt.ArrayLike | None = None,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    thresholds: npt.ArrayLike | None = None,
    training: Mapping[str, Any] | None = None,
) -> Model:
    """A :class:`Model` around ``mlp`` with defaults: identity normalisation, names
    ``feature_0 ...`` and ``class_0 ...``, thresholds 0.5."""
    d, c = mlp.d, mlp.c
    return Model(
        mlp=mlp,
        mean=np.zeros(d) if mean is None else np.array(mean, dtype=np.float64),
        scale=np.ones(d) if scale is None else np.array(scale, dtype=np.float64),
        feature_names=list(feature_names or [f"feature_{i}" for i in range(d)]),
        class_names=list(class_names or [f"class_{j}" for j in range(c)]),
        thresholds=np.full(c, 0.5) if thresholds is None else np.array(thresholds, float),
        training=dict(training or {}),
    )


# ---- identity -----------------------------------------------------------------------------


def identity(model: Model, path: str | os.PathLike[str]) -> str:
    """``<file stem>-<12 hex digits>``: the name of ``model``, loaded from ``path``, in
    every ``pred`` it produces: the daemon's (and its ``status``'s ``model_version``),
    ``replay``'s, and ``eval --json``'s ``model``, so that they can be matched.

    The digits begin the SHA-256 of the parameters and the normalisation (each layer's
    ``W`` and ``b``, then ``mean`` and ``scale``, as held in memory, dtype included): what
    computes the probabilities. Hashing what was loaded, not the file, names exactly what
    produced a prediction, even when the file is replaced while it is being read; names,
    thresholds and training metadata do not change ``p`` and are not hashed.
    """
    digest = hashlib.sha256()
    for lin in model.mlp.linears:
        digest.update(np.ascontiguousarray(lin.W).tobytes())
        digest.update(np.ascontiguousarray(lin.b).tobytes())
    digest.update(np.ascontiguousarray(model.mean).tobytes())
    digest.update(np.ascontiguousarray(model.scale).tobytes())
    # The stem is a file name, shown in logs, `status` and `watch`: escaped if need be.
    return f"{printable(Path(path).stem)}-{digest.hexdigest()[:12]}"


# ---- loading ------------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> Model:
    """Read and validate a model file; raise :class:`ModelError` naming any problem.

    Only a regular file of at most MAX_FILE_BYTES that ends like a zip is read (a FIFO, a
    device or a directory is refused without reading), once, into memory; then see
    :func:`from_bytes`.
    """
    path = Path(path)
    try:
        data = npz.read_archive(path, MAX_FILE_BYTES, max_members=_MAX_MEMBERS)
    except ModelError as exc:
        raise ModelError(f"model file {path} {exc}") from None
    try:
        return from_bytes(data)
    except ModelError as exc:
        raise ModelError(f"model file {path}: {exc}") from None


def from_bytes(data: bytes) -> Model:
    """Parse and validate a model file's bytes (:meth:`Model.to_bytes`'s).

    Treats them as hostile: the sizes the zip directory and the ``.npy`` headers declare
    are checked against ``meta`` and the limits (MAX_D, MAX_H, MAX_C, MAX_PARAM_BYTES,
    MAX_UNCOMPRESSED_BYTES) before anything is inflated or allocated.

    Raises:
        ModelError: naming the problem; nothing else escapes, whatever the bytes.
    """
    try:
        with npz.Archive(data, max_members=_MAX_MEMBERS) as archive:
            _check_members(archive)
            meta = _parse_meta(archive.read("meta", _strings("meta", (), MAX_META_CHARS)))
            blocks = _blocks(meta)
            into = _parts(blocks)
            arrays = {name: archive.read(name, check, into.get(name))
                      for name, check in _checks(meta).items()}
        return _from_arrays(meta, arrays, blocks)
    except ModelError:
        raise
    except Exception as exc:
        # A damaged archive surfaces as whatever the layer that trips over it raises
        # (zipfile: BadZipFile, NotImplementedError; zlib.error; a name that is not text):
        # all of them mean the same thing here.
        raise ModelError(f"unreadable or corrupt ({type(exc).__name__}: {exc})") from None


def _check_members(archive: npz.Archive) -> None:
    names = set(archive.members)
    missing = sorted(_MEMBERS - names)
    unknown = sorted(names - _MEMBERS)
    if missing or unknown:
        raise ModelError(
            f"has the wrong members (missing {missing}, unexpected {unknown[:20]});"
            " is it a robot_daemon model of format version 1?"
        )
    total = archive.declared_bytes()
    if total > MAX_UNCOMPRESSED_BYTES:
        raise ModelError(
            f"would decompress to {total:,} bytes, over the limit of"
            f" {MAX_UNCOMPRESSED_BYTES:,}: refused"
        )


def _checks(meta: Mapping[str, Any]) -> dict[str, npz.Check]:
    """What each member but ``meta`` must be, given ``meta``: name -> its check."""
    d, h, c, dtype = meta["d"], meta["h"], meta["c"], np.dtype(meta["dtype"])
    f64 = np.dtype(np.float64)
    return {
        "W1": _floats("W1", (d, h), dtype), "b1": _floats("b1", (h,), dtype),
        "W2": _floats("W2", (h, h), dtype), "b2": _floats("b2", (h,), dtype),
        "W3": _floats("W3", (h, c), dtype), "b3": _floats("b3", (c,), dtype),
        "mean": _floats("mean", (d,), f64),
        "scale": _floats("scale", (d,), f64),
        "thresholds": _floats("thresholds", (c,), f64),
        "feature_names": _strings("feature_names", (d,), MAX_NAME_LENGTH),
        "class_names": _strings("class_names", (c,), MAX_NAME_LENGTH),
    }  # fmt: skip


def _floats(name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> npz.Check:
    """Accept exactly ``dtype`` (byte order included) and ``shape``."""

    def check(got: np.dtype[Any], got_shape: tuple[int, ...]) -> None:
        if got != dtype:
            raise ModelError(f"member '{name}' has dtype {got}, expected {dtype}")
        if got_shape != shape:
            raise ModelError(f"member '{name}' has shape {got_shape}, expected {shape}")

    return check


def _strings(name: str, shape: tuple[int, ...], max_chars: int) -> npz.Check:
    """Accept unicode strings of at most ``max_chars`` characters, in ``shape``."""
    what = "a JSON string" if shape == () else f"{shape[0]} strings"

    def check(got: np.dtype[Any], got_shape: tuple[int, ...]) -> None:
        if got.kind != "U" or got_shape != shape:
            raise ModelError(f"member '{name}' must be {what}, got {got} {got_shape}")
        if got.itemsize // 4 > max_chars:
            raise ModelError(f"member '{name}' holds strings of {got.itemsize // 4:,}"
                             f" characters, over the limit of {max_chars:,}")

    return check


def _blocks(meta: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's three parameter blocks (``Linear.Wb``), of the size ``meta`` gives.

    The members W1 ... b3 are read straight into them: a load holds the parameters once.
    """
    d, h, c, dtype = meta["d"], meta["h"], meta["c"], np.dtype(meta["dtype"])
    return (np.empty((d + 1, h), dtype), np.empty((h + 1, h), dtype),
            np.empty((h + 1, c), dtype))


def _parts(blocks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """W1, b1, ..., b3 as views into their blocks: W the rows above b, b the last row."""
    return {name: part for i, Wb in enumerate(blocks, 1)
            for name, part in ((f"W{i}", Wb[:-1]), (f"b{i}", Wb[-1]))}


def _from_arrays(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                 blocks: Sequence[np.ndarray]) -> Model:
    """The model, from arrays whose dtypes and shapes were checked against ``meta`` and
    the parameter blocks the members W1 ... b3 were read into."""
    for name in (*_PARAMS, "mean", "scale", "thresholds"):
        if not np.isfinite(arrays[name]).all():
            raise ModelError(f"member '{name}' contains NaN or infinite values")
    Wb1, Wb2, Wb3 = blocks
    return Model(
        mlp=MLP.from_blocks(Wb1, Wb2, Wb3, rng=0),
        mean=arrays["mean"],
        scale=arrays["scale"],
        feature_names=[str(s) for s in arrays["feature_names"]],
        class_names=[str(s) for s in arrays["class_names"]],
        thresholds=arrays["thresholds"],
        training=meta["training"],
    )


def _parse_meta(raw: np.ndarray) -> dict[str, Any]:
    try:
        meta = json.loads(str(raw))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5,000-digit number
        raise ModelError(f"member 'meta' is not valid JSON: {_short(exc)}") from None
    if not isinstance(meta, dict):
        raise ModelError("member 'meta' must be a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"format version {_short(version)} is not supported (this robot_daemon reads"
            f" version {FORMAT_VERSION}); retrain or convert the model"
        )
    for key in ("d", "h", "c"):
        if type(meta.get(key)) is not int:
            raise ModelError(f"meta '{key}' must be an integer, got {_short(meta.get(key))}")
    if meta.get("dtype") not in ("float32", "float64"):
        raise ModelError(f"meta 'dtype' must be float32 or float64, got"
                         f" {_short(meta.get('dtype'))}")
    if not isinstance(meta.setdefault("training", {}), dict):
        raise ModelError("meta 'training' must be a JSON object")
    _check_size(meta["d"], meta["h"], meta["c"], np.dtype(meta["dtype"]))
    return meta


def _check_size(d: int, h: int, c: int, dtype: np.dtype[Any]) -> None:
    """Refuse a network beyond MAX_D, MAX_H, MAX_C or MAX_PARAM_BYTES (load and save)."""
    for key, value, limit in (("d", d, MAX_D), ("h", h, MAX_H), ("c", c, MAX_C)):
        if not 1 <= value <= limit:
            raise ModelError(f"'{key}' must be in [1, {limit}], got {value}")
    size = (d * h + h + h * h + h + h * c + c) * dtype.itemsize
    if size > MAX_PARAM_BYTES:
        raise ModelError(f"a network of d={d}, h={h}, c={c} in {dtype} takes {size:,} bytes,"
                         f" over the limit of {MAX_PARAM_BYTES:,}: refused")


def _short(value: object) -> str:
    """``repr(value)`` cut to a length fit for a log line (a hostile file chooses it)."""
    text = repr(value) if not isinstance(value, Exception) else str(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# ---- validation and writing -------------------------------------------------------------------


def _validate(model: Model) -> None:
    """Raise ModelError unless every part of ``model`` is consistent, finite and within
    the size limits (a model that :func:`load` would refuse is never written)."""
    d, c = model.mlp.d, model.mlp.c
    _check_size(d, model.mlp.h, c, model.mlp.dtype)
    for name, a, size in (("mean", model.mean, d), ("scale", model.scale, d),
                          ("thresholds", model.thresholds, c)):
        if not isinstance(a, np.ndarray) or a.shape != (size,) or a.dtype != np.float64:
            raise ModelError(f"'{name}' must be a float64 array of shape ({size},)")
        if not np.isfinite(a).all():
            raise ModelError(f"'{name}' contains NaN or infinite values")
    if not (model.scale > 0).all():
        raise ModelError("'scale' must be positive: a zero scale would divide by zero")
    if not ((model.thresholds >= 0) & (model.thresholds <= 1)).all():
        raise ModelError("'thresholds' must lie in [0, 1]")
    for lin in model.mlp.linears:
        if not (np.isfinite(lin.W).all() and np.isfinite(lin.b).all()):
            raise ModelError("the network's weights contain NaN or infinite values")
    _validate_names("feature_names", model.feature_names, d)
    _validate_names("class_names", model.class_names, c)
    try:
        json.dumps(model.training, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"'training' metadata is not JSON-serialisable: {exc}") from None


def _validate_names(kind: str, names: Sequence[str], count: int) -> None:
    if len(names) != count:
        raise ModelError(f"{kind}: expected {count} names, got {len(names)}")
    for name in names:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            raise ModelError(f"{kind}: {name!r} is not a name of 1 to {MAX_NAME_LENGTH} chars")
        if not name.isprintable():
            raise ModelError(f"{kind}: {name!r} contains unprintable characters")
    if len(set(names)) != len(names):
        raise ModelError(f"{kind}: names must be unique")


def _to_arrays(model: Model) -> dict[str, np.ndarray]:
    l1, l2, l3 = model.mlp.linears
    meta = {
        "format_version": FORMAT_VERSION,
        "d": model.d,
        "h": model.h,
        "c": model.c,
        "dtype": model.mlp.dtype.name,
        "training": model.training,
    }
    return {
        "W1": l1.W, "b1": l1.b, "W2": l2.W, "b2": l2.b, "W3": l3.W, "b3": l3.b,
        "mean": model.mean,
        "scale": model.scale,
        "thresholds": model.thresholds,
        "feature_names": np.array(model.feature_names, dtype=str),
        "class_names": np.array(model.class_names, dtype=str),
        "meta": np.array(json.dumps(meta, allow_nan=False, sort_keys=True)),
    }  # fmt: skip


def check_predicts_finite(model: Model) -> None:
    """Raise :class:`ModelError` unless ``model``'s logits are finite and within the
    sigmoid's range on its mean reading and a standard deviation either side, alone (one
    reading's path) and as a batch.

    Weights that are each finite can still overflow together (a model that diverged while
    it learned). What the CPU then makes of them differs: where BLAS fuses multiply-adds
    ``inf - inf`` can come out ``+inf``, and clipped by the sigmoid, a confident 1, where
    other CPUs give NaN; one reading and a batch differed too. The logits' range is the
    same verdict on every CPU (:func:`robot_daemon.nn.logits_within`).
    """
    probes = model.normalize(np.stack([model.mean, model.mean + model.scale,
                                       model.mean - model.scale]))
    with np.errstate(all="ignore"):
        one, batch = model.mlp.logits(probes[:1]), model.mlp.logits(probes)
    if not (nn.logits_within(one) and nn.logits_within(batch)):
        limit = nn.logit_limit(model.mlp.dtype)
        raise ModelError(f"overflows: its logits near its mean reading are not finite or"
                         f" beyond +-{limit:g}, where the sigmoid says only 0 or 1 (weights"
                         " that blew up together)")


def fit_normalization(
    X: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-feature mean and scale of raw readings X (n, d), both float64 (d,).

    The scale is the standard deviation, floored so that a constant feature (a sensor
    stuck during the whole recording) maps to 0 instead of dividing by zero.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0:
        raise ModelError("need readings of shape (n >= 1, d) to fit a normalisation,"
            f" got {X.shape}")
    mean = X.mean(axis=0)
    scale = scale_of(mean, X.std(axis=0))
    if not (np.isfinite(mean).all() and np.isfinite(scale).all()):
        raise ModelError("readings contain NaN or infinite values: cannot fit a normalisation")
    return mean, scale


__all__ = [
    "FORMAT_VERSION",
    "Model",
    "check_predicts_finite",
    "fit_normalization",
    "from_bytes",
    "from_mlp",
    "load",
    "write_atomically",
]
