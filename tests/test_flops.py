"""The FLOP counts measured on the running code agree with the closed form."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from robot_daemon import flops, nn
from robot_daemon.cli import main


@pytest.mark.parametrize(
    ("n", "d", "h", "c"), [(10_000, 16, 64, 8), (1_234, 5, 7, 3), (250, 64, 128, 16)]
)
@pytest.mark.parametrize("skip_input_grad", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_measured_counts_match_closed_form(
    n: int, d: int, h: int, c: int, skip_input_grad: bool, recompute: bool
) -> None:
    report = flops.measure(n, d, h, c, skip_input_grad=skip_input_grad, recompute=recompute)
    assert report.measured == report.expected


def test_closed_form_by_hand() -> None:
    # n=10, d=2, h=3, c=1: forward 2*10*(6 + 9 + 3) = 360; training 10 epochs x 3 x 360.
    count = flops.closed_form(10, 2, 3, 1)
    assert count.inference_flops == 360
    assert count.training_flops == 10 * 3 * 360
    assert count.answer == 30
    skip = flops.closed_form(10, 2, 3, 1, input_grad=False)
    assert skip.training_flops == 10 * (3 * 360 - 2 * 10 * 2 * 3)
    recompute = flops.closed_form(10, 2, 3, 1, recompute=True)
    assert recompute.training_flops == 10 * (3 * 360 + 2 * 10 * (6 + 9))


def test_the_answer_is_thirty_at_the_default_sizes() -> None:
    report = flops.measure(10_000, 16, 64, 8)
    assert report.measured.ratio == 30.0
    assert report.measured.answer == 30


@pytest.mark.parametrize(("d", "h", "c"), [(16, 64, 8), (5, 7, 3)])
def test_one_reading_is_counted_like_a_batch_of_one(d: int, h: int, c: int) -> None:
    """The one-reading path's products include the bias row; they count as x @ W."""
    mlp = nn.MLP(d, h, c, rng=0)
    with nn.count_flops() as counter:
        mlp.predict_proba(np.ones((1, d)))
    assert counter.flops == flops.closed_form(1, d, h, c).inference_flops
    assert counter.matmuls == 3


def test_counter_counts_only_inside_its_block() -> None:
    a, b = np.ones((4, 3)), np.ones((3, 5))
    with nn.count_flops() as counter:
        nn.matmul(a, b)
    nn.matmul(a, b)
    assert (counter.flops, counter.matmuls) == (2 * 4 * 3 * 5, 1)


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--n", "1000", "--d", "8", "--h", "16", "--c", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"inference_flops", "training_flops", "ratio", "answer"} <= out.keys()
    assert out["inference_flops"] == 2 * 1000 * (8 * 16 + 16 * 16 + 16 * 4)
    assert out["ratio"] == 30.0
    assert out["answer"] == 30
    assert out["matches_closed_form"] is True


def test_cli_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--n", "500", "--skip-input-grad"]) == 0
    out = capsys.readouterr().out
    assert "answer (rounded): 28" in out
    assert "matches" in out


def test_cli_rejects_non_positive_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["flops", "--h", "0"])
    assert exc.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(("n", "h"), [(5_000, 128), (300, 512)])
def test_the_footprint_estimate_bounds_what_measure_allocates(n: int, h: int) -> None:
    tracemalloc.start()
    try:
        flops.measure(n, 16, h, 8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= flops.footprint_bytes(n, 16, h, 8) <= 2 * peak


@pytest.mark.parametrize(("argv", "text"), [
    (["--h", "100000", "--n", "100000"], "needs about 186 GiB"),
    (["--h", "2048", "--n", "50000"], "training FLOPs"),
])
def test_cli_refuses_sizes_it_cannot_measure_up_front(
    argv: list[str], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flops", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robot-daemon flops: error: measuring")
    assert text in err
    assert "ratio 30.0000" in err  # the closed form still answers
