"""compare's gate, case by case, on figures written down by hand."""

from __future__ import annotations

import numpy as np
import pytest

from robot_daemon.errors import ModelError
from robot_daemon.model import from_mlp
from robot_daemon.nn import MLP
from robot_daemon.offline.compare import CompareConfig, Paired, check_comparable, judge

NAMES = ["pedestrian", "cyclist", "dog"]


def _f1(base: list[float], candidate: list[float]) -> Paired:
    b, c = np.array(base), np.array(candidate)
    return Paired(b, c, c - b - 0.05, c - b + 0.05)


def _macro(difference: float, low: float, high: float) -> Paired:
    return Paired(np.float64(0.5), np.float64(0.5 + difference), np.float64(low),
                  np.float64(high))


def test_promote_where_macro_f1_improves_beyond_chance_and_no_class_drops() -> None:
    verdict = judge(_f1([0.5, 0.6, 0.7], [0.6, 0.59, 0.8]), _macro(0.063, 0.01, 0.12),
                    NAMES, 12, "minute", CompareConfig())
    assert verdict.decision == "promote"
    assert verdict.exit_code == 0
    assert verdict.line() == ("promote: macro F1 +0.0630, 95 % interval [+0.0100, +0.1200]"
                              " above 0; no class F1 drops more than 0.02")


@pytest.mark.parametrize(("f1", "macro", "blocks", "reason"), [
    (_f1([0.5] * 3, [0.52] * 3), _macro(0.02, -0.001, 0.04), 40,
     "macro F1 +0.0200, but its 95 % interval [-0.0010, +0.0400] reaches 0"),
    (_f1([0.5, 0.6, 0.7], [0.9, 0.5, 0.6]), _macro(0.067, 0.02, 0.1), 40,
     "cyclist F1 drops by 0.100 (0.600 -> 0.500), dog F1 drops by 0.100 (0.700 -> 0.600),"
     " more than --max-class-drop 0.02"),
    (_f1([0.5, 0.6, 0.7], [0.5, 0.5, 0.7]), _macro(-0.033, -0.05, -0.01), 3,
     "no improvement in macro F1 (-0.0330); cyclist F1 drops by 0.100 (0.600 -> 0.500),"
     " more than --max-class-drop 0.02; only 3 blocks (minutes of sensor time); an interval"
     " needs at least 10: give more or longer bags"),
])
def test_hold_gives_every_reason_that_applies(f1: Paired, macro: Paired, blocks: int,
                                              reason: str) -> None:
    verdict = judge(f1, macro, NAMES, blocks, "minute", CompareConfig())
    assert (verdict.decision, verdict.exit_code, verdict.reason) == ("hold", 1, reason)


def test_models_must_agree_on_d_c_and_class_names() -> None:
    base = from_mlp(MLP(4, 8, 3), class_names=NAMES)
    check_comparable(base, from_mlp(MLP(4, 16, 3), class_names=NAMES))  # h may differ
    for other, what in ((from_mlp(MLP(5, 8, 3), class_names=NAMES), "d: BASE has 4"),
                        (from_mlp(MLP(4, 8, 3)), "class names"),
                        (from_mlp(MLP(4, 8, 2)), "c: BASE has 3, CANDIDATE 2")):
        with pytest.raises(ModelError, match=f"the models differ in {what}"):
            check_comparable(base, other)
