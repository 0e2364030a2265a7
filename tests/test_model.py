"""Model files: round trips, atomic saves that survive SIGKILL, hostile files refused."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from robot_daemon import model as model_mod
from robot_daemon.errors import ModelError
from robot_daemon.model import Model, fit_normalization, from_mlp, load
from robot_daemon.nn import MLP

from .model_files import members_of, npy, with_meta, zipped


def _model(seed: int = 0, dtype: type = np.float64, h: int = 8) -> Model:
    rng = np.random.default_rng(seed)
    X = rng.normal(300.0, 20.0, size=(50, 4))  # raw readings far from zero
    mean, scale = fit_normalization(X)
    return from_mlp(
        MLP(4, h, 3, rng=seed, dtype=dtype),
        mean=mean,
        scale=scale,
        feature_names=["range_m", "speed_mps", "temp_k", "noise_db"],
        class_names=["pedestrian", "bicycle", "dog"],
        thresholds=[0.5, 0.3, 0.7],
        training={"epochs": 10, "lr": 0.1, "seed": seed, "data": ["a.mcap"]},
    )


def _rewrite(path: Path, **changes: object) -> None:
    """Re-save the npz at ``path`` with some members replaced (None deletes)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value  # type: ignore[assignment]
    np.savez(path, **arrays)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_round_trip(tmp_path: Path, dtype: type) -> None:
    original = _model(dtype=dtype)
    path = tmp_path / "m.npz"
    original.save(path)
    loaded = load(path)
    for a, b in zip(original.mlp.linears, loaded.mlp.linears, strict=True):
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.b, b.b)
        assert b.W.dtype == dtype
    assert loaded.feature_names == original.feature_names
    assert loaded.class_names == original.class_names
    np.testing.assert_array_equal(loaded.thresholds, original.thresholds)
    assert loaded.training == original.training
    X = np.random.default_rng(1).normal(300.0, 20.0, size=(7, 4))
    np.testing.assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary left


def test_saving_twice_gives_identical_bytes(tmp_path: Path) -> None:
    _model().save(tmp_path / "a.npz")
    _model().save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    # np.savez would stamp the current time into each member (2 s resolution).
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert {info.date_time for info in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_predict_uses_normalisation_and_per_class_thresholds() -> None:
    m = _model()
    X = np.random.default_rng(2).normal(300.0, 20.0, size=(20, 4))
    P = m.mlp.predict_proba((X - m.mean) / m.scale)
    np.testing.assert_allclose(m.predict_proba(X), P, rtol=1e-12)
    thresholds = np.array([0.5, 0.3, 0.7])
    np.testing.assert_array_equal(m.predict(X), thresholds <= P)


def test_wrong_reading_width_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"shape \(n, 4\), got \(2, 5\)"):
        _model().predict_proba(np.zeros((2, 5)))


def test_constant_feature_gets_a_unit_scale() -> None:
    X = np.column_stack([np.full(10, 7.0), np.arange(10.0)])
    mean, scale = fit_normalization(X)
    assert scale[0] == 1.0
    assert mean[0] == 7.0


# ---- atomic saves -----------------------------------------------------------------------------


