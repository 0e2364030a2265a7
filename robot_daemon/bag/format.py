"""The bag format: its constants, :class:`BagMeta` (what a reader needs to
interpret the payloads) and :class:`BagMessage` (one message with its two times).

The format itself is described in ``docs/bags.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from robot_daemon.errors import BagError

INSTALL_HINT = "the bag tools need the mcap package: pip install 'robot-daemon[bag]'"
PROTOCOL_VERSION = 1
MESSAGE_ENCODING = "msgpack"
META_RECORD = "robot_daemon"
_EXTRA_PREFIX = "extra."
MCAP_MAGIC = b"\x89MCAP0\r\n"
MAX_TIME_NS = 2**64 - 1  # MCAP times are uint64


@dataclass(frozen=True)
class BagMeta:
    """What a reader needs to interpret a bag's payloads.

    ``d`` and ``c`` are ``None`` when unknown (plain MCAP files written by other tools);
    ``extra`` holds free-form string pairs (the simulator's seed, the robot's id, ...).
    """

    d: int | None = None
    c: int | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    protocol_version: int = PROTOCOL_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("d", self.d), ("c", self.c)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise BagError(f"BagMeta.{name} must be a positive integer or None, got {value!r}")
        _check_names("feature_names", self.feature_names, self.d)
        _check_names("class_names", self.class_names, self.c)

    def to_record(self) -> dict[str, str]:
        """The MCAP metadata record (string to string) that stores this meta."""
        record = {"protocol_version": str(self.protocol_version)}
        if self.d is not None:
            record["d"] = str(self.d)
        if self.c is not None:
            record["c"] = str(self.c)
        if self.feature_names is not None:
            record["feature_names"] = json.dumps(self.feature_names)
        if self.class_names is not None:
            record["class_names"] = json.dumps(self.class_names)
        record.update({_EXTRA_PREFIX + k: v for k, v in self.extra.items()})
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> BagMeta:
        """Parse :meth:`to_record`'s output; raise :class:`BagError` on malformed values."""
        try:
            return cls(
                d=_opt_int(record.get("d")),
                c=_opt_int(record.get("c")),
                feature_names=_opt_names(record.get("feature_names")),
                class_names=_opt_names(record.get("class_names")),
                protocol_version=int(record.get("protocol_version", PROTOCOL_VERSION)),
                extra={
                    k.removeprefix(_EXTRA_PREFIX): v
                    for k, v in record.items()
                    if k.startswith(_EXTRA_PREFIX)
                },
            )
        except (ValueError, TypeError) as exc:
            raise BagError(
                f"the bag's {META_RECORD!r} metadata record is malformed ({exc}); "
                "rewrite the bag with a BagWriter or ignore its metadata"
            ) from None


def _check_names(what: str, names: list[str] | None, size: int | None) -> None:
    if names is None:
        return
    if not all(isinstance(n, str) for n in names):
        raise BagError(f"BagMeta.{what} must be a list of strings")
    if size is not None and len(names) != size:
        raise BagError(f"BagMeta.{what} has {len(names)} names for {size} values")


def _opt_int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _opt_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = json.loads(text)
    if not isinstance(names, list):
        raise ValueError(f"expected a JSON list of names, got {text[:40]!r}")
    return names


@dataclass(frozen=True, slots=True)
class BagMessage:
    """One recorded message: its topic, payload bytes and times (integer nanoseconds).

    ``sensor_ns`` is the payload's own time (``"t"``), ``None`` when it has none (a
    malformed payload recorded for debugging, or a foreign message encoding).
    """

    topic: str
    payload: bytes
    recv_ns: int
    sensor_ns: int | None


def seconds_to_ns(t: float | None) -> int | None:
    """Sensor seconds to MCAP nanoseconds; ``None`` where MCAP's uint64 cannot hold it."""
    if t is None or not math.isfinite(t) or t < 0:
        return None
    ns = round(t * 1e9)
    return ns if ns <= MAX_TIME_NS else None
