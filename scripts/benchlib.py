"""What the benchmark scripts share: their headline figures as JSON, the machine, and how
they stop the processes they start.

Every benchmark script (``scripts/bench_*.py``, ``scripts/sim_baselines.py``) takes
``--json PATH`` and, besides its usual printout, writes its headline figures there;
``scripts/bench`` runs them all and collects those files into ``docs/benchmarks.md``.
The file is one JSON object::

    {"script": "bench_nn",
     "figures": [
       {"figure": "reference sgd, n=10,000, 10 epochs, (16, 64, 8) float64, BLAS 1 thread",
        "value": 0.35, "unit": "s",
        "baseline": "PyTorch 2.13.0+cpu, same initial weights", "baseline_value": 0.95,
        "ratio": 0.37, "note": "as specified: 0.61 s"}]}

- ``script``: the script's file name without ``.py``.
- ``figure``: what was measured, on one line, with the sizes and the BLAS thread count
  where they matter; unique within the file.
- ``value``: the measurement, a finite number in ``unit`` (``"s"``, ``"ms"``, ``"us"``,
  ``"frames/s"``, ``"x"`` for a dimensionless multiple, ...).
- ``baseline``: what the value is compared with, measured in the same run, in the same
  unit; ``null`` (or ``""``) when there is none.
- ``baseline_value``: the baseline's measurement, or ``null``.
- ``ratio``: normally ``value / baseline_value``; ``null`` when there is no baseline or
  the quotient means nothing (a baseline of 0).
- ``note``: what a reader needs to read the figure right, or ``""``.

The headline runs pin BLAS to one thread (threadpoolctl); two-thread figures are
separate figures, named so, placed right after their one-thread twin.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One headline figure beside its same-run baseline (the schema above)."""

    figure: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    note: str = ""

    @classmethod
    def compare(
        cls, figure: str, value: float, unit: str, baseline: str | None = None,
        baseline_value: float | None = None, note: str = "",
    ) -> Figure:
        """A figure whose ratio is ``value / baseline_value`` (None without a baseline)."""
        ratio = None
        if baseline_value is not None and baseline_value != 0:
            ratio = float(value) / float(baseline_value)
        return cls(figure, float(value), unit, baseline,
                   None if baseline_value is None else float(baseline_value), ratio, note)

    @classmethod
    def from_json(cls, obj: Any) -> Figure:
        """Check one entry of ``figures`` and build it; ValueError names what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError(f"a figure must be an object, not {obj!r}")
        missing = {"figure", "value", "unit"} - obj.keys()
        unknown = obj.keys() - {f.name for f in fields(cls)}
        if missing or unknown:
            raise ValueError(
                f"figure {obj!r}: missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        for key in ("figure", "unit"):
            if not isinstance(obj[key], str):
                raise ValueError(f"figure {obj!r}: {key} must be a string")
        for key in ("baseline", "note"):
            if obj.get(key) is not None and not isinstance(obj[key], str):
                raise ValueError(f"figure {obj!r}: {key} must be a string or null")
        for key in ("value", "baseline_value", "ratio"):
            number = obj.get(key)
            if key != "value" and number is None:
                continue
            if isinstance(number, bool) or not isinstance(number, int | float) or not (
                math.isfinite(number)
            ):
                raise ValueError(f"figure {obj['figure']!r}: {key} must be a finite number")
        return cls(**{**obj, "note": obj.get("note") or ""})


def write_json(path: str | os.PathLike[str], script: str, figures: list[Figure]) -> None:
    """Write ``{"script": script, "figures": [...]}`` to ``path``."""
    doc = {"script": script, "figures": [asdict(f) for f in figures]}
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def read_json(path: str | os.PathLike[str]) -> tuple[str, list[Figure]]:
    """The script name and figures of a ``--json`` file; ValueError if it breaks the schema."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("script"), str) or not (
        isinstance(doc.get("figures"), list)
    ):
        raise ValueError(f"{path}: expected {{'script': str, 'figures': [...]}}")
    return doc["script"], [Figure.from_json(f) for f in doc["figures"]]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "unknown CPU"."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return "unknown CPU"


def machine() -> dict[str, str]:
    """The machine and software the figures were measured on, as label -> text."""
    import msgpack
    import numpy as np
    import zmq
    from threadpoolctl import threadpool_info

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    blas = ", ".join(
        f"{i['internal_api']} {i['version']} ({i.get('architecture', '?')}),"
        f" {i['num_threads']} threads unless pinned"
        for i in threadpool_info() if i["user_api"] == "blas"
    )
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "not installed (its baselines are skipped)"
    return {
        "CPU": cpu_model() + (", virtual machine" if " hypervisor" in cpuinfo else ""),
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by this process)",
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "NumPy": np.__version__,
        "BLAS": blas or "none found by threadpoolctl",
        "pyzmq / libzmq": f"{zmq.__version__} / {zmq.zmq_version()}",
        "msgpack": ".".join(map(str, msgpack.version)),
        "PyTorch": torch,
    }


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        return "unknown"
    return f"{kib / 2**20:.1f} GiB"


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> int | None:
    """SIGTERM ``proc`` (if it still runs) and wait: its exit status, or None when it had
    to be killed after ``timeout_s``."""
    code: int | None = proc.poll()
    if code is None:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return code