def test_save_keeps_the_permissions_of_the_file_it_replaces(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _model().save(path)
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # like a plain open()
    path.chmod(0o640)
    _model(seed=3).save(path)
    assert path.stat().st_mode & 0o777 == 0o640


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_save_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.npz"
    _model(seed=1).save(path)
    before = path.read_bytes()

    def explode(f: object, arrays: object) -> None:
        f.write(b"PK half a zip")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(model_mod, "_write_npz", explode)
    with pytest.raises(OSError, match="disk full"):
        _model(seed=2).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


_SAVER = """
import sys
import numpy as np
from robot_daemon.model import from_mlp
from robot_daemon.nn import MLP
models = [from_mlp(MLP(16, 256, 8, rng=s), training={"seed": s}) for s in (1, 2)]
print("ready", flush=True)
i = 0
while True:
    models[i % 2].save(sys.argv[1])
    i += 1
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_never_breaks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    from_mlp(MLP(16, 256, 8, rng=1), training={"seed": 1}).save(path)
    rng = np.random.default_rng(0)
    for _ in range(15):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.0, 0.05)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        assert load(path).training["seed"] in (1, 2)


# ---- hostile and broken files ------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "nope.npz")


def test_truncated_file_at_many_offsets(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    _model().save(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.npz"
    for offset in range(0, len(data), max(1, len(data) // 60)):
        cut.write_bytes(data[:offset])
        with pytest.raises(ModelError):
            load(cut)


def test_corrupted_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _model().save(path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(3)
    failures = 0
    for _ in range(40):
        broken = bytearray(data)
        for i in rng.integers(0, len(data), size=8):
            broken[i] ^= 0xFF
        path.write_bytes(bytes(broken))
        try:
            load(path)
        except ModelError:
            failures += 1
    # The zip's CRCs cover every member and its headers are parsed strictly, so eight
    # flipped bytes anywhere are always caught.
    assert failures == 40


def test_a_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    path.write_bytes(pickle.dumps({"W1": np.zeros((4, 8))}))
    with pytest.raises(ModelError, match=r"not an \.npz archive"):
        load(path)


def test_an_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _model().save(path)
    _rewrite(path, class_names=np.array(["a", 1, None], dtype=object))
    with pytest.raises(ModelError, match="'class_names' is an object array, which needs pickle"):
        load(path)


def test_a_zip_bomb_is_refused_before_decompression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, path = tmp_path / "good.npz", tmp_path / "bomb.npz"
    _model().save(good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "W2.npy":
                data = b"\0" * 5_000_000  # deflates to a few kB
            z.writestr(info.filename, data)
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(model_mod, "MAX_UNCOMPRESSED_BYTES", 1_000_000)
    with pytest.raises(ModelError, match="would decompress to"):
        load(path)


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _model().save(path)
    with (
        pytest.warns(UserWarning, match="Duplicate name"),
        zipfile.ZipFile(path, "a") as z,
    ):
        z.writestr("W2.npy", b"shadow")
    with pytest.raises(ModelError, match="duplicate members"):
        load(path)


def test_wrong_version(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _model().save(path)
    meta = json.loads(str(np.load(path)["meta"]))
    meta["format_version"] = 2
    _rewrite(path, meta=np.array(json.dumps(meta)))
    with pytest.raises(ModelError, match="format version 2 is not supported"):
        load(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"W2": np.full((8, 8), np.nan)}, "'W2' contains NaN"),
        ({"W1": np.zeros((5, 8))}, r"'W1' has shape \(5, 8\), expected \(4, 8\)"),
        ({"b3": np.zeros(3, dtype=np.float32)}, "'b3' has dtype float32, expected float64"),
        ({"scale": np.zeros(4)}, "'scale' must be positive"),
        ({"thresholds": np.array([0.5, 1.5, 0.5])}, r"'thresholds' must lie in \[0, 1\]"),
        ({"class_names": np.array(["a", "b"])}, "'class_names' must be 3 strings"),
        ({"class_names": np.array(["a", "a", "b"])}, "names must be unique"),
        ({"meta": np.array("{not json")}, "'meta' is not valid JSON"),
        ({"thresholds": None}, r"missing \['thresholds'\]"),
        ({"extra": np.zeros(1)}, r"unexpected \['extra'\]"),
    ],
)
def test_invalid_members_are_named(tmp_path: Path, changes: dict, message: str) -> None:
    path = tmp_path / "m.npz"
    _model().save(path)
    _rewrite(path, **changes)
    with pytest.raises(ModelError, match=message):
        load(path)


def test_invalid_model_cannot_be_saved(tmp_path: Path) -> None:
    m = _model()
    m.mlp.linears[0].W[0, 0] = np.inf
    with pytest.raises(ModelError, match="weights contain NaN or infinite"):
        m.save(tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())


# ---- files that would kill, stall or fill the process ---------------------------------------





class _Expired(Exception):
    """Not an OSError: zipfile.is_zipfile would take that for "not a zip" and return."""


@contextlib.contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Fail with _Expired if the block takes longer (a blocking open, an endless read)."""

    def expire(signum: int, frame: object) -> None:
        raise _Expired(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_only_regular_files_are_read_and_a_symlink_to_one_is_fine(tmp_path: Path) -> None:
    """/dev/zero was read until the kernel killed the process; a FIFO blocked it for good."""
    good = tmp_path / "good.npz"
    _model().save(good)
    (tmp_path / "link.npz").symlink_to(good)
    assert load(tmp_path / "link.npz").d == 4
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.npz")  # no writer: a blocking open would wait for ever
    (tmp_path / "dir.npz").mkdir()
    for name, kind in [("zero", "a character device"), ("fifo", "a FIFO"),
                       ("dir", "a directory")]:
        with _within(5.0), pytest.raises(ModelError, match=f"{name}.npz is {kind}, not a regular"):
            load(tmp_path / f"{name}.npz")


def test_a_file_over_the_size_limit_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.npz"
    _model().save(path)
    monkeypatch.setattr(model_mod, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(ModelError, match=r"has [\d,]+ bytes, over the limit of"):
        load(path)


def test_a_large_file_that_is_not_a_zip_costs_only_its_tail(tmp_path: Path) -> None:
    """A bag deployed by mistake: refused from its last 64 KiB, not read whole."""
    path = tmp_path / "m.npz"
    with path.open("wb") as f:
        f.truncate(100 << 20)  # 100 MiB of zeros (sparse): no zip end record
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=r"m\.npz is not an \.npz archive"):
            load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_a_member_that_is_not_npy_is_a_model_error(tmp_path: Path) -> None:
    """It raised AttributeError: exit 1 on SIGHUP, a restart loop as a checkpoint."""
    members = members_of(_model())
    members["W2.npy"] = b"not an array at all"
    path = tmp_path / "m.npz"
    path.write_bytes(zipped(members))
    with pytest.raises(ModelError, match=r"member 'W2' is not an \.npy array"):
        load(path)



@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"h": 65536, "d": 65536}, r"'d' must be in \[1, 4096\], got 65536"),
        ({"h": 16384}, r"'h' must be in \[1, 4096\], got 16384"),
        ({"c": 5000}, r"'c' must be in \[1, 1024\]"),
        ({"h": 2.5}, r"meta 'h' must be an integer, got 2\.5"),
        ({"h": 4096, "d": 4096, "dtype": "float32"},
         "d=4096, h=4096, c=3 in float32 takes 134,299,660 bytes, over the limit of 134,217,728"),
        ({"h": 4096, "dtype": "float64"}, "over the limit of 134,217,728"),
    ],
)
def test_a_meta_declaring_a_huge_network_is_refused_before_allocating(
    changes: dict[str, object], message: str
) -> None:
    """MLP(d, h, c) was drawn from meta before any shape was checked: MemoryError."""
    data = with_meta(_model(), **changes)
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=message):
            model_mod.from_bytes(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_a_header_announcing_a_huge_array_is_refused_before_reading_it() -> None:
    members = members_of(_model())
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (1 << 20, 1 << 20)})
    members["W2.npy"] = header.getvalue()  # a 16 TiB array, no data
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=r"'W2' has shape \(1048576, 1048576\), expected"):
            model_mod.from_bytes(zipped(members))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_a_huge_npy_header_is_refused() -> None:
    members = members_of(_model())
    members["W2.npy"] = b"\x93NUMPY\x02\x00" + (60_000).to_bytes(4, "little") + b" " * 60_000
    with pytest.raises(ModelError, match=r"an \.npy header of 60,000 bytes, over the limit"):
        model_mod.from_bytes(zipped(members))


