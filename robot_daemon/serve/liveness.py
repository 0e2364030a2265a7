"""Sensor liveness: which sources stopped sending valid frames, and the daemon's health.

:class:`Liveness` tracks each ``frames`` endpoint and each ``src`` by its last valid
frame, marks a source stale after ``stale_after_ns`` of silence and live again when it is
heard, and derives the daemon's health (``ok``, ``degraded``, ``blind``), so that an
operator can tell "no obstacles" from "no frames". :class:`ChangeLog` and
:class:`StatusPace` tell the changes at a bounded rate. Nothing here reads a clock or
logs: times come in as integer ns, so the logic is tested without sockets or sleeps.

Design: docs/architecture.md, "Sensor liveness".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

#: Most ``src`` values tracked; far above the sensors of one robot.
MAX_SRCS: Final = 256
#: Stale sources named in the one-line summary; ``status`` lists them all.
SUMMARY_NAMES: Final = 3
#: A ``src`` is told stale or back in the log at most once per this; endpoints (from the
#: configuration, a few) each time.
SRC_LOG_PERIOD_NS: Final = 10_000_000_000
#: Liveness lines a second at most, in all.
LINES_PER_S: Final = 10
#: A change goes out in a ``status`` at once, but at most one such ``status`` per this
#: (5 ticks of 20 ms); a change in between waits for it. ``blind`` never waits.
STATUS_GAP_NS: Final = 100_000_000

Health = Literal["ok", "degraded", "blind"]
OK: Final = "ok"
DEGRADED: Final = "degraded"
BLIND: Final = "blind"

K = TypeVar("K")


@dataclass(frozen=True)
class Source:
    """A frames endpoint (``kind == "endpoint"``) or a frame ``src`` (``kind == "src"``)."""

    kind: Literal["endpoint", "src"]
    name: str

    def __str__(self) -> str:
        what = "frames endpoint" if self.kind == "endpoint" else "src"
        return f"{what} {self.name!r}"


@dataclass(frozen=True)
class Change:
    """What one :meth:`Liveness.check` found different from the check before.

    stale : sources that went stale, each with how long it had been silent (ns) and
        whether it was ever heard.
    back : sources heard again, each with the silence it ended (ns).
    srcs_full : the ``src`` table filled up since the last check (said once).
    """

    stale: tuple[tuple[Source, int, bool], ...]
    back: tuple[tuple[Source, int], ...]
    health_was: Health
    health: Health
    srcs_full: int | None = None

    def lines(self) -> list[tuple[int, str]]:
        """``(logging level, message)`` per source: a WARNING when stale, INFO when back."""
        return [(level, line) for _, level, line in self.entries()]

    def entries(self) -> list[tuple[Source | None, int, str]]:
        """:meth:`lines`, each with its source (None: the table full); endpoints first."""
        out: list[tuple[Source | None, int, str]] = []
        for source, silent_ns, ever in self.stale:
            since = "for" if ever else "since the start"
            out.append((source, logging.WARNING, f"{source} stale: no valid frame {since} "
                        f"{silent_ns / 1e6:.0f} ms; health {self.health}"))
        for source, silent_ns in self.back:
            out.append((source, logging.INFO, f"{source} live again after "
                        f"{silent_ns / 1e6:.0f} ms without a valid frame; health {self.health}"))
        if self.srcs_full is not None:
            out.append((None, logging.WARNING, f"{self.srcs_full} src values tracked, the "
                        "most: frames of new ones are answered but not tracked for liveness "
                        "(srcs_untracked in status); does a publisher invent src names?"))
        out.sort(key=lambda entry: entry[0] is not None and entry[0].kind == "src")
        return out


class ChangeLog:
    """The lines of each :class:`Change` that the log gets (see the module): every
    endpoint's; a ``src``'s stale line at most once per ``src_period_ns`` and its
    live-again line only after a stale line that was told, the changes in between counted
    into its next line; at most ``per_s`` ``src`` lines a second in all."""

    def __init__(self, src_period_ns: int = SRC_LOG_PERIOD_NS, per_s: int = LINES_PER_S,
                 max_srcs: int = MAX_SRCS) -> None:
        self._src_period_ns = src_period_ns
        self._max_srcs = max_srcs
        #: Per src: when its next stale line may be told, and the changes held back since.
        self._srcs: dict[str, tuple[int, int]] = {}
        self._told_stale: set[str] = set()  # srcs whose stale line was told, not yet back
        self._per_s = per_s
        self._second_ns: int | None = None  # the start of the current second
        self._told = 0  # lines told in it
        self._held = 0  # lines held back since the last line that counted them

    def lines(self, change: Change, now_ns: int) -> list[tuple[int, str]]:
        """``(logging level, message)`` to log of ``change`` at ``now_ns``."""
        if self._second_ns is None or now_ns - self._second_ns >= 1_000_000_000:
            self._second_ns, self._told = now_ns, 0
        out: list[tuple[int, str]] = []
        if self._held and self._told < self._per_s:
            out.append((logging.WARNING, f"{self._held} more liveness change(s) not logged "
                        "(over the rate limit): status lists the stale sources"))
            self._held, self._told = 0, self._told + 1
        stale = {source for source, _, _ in change.stale}
        for source, level, line in change.entries():
            if source is not None and source.kind == "endpoint":
                out.append((level, line))  # a few, from the configuration: each time
                continue
            if source is not None:
                told = self._src_line(source.name, source in stale, now_ns)
                if told is None:
                    continue  # counted into its next line
                line += told
            if self._told >= self._per_s:
                self._held += 1
                continue
            self._told += 1
            out.append((level, line))
        return out

    def _src_line(self, name: str, stale: bool, now_ns: int) -> str | None:
        """Whether a change of src ``name`` is told: None if not, else what its line adds
        (the count of the changes held back since its last line)."""
        next_ns, held = self._srcs.get(name, (now_ns, 0))
        if not stale:  # back: told if its stale line was
            if name in self._told_stale:
                self._told_stale.discard(name)
                return ""
            self._srcs[name] = (next_ns, held + 1)
            return None
        if now_ns < next_ns or (name not in self._srcs
                                and len(self._srcs) >= self._max_srcs):
            self._srcs[name] = (next_ns, held + 1)
            return None
        self._srcs[name] = (now_ns + self._src_period_ns, 0)
        self._told_stale.add(name)
        return f" ({held} more change(s) of it since its last line)" if held else ""


class StatusPace:
    """When the changes go out in a ``status`` (see the module): :meth:`changed` on a
    change, :meth:`due` after every tick."""

    def __init__(self, gap_ns: int = STATUS_GAP_NS) -> None:
        self._gap_ns = gap_ns
        self._last_ns: int | None = None
        self._owed = False

    def changed(self, change: Change, now_ns: int) -> bool:
        """Whether to publish ``change`` now; else :meth:`due` says when."""
        self._owed = True
        if change.health == BLIND != change.health_was:  # nothing delivers: say it now
            self._owed, self._last_ns = False, now_ns
            return True
        return self.due(now_ns)

    def due(self, now_ns: int) -> bool:
        """Whether a change waits and its gap is over (then it is published: sent)."""
        if not self._owed or (self._last_ns is not None
                              and now_ns - self._last_ns < self._gap_ns):
            return False
        self._owed, self._last_ns = False, now_ns
        return True


class Liveness:
    """Time since the last valid frame of each source, and which sources are stale.

    endpoints : the configured ``frames`` endpoints; :meth:`heard` takes an index into it.
    stale_after_ns : silence after which a source is stale.
    start_ns : when the daemon started listening (``time.monotonic_ns()``): an endpoint
        never heard from counts as silent since then.
    max_srcs : most ``src`` values tracked.
    """

    def __init__(self, endpoints: Sequence[str], stale_after_ns: int, start_ns: int,
                 max_srcs: int = MAX_SRCS) -> None:
        self.endpoints = tuple(endpoints)
        self.stale_after_ns = stale_after_ns
        self._start_ns = start_ns
        self._max_srcs = max_srcs
        #: Last valid frame per endpoint (``None``: none yet) and per ``src``.
        self._endpoint_ns: list[int | None] = [None] * len(self.endpoints)
        #: Each endpoint's usual time between valid frames (a running mean, ns; 0: not
        #: known yet): how long a silence of its is ordinary.
        self._period_ns: list[float] = [0.0] * len(self.endpoints)
        self._src_ns: dict[str, int] = {}
        self._no_src_ns = -1  # the last valid frame without a src (-1: none yet)
        #: The stale ones, each with the time it was last heard before going stale.
        self._stale_endpoints: dict[int, int] = {}
        self._stale_srcs: dict[str, int] = {}
        self.health: Health = OK
        self.srcs_untracked = 0  # frames whose src found the table full
        self._told_full = False

    def heard(self, endpoint: int, src: str | None, now_ns: int, count: int = 1) -> None:
        """``count`` valid frames from ``self.endpoints[endpoint]`` with ``src`` arrived,
        the last at ``now_ns`` (the same as ``count`` calls for one frame each).

        Called for every frame or run of frames: a few stores, no allocation once a
        ``src`` is known.
        """
        last = self._endpoint_ns[endpoint]
        if last is not None:  # the running mean of the time between frames (1/8 new)
            period = self._period_ns[endpoint]
            gap = (now_ns - last) / count
            self._period_ns[endpoint] = gap if period == 0.0 else period + (gap - period) / 8
        self._endpoint_ns[endpoint] = now_ns
        if src is None:
            self._no_src_ns = now_ns
            return
        if src in self._src_ns or len(self._src_ns) < self._max_srcs:
            self._src_ns[src] = now_ns
        else:
            self.srcs_untracked += count

    def heard_since(self, srcs: Sequence[str | None], since_ns: int) -> bool:
        """Whether each of ``srcs`` sent a valid frame at or after ``since_ns``; ``None``
        stands for the frames without a ``src``, of whichever endpoint (a frame with a
        ``src`` is not one of them: a lidar must not stand in for a camera without a name).
        A ``src`` past the table's ``max_srcs`` is never heard: its ticks wait for their
        deadline."""
        for src in srcs:
            last = self._no_src_ns if src is None else self._src_ns.get(src, -1)
            if last < since_ns:
                return False
        return True

    def check(self, now_ns: int) -> Change | None:
        """Mark the sources silent for over ``stale_after_ns`` stale and the heard ones live.

        Returns what changed, or ``None`` when nothing did (the common case).
        """
        endpoints = ((i, self._start_ns if t is None else t)
                     for i, t in enumerate(self._endpoint_ns))
        went_e, back_e = _update(endpoints, self._stale_endpoints, now_ns, self.stale_after_ns)
        went_s, back_s = _update(self._src_ns.items(), self._stale_srcs, now_ns,
                                 self.stale_after_ns)
        full = None
        if self.srcs_untracked and not self._told_full:
            self._told_full, full = True, self._max_srcs
        if not (went_e or back_e or went_s or back_s or full):
            return None
        health_was, self.health = self.health, self._health()
        stale = [(Source("endpoint", self.endpoints[i]), now_ns - last,
                  self._endpoint_ns[i] is not None) for i, last in went_e]
        stale += [(Source("src", src), now_ns - last, True) for src, last in went_s]
        back = [(Source("endpoint", self.endpoints[i]), silent) for i, silent in back_e]
        back += [(Source("src", src), silent) for src, silent in back_s]
        return Change(tuple(stale), tuple(back), health_was, self.health, full)

    def silent_endpoints(self, now_ns: int, longer_than_ns: int) -> list[int]:
        """The endpoints (indices) without a valid frame for over ``longer_than_ns`` and
        over three of their usual periods between frames (a 10 Hz sensor is silent for
        100 ms between its frames); never heard from counts from the start."""
        return [i for i, t in enumerate(self._endpoint_ns)
                if now_ns - (self._start_ns if t is None else t)
                > max(longer_than_ns, 3 * self._period_ns[i])]

    def _health(self) -> Health:
        if len(self._stale_endpoints) == len(self.endpoints):
            return BLIND
        return DEGRADED if self._stale_endpoints or self._stale_srcs else OK

    def status(self, now_ns: int) -> dict[str, Any]:
        """The keys liveness adds to ``status``; ``stale`` is as of the last :meth:`check`.

        Silences are in ms, rounded to 0.1 ms; an endpoint never heard from has ``None``.
        """
        return {
            "health": self.health,
            "stale_endpoints": [self.endpoints[i] for i in sorted(self._stale_endpoints)],
            "stale_srcs": sorted(self._stale_srcs),
            "endpoint_silent_ms": {
                ep: None if t is None else _ms(now_ns - t)
                for ep, t in zip(self.endpoints, self._endpoint_ns, strict=True)
            },
            "src_silent_ms": {src: _ms(now_ns - t) for src, t in self._src_ns.items()},
            "srcs_untracked": self.srcs_untracked,
        }


def _update(
    last_heard: Iterable[tuple[K, int]], stale: dict[K, int], now_ns: int, stale_after_ns: int
) -> tuple[list[tuple[K, int]], list[tuple[K, int]]]:
    """Move keys in and out of ``stale`` (key -> last heard before it went stale).

    Returns the keys that went stale with their last-heard time, and the keys heard
    again with the silence they ended.
    """
    went: list[tuple[K, int]] = []
    back: list[tuple[K, int]] = []
    for key, last in last_heard:
        silent = now_ns - last > stale_after_ns
        if silent and key not in stale:
            stale[key] = last
            went.append((key, last))
        elif not silent and key in stale:
            back.append((key, last - stale.pop(key)))
    return went, back


def _ms(ns: int) -> float:
    return round(ns / 1e6, 1)


def summary(status: dict[str, Any]) -> str:
    """``health ok``, or ``health degraded (stale: src 'radar', ...)``: the summary's head.

    At most :data:`SUMMARY_NAMES` stale sources are named, so that the line stays short
    enough for ``systemctl status``; ``status`` lists them all. Endpoints first, then the
    ``src`` values silent the longest: a sensor that died is named before names that come
    and go (a publisher cycling through 250 names hid it).
    """
    stale = [str(Source("endpoint", ep)) for ep in status["stale_endpoints"]]
    silent = status.get("src_silent_ms") or {}
    stale += [str(Source("src", src)) for src in sorted(
        status["stale_srcs"], key=lambda src: -float(silent.get(src) or 0.0))]
    if not stale:
        return f"health {status['health']}"
    named = ", ".join(stale[:SUMMARY_NAMES])
    more = f" and {len(stale) - SUMMARY_NAMES} more" if len(stale) > SUMMARY_NAMES else ""
    return f"health {status['health']} (stale: {named}{more})"
