"""scripts/bench: runs the benchmark scripts, survives a failing one, writes the page."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCH = SCRIPTS / "bench"


def load_bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/bench as a module (it has no .py suffix), with scripts/ importable."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    loader = SourceFileLoader("bench", str(BENCH))
    spec = importlib.util.spec_from_loader("bench", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench", module)  # dataclasses look their module up
    loader.exec_module(module)
    return module


def test_quick_wire_writes_the_page(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "wire", "--out", str(page)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "[1/1] wire: ok in" in done.stderr
    text = page.read_text()
    assert "by `scripts/bench --quick --only wire`" in text
    assert "## Machine" in text
    for label in ("| CPU |", "| cores |", "| memory |", "| kernel |", "| NumPy |", "| BLAS |",
                  "| pyzmq / libzmq |", "| PyTorch |"):
        assert label in text
    assert "| figure | measured | baseline (same run) | ratio | script |" in text
    row = next(line for line in text.splitlines() if line.startswith("| decode one frame"))
    assert "us | msgpack.unpackb of the same payload:" in row
    assert row.endswith("| [bench_wire](#bench_wire) |")
    assert "## bench_wire" in text
    assert "msgpack.unpackb alone" in text  # the script's own printout


@pytest.mark.slow
def test_quick_faults_runs_every_fault_against_a_real_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = tmp_path / "faults.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_faults.py"), "--quick", "--json", str(figures)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # no crash, whatever the goals
    out = done.stdout
    for fault in ("signals:", "silent sensor", "fuzz:", "seq jumps:", "flapping src:",
                  "oversized:", "reload storm:", "multipart:",
                  "SIGKILL during online learning:"):
        assert f"\n{fault}" in out
    assert "serving daemon: exit status 0 on SIGTERM" in out
    assert "valid frames unanswered:" in out
    assert "RSS: idle" in out
    assert "longest pred gap:" in out
    assert "goals met " in out
    assert out.count("PASS") + out.count("MISS") >= 15
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from benchlib import read_json

    script, figs = read_json(figures)
    assert script == "bench_faults"
    assert len(figs) >= 6


def test_a_failing_benchmark_is_reported_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_bench(monkeypatch)
    broken = tmp_path / "broken.py"
    broken.write_text(
        "import sys\nprint('warming up')\nsys.exit('sensor driver on fire')\n")
    silent = tmp_path / "silent.py"
    silent.write_text("print('measured, but forgot --json')\n")
    fine = tmp_path / "fine.py"
    fine.write_text(
        "import json, sys\n"
        "print('all good')\n"
        "fig = {'figure': 'answer', 'value': 42, 'unit': 'x', 'baseline': 'guess',\n"
        "       'baseline_value': 21, 'ratio': 2.0, 'note': 'same run'}\n"
        "with open(sys.argv[sys.argv.index('--json') + 1], 'w') as f:\n"
        "    json.dump({'script': 'fine', 'figures': [fig]}, f)\n"
    )
    page = tmp_path / "page.md"
    benchmarks = [bench.Benchmark(p.stem, p, "a test") for p in (broken, silent, fine)]

    assert bench.run(benchmarks, page, quick=True) == 1

    text = page.read_text()
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n## ")[1:]}
    assert "**failed**: exited with status 1" in sections["broken"]
    assert "warming up" in sections["broken"]
    assert "sensor driver on fire" in sections["broken"]  # the tail of its stderr
    assert "**failed**: wrote no valid --json file" in sections["silent"]
    assert "all good" in sections["fine"]
    assert "| answer — same run | 42 x | guess: 21 x | 2 | [fine](#fine) |" in text
    assert "| **failed**: exited with status 1 | | | | [broken](#broken) |" in text


def test_a_benchmark_past_its_timeout_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_bench(monkeypatch)
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(60)\n")
    page = tmp_path / "page.md"
    assert bench.run([bench.Benchmark("slow", slow, "a test")], page, timeout=0.5) == 1
    assert "**failed**: timed out after 0.5 s and was killed" in page.read_text()


def test_an_unknown_benchmark_is_refused_by_name(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--only", "nope", "--out", str(tmp_path / "page.md")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr
    assert not (tmp_path / "page.md").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_page_names_the_commit_and_ignores_its_own_last_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_bench(monkeypatch)
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text("old page\n")
    (tmp_path / "code.py").write_text("x = 1\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git("rev-parse", "--short", "HEAD").strip()
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    page.write_text("the last run's page, not committed\n")
    assert bench._commit(page) == f"commit {head}"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert bench._commit(page) == f"commit {head}, with uncommitted changes"