def test_a_directory_of_many_members_is_refused_before_zipfile_reads_it() -> None:
    members = {f"x{i}.npy": b"" for i in range(200)}
    with pytest.raises(ModelError, match="declares 200 members"):
        model_mod.from_bytes(zipped(members))


def test_a_fortran_order_or_deflated_model_loads() -> None:
    """What np.savez / np.savez_compressed of a valid model write is read, not refused."""
    original = _model(h=6)
    members = members_of(original)
    W1 = original.mlp.linears[0].W
    members["W1.npy"] = npy(np.asfortranarray(W1))
    loaded = model_mod.from_bytes(zipped(members, zipfile.ZIP_DEFLATED))
    np.testing.assert_array_equal(loaded.mlp.linears[0].W, W1)
    assert loaded.mlp.linears[0].W.flags.c_contiguous


def test_a_load_holds_the_parameters_once() -> None:
    """W1 ... b3 are read straight into the layers' blocks: no second copy is made."""
    original = _model(h=2048)  # 34 MB of parameters: the loader's own buffers are small beside
    data = original.to_bytes()
    params = sum(lin.Wb.nbytes for lin in original.mlp.linears)
    tracemalloc.start()
    try:
        loaded = model_mod.from_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * params  # a second copy would make it 2
    for a, b in zip(original.mlp.linears, loaded.mlp.linears, strict=True):
        np.testing.assert_array_equal(a.Wb, b.Wb)


