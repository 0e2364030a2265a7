"""The capture triggers, each on a hand-worked case, and the ring of recent frames."""

from __future__ import annotations

import numpy as np
import pytest

from robot_daemon.capture import Recent, contradicts, disagree, uncertain

THRESHOLDS = np.array([0.5, 0.3])


def test_uncertain_marks_a_probability_within_the_margin_of_its_own_threshold() -> None:
    P = np.array([[0.54, 0.00],    # 0.04 from 0.5: uncertain
                  [0.90, 0.36],    # 0.06 from 0.3: not
                  [0.10, 0.26],    # 0.04 from 0.3: uncertain
                  [0.30, 0.50]])   # each at the *other* class's threshold: not
    assert uncertain(P, THRESHOLDS, 0.05).tolist() == [True, False, True, False]
    assert uncertain(P, THRESHOLDS, 0.0).tolist() == [False] * 4
    exact = np.array([[0.75, 0.0]])  # 0.25 from 0.5 in binary exactly: the margin counts
    assert uncertain(exact, THRESHOLDS, 0.25).tolist() == [True]
    assert uncertain(P[:0], THRESHOLDS, 0.05).shape == (0,)


def test_disagree_compares_thresholded_decisions_not_probabilities() -> None:
    serving = np.array([[0.9, 0.1], [0.51, 0.1], [0.2, 0.29], [0.5, 0.3]])
    shadow = np.array([[0.6, 0.2], [0.49, 0.1], [0.2, 0.31], [0.5, 0.3]])
    # row 0: both positive, negative (far apart, same decisions); row 1: class 0 flips;
    # row 2: class 1 flips; row 3: equal, and p == threshold is positive for both
    assert disagree(serving, shadow, THRESHOLDS).tolist() == [False, True, True, False]


def test_contradicts_marks_a_label_the_served_decision_got_wrong() -> None:
    P = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.4], [0.1, 0.1]])
    Y = np.array([[1, 0], [1, 1], [0, 1], [1, 0]], dtype=np.uint8)
    assert contradicts(P, Y, THRESHOLDS).tolist() == [False, True, False, True]
    assert contradicts(P, Y.astype(bool), THRESHOLDS).tolist() == [False, True, False, True]


S = 1_000_000_000


def test_recent_gives_the_window_before_a_change_once_and_opens_the_window_after() -> None:
    recent: Recent[int] = Recent(window_s=2.0)
    recent.add([1, 2], 0)
    recent.add([3], 1 * S)
    recent.add([4, 5], int(2.5 * S))  # 1 and 2 are now older than 2 s
    assert not recent.in_window(int(2.5 * S))
    assert recent.health_changed(3 * S) == [3, 4, 5]
    assert recent.in_window(3 * S)
    assert recent.in_window(int(4.9 * S))
    assert not recent.in_window(5 * S)
    assert recent.health_changed(5 * S) == []  # each frame once
    recent.add([6], 6 * S)
    assert recent.in_window(6 * S) is True  # the second change's window: until 7 s
    assert recent.health_changed(int(6.5 * S)) == [6]


def test_recent_is_bounded_in_count_under_a_flood() -> None:
    recent: Recent[int] = Recent(window_s=2.0)
    assert recent.max_frames == 50 * 2 * 8
    for tick in range(100):  # 100,000 frames in 2 s
        recent.add(range(tick * 1000, (tick + 1) * 1000), tick * 20_000_000)
        assert len(recent) <= recent.max_frames
    assert recent.health_changed(2 * S) == list(range(100_000 - 800, 100_000))
    small: Recent[int] = Recent(window_s=1.0, max_frames=3)
    small.add(range(10), 0)
    assert small.health_changed(0) == [7, 8, 9]


@pytest.mark.parametrize("window_s", [0.0, -1.0, float("nan"), float("inf")])
def test_recent_refuses_a_window_that_is_not_a_positive_time(window_s: float) -> None:
    with pytest.raises(ValueError, match="window_s"):
        Recent(window_s)