def _hostile_members(rng: np.random.Generator) -> dict[str, bytes]:
    """One member of a valid model replaced by something of the wrong kind."""
    members = members_of(_model())
    name = str(rng.choice(sorted(members)))
    candidates = [
        npy(np.zeros((4, 8), dtype=np.int64)),
        npy(np.zeros(3, dtype=[("a", "<f8"), ("b", "<i4")])),
        npy(np.array(["a", 1, None], dtype=object)),
        npy(np.array([{"W1": 1}], dtype=object)),
        npy(np.array("{}")),
        npy(np.array(["x" * 100] * 4)),
        npy(np.zeros((4, 8), dtype=">f8")),
        npy(np.zeros((), dtype=np.float64)),
        npy(np.zeros((4, 8, 1))),
        npy(np.array(b"bytes")),
        pickle.dumps({"W1": np.zeros(3)}),
        b"\x93NUMPY\x03\x00" + bytes(20),
        b"\x93NUMPY\x01\x00\xff\xff{'descr': '<f8',",
        b"",
        rng.bytes(int(rng.integers(1, 300))),
    ]
    members[name] = candidates[int(rng.integers(len(candidates)))]
    return members


def test_fuzz_nothing_but_a_model_error_escapes_the_loader() -> None:
    """Truncations, bit flips, overwritten runs and members of the wrong kind, stored and
    deflated: each load ends as a Model or a ModelError, never anything else."""
    rng = np.random.default_rng(13)
    good = _model().to_bytes()
    inputs: list[bytes] = [good[:n] for n in range(0, len(good), 7)]
    for _ in range(300):
        flipped = bytearray(good)
        for i in rng.integers(0, len(good), size=int(rng.integers(1, 4))):
            flipped[i] ^= 1 << int(rng.integers(8))
        inputs.append(bytes(flipped))
        start = int(rng.integers(len(good)))
        run = rng.bytes(int(rng.integers(1, 64)))
        inputs.append(good[:start] + run + good[start + len(run):])
    for _ in range(300):
        members = _hostile_members(rng)
        inputs.append(zipped(members, zipfile.ZIP_STORED))
        inputs.append(zipped(members, zipfile.ZIP_DEFLATED))
    loaded = 0
    for data in inputs:
        try:
            model_mod.from_bytes(data)
            loaded += 1
        except ModelError:
            pass
    assert loaded < len(inputs) // 10  # nearly all of them are refused; none crashes


def test_a_model_beyond_the_limits_is_never_written(tmp_path: Path) -> None:
    """What load would refuse cannot be made, so offline tools cannot write it."""
    with pytest.raises(ModelError, match=r"'d' must be in \[1, 4096\], got 4097"):
        from_mlp(MLP(4097, 2, 1))


def _sha256_of_members(path: Path) -> str:
    """The identity's digest computed from the file's members (an oracle that does not
    go through Model): W1 b1 W2 b2 W3 b3 mean scale, in that order."""
    import hashlib

    digest = hashlib.sha256()
    with np.load(path, allow_pickle=False) as npz:
        for name in ("W1", "b1", "W2", "b2", "W3", "b3", "mean", "scale"):
            digest.update(np.ascontiguousarray(npz[name]).tobytes())
    return digest.hexdigest()[:12]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_identity_is_the_file_stem_and_a_hash_of_what_computes_p(
    tmp_path: Path, dtype: type
) -> None:
    path = tmp_path / "sidewalk-v3.npz"
    _model(dtype=dtype).save(path)
    loaded = load(path)
    assert model_mod.identity(loaded, path) == f"sidewalk-v3-{_sha256_of_members(path)}"
    assert model_mod.identity(loaded, str(path)) == model_mod.identity(loaded, path)
    # thresholds, names and training metadata do not change p: the identity stays
    relabelled = _model(dtype=dtype)
    relabelled.thresholds[:] = 0.9
    relabelled.class_names[0] = "stroller"
    assert model_mod.identity(relabelled, path) == model_mod.identity(loaded, path)
    # one weight does
    loaded.mlp.linears[0].W[0, 0] += 1
    assert model_mod.identity(loaded, path) != model_mod.identity(relabelled, path)
    assert model_mod.identity(_model(seed=1), path) != model_mod.identity(relabelled, path)


def test_the_identity_of_the_shipped_model_is_the_one_the_daemon_serves() -> None:
    from robot_daemon.serve.reload import load_model

    path = Path(__file__).resolve().parents[1] / "models" / "default.npz"
    identity = model_mod.identity(load(path), path)
    assert identity == f"default-{_sha256_of_members(path)}" == "default-0b5b4aa01b09"
    assert load_model(path).version == identity  # what every pred of the daemon carries


def test_an_identity_shows_no_control_characters() -> None:
    assert model_mod.identity(_model(), "/m/\x1b[2Jevil.npz").startswith("\\x1b[2Jevil-")
