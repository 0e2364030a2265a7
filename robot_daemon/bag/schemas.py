"""The JSON schemas of ``bag export --json``: one per topic, so that Foxglove offers the
fields by name (``frame.features.range_center_m``, ``status.latency_ms_p99``).

Foxglove builds its field list from ``properties`` alone, and refuses a schema where a
property has no ``type``, a list of types (``["number", "null"]``) or, for an object, no
``properties``. So every property here has exactly one type, every object has
``properties`` (empty for a map whose keys vary), and a map's values are described by
``additionalProperties``, which Foxglove ignores and a validator (``ajv``) checks. A key
whose value may be null (``online_loss_avg`` and ``online_last_step`` before the first
step) is left to ``additionalProperties`` rather than typed wrongly.

The ``status`` properties follow ``docs/protocol.md``'s status table and
``docs/daemon-reference.md``; new keys may appear without a protocol change, so the status schema
requires none and allows others.
"""

from __future__ import annotations

from typing import Any, Final

from robot_daemon import wire
from robot_daemon.bag.format import BagMeta

Schema = dict[str, Any]

NUMBER: Final[Schema] = {"type": "number"}
INTEGER: Final[Schema] = {"type": "integer"}
STRING: Final[Schema] = {"type": "string"}
_NUMBERS: Final[Schema] = {"type": "array", "items": NUMBER}
_INTEGERS: Final[Schema] = {"type": "array", "items": INTEGER}
_STRINGS: Final[Schema] = {"type": "array", "items": STRING}


def _described(schema: Schema, description: str) -> Schema:
    return {**schema, "description": description}


def _map(values: Schema, description: str, keys: tuple[str, ...] = ()) -> Schema:
    """An object whose keys vary: the known ones as properties, the values' type for all."""
    return {
        "type": "object",
        "description": description,
        "properties": dict.fromkeys(keys, values),
        "additionalProperties": values,
    }


#: A counter keyed by rejection reason (``frames_rejected``).
_FRAME_REJECTIONS: Final = (*wire.REASONS, "bad_envelope", "non_finite_output")
_ONLINE_REJECTIONS: Final = ("outlier", "non_finite_loss", "loss_jump", "rollback",
                             "holdout_worse")

_COUNTERS: Final = {
    # docs/protocol.md, "status"
    "frames_in": "frames received (every payload on the frame topic)",
    "frames_accepted": "frames that decoded and validated",
    "frames_dropped": "valid frames dropped because a tick's batch was full",
    "frames_lost": "frames sent but never received, from the gaps in each stream's seq",
    "ticks": "ticks run",
    "ticks_late": "ticks that started after their deadline",
    "batch_p50": "frames per tick, median over the last status period",
    "batch_p99": "frames per tick, 99th percentile over the last status period",
    # docs/daemon-reference.md, "What the daemon publishes"
    "ticks_missed": "tick deadlines skipped because a tick ran past them",
    "ticks_late_os": "of ticks_late: the OS kept the CPU from the loop",
    "ticks_early": "ticks whose forward pass began before the deadline (the early pass)",
    "ticks_caught_up": "of ticks_early: a catch-up pass took the frames since, 0.31 ms before",
    "early_recomputed": "of ticks_early: the weights changed after the early pass",
    "preds": "pred messages published",
    "frames_seq_resets": "a publisher restarted its numbering (seq went back, then on)",
    "frames_out_of_seq": "frames whose seq fit no numbering of their stream",
    "sources": "streams (a frames endpoint and a src) whose seq is tracked",
    "srcs_untracked": "valid frames whose src was not tracked for liveness",
    "reloads": "SIGHUP reloads done",
    "reload_failures": "SIGHUP reloads refused",
    "tick_errors": "ticks that failed with an unexpected error",
}
_GAUGES_MS: Final = {
    "latency_ms_p50": "frame arrival to pred published, median over the last status period",
    "latency_ms_p99": "frame arrival to pred published, 99th percentile",
    "tick_ms_p50": "tick processing time, median over the last status period",
    "tick_ms_p99": "tick processing time, 99th percentile",
    "tick_ms_max": "tick processing time, maximum",
    "tick_ms_sum": "the sum of all ticks' processing times since the start",
    "latency_ms_sum": "the sum of all answered frames' latencies since the start",
    "wake_late_ms_p50": "how late ticks started after their deadline, median",
    "wake_late_ms_p99": "how late ticks started after their deadline, 99th percentile",
    "wake_late_ms_max": "how late ticks started after their deadline, maximum",
}
#: Online learning's keys (docs/deploy.md, present when it is on): integers but for these.
_ONLINE_COUNTERS: Final = (
    "labels_received", "labels_accepted", "labels_handshakes", "labels_reconnects",
    "online_version", "online_steps", "online_steps_deferred", "labels_in",
    "labels_not_trained", "labels_waiting", "replay_size", "holdout_size",
    "checkpoints_saved", "checkpoints_deferred", "checkpoint_failures", "checkpoint_version",
    "online_errors",
)
_ONLINE_GAUGES_MS: Final = ("online_step_ms_avg", "online_step_ms_expected",
                            "checkpoint_ms_expected")
_ONLINE: Final = "online learning, see docs/deploy.md"

STATUS_PROPERTIES: Final[dict[str, Schema]] = {
    "t": _described(NUMBER, "wall-clock seconds when the status was built"),
    "uptime_s": _described(NUMBER, "seconds since the daemon started"),
    "model_version": _described(STRING, "the model serving predictions"),
    "pid": _described(INTEGER, "the daemon's process id (the metrics exporter's process_* series)"),
    "health": {
        "type": "string",
        "enum": ["ok", "degraded", "blind"],
        "description": "ok, degraded (some source stale) or blind (no valid frames)",
    },
    "stale_endpoints": _described(_STRINGS, "frames endpoints without a valid frame lately"),
    "stale_srcs": _described(_STRINGS, "frame src values without a valid frame lately"),
    **{key: _described(INTEGER, text) for key, text in _COUNTERS.items()},
    **{key: _described(NUMBER, text) for key, text in _GAUGES_MS.items()},
    **{key: _described(INTEGER, _ONLINE) for key in _ONLINE_COUNTERS},
    **{key: _described(NUMBER, _ONLINE) for key in _ONLINE_GAUGES_MS},
    "tick_ms_edges": _described(_NUMBERS, "upper edges of the tick-time histogram, ms"),
    "tick_ms_counts": _described(_INTEGERS, "ticks per tick-time bucket since the start"),
    "latency_ms_edges": _described(_NUMBERS, "upper edges of the latency histogram, ms"),
    "latency_ms_counts": _described(_INTEGERS, "answered frames per latency bucket"),
    "frames_rejected": _map(INTEGER, "rejected frames per reason", _FRAME_REJECTIONS),
    "endpoint_silent_ms": _map(
        {"type": ["number", "null"]},
        "per frames endpoint, ms since its last valid frame; null if none since the start",
    ),
    "src_silent_ms": _map(NUMBER, "per src seen, ms since its last valid frame"),
    "labels_rejected": _map(INTEGER, _ONLINE),
    "labels_handshake_failed": _map(INTEGER, _ONLINE),
    "online_rejected": _map(INTEGER, _ONLINE, _ONLINE_REJECTIONS),
    "tick_ms_sum": _described(NUMBER, "sum of every tick's processing time since the start, ms"),
    "latency_ms_sum": _described(NUMBER, "sum of every answered frame's latency, ms"),
    "reconnects": _map(_map(INTEGER, "reconnects of the endpoint per reason"),
                       "endpoints libzmq gave up on that the daemon connected again"),
    "tick_offset_ms": _described(NUMBER, "the tick grid against where it started, ms"),
    "tick_moves": _described(INTEGER, "moves of the tick grid (tick_phase auto)"),
    "ticks_before_deadline": _described(
        INTEGER, "ticks served before their deadline, every locked source's frame in"),
    "src_latency_ms": _map(_described(_NUMBERS, "[p50, p99], ms"),
                           "per src (at most 16), frame arrival to pred published"),
    "shadow": {
        "type": "object",
        "description": "run --shadow: the candidate model against the serving one",
        "properties": {
            "model": _described(STRING, "the shadow model's identity"),
            "frames_compared": _described(INTEGER, "frames both models answered"),
            "frames_skipped": _described(INTEGER, "frames the shadow had no time for"),
            "disagree": _map(NUMBER, "per class, share of frames whose decisions differ"),
            "mean_abs_diff": _map(NUMBER, "per class, mean |p_shadow - p_serving|"),
            "labelled": _described(INTEGER, "labelled frames both models were scored on"),
            "f1_serving": _map(NUMBER, "per class and macro, the serving model's F1"),
            "f1_shadow": _map(NUMBER, "per class and macro, the shadow's F1"),
        },
    },
    # run --capture (robot_daemon.capture.writer.Capture.status)
    "capture_frames": _described(INTEGER, "captured frames written into capture bags"),
    "capture_labels": _described(INTEGER, "labels of captured frames written as they came"),
    "capture_dropped": _map(INTEGER, "captured frames not written, per cause",
                            ("rate", "queue", "error")),
    "capture_bytes": _described(INTEGER, "bytes of the capture bags on disk"),
    "capture_bags": _described(INTEGER, "capture bags on disk, the open one included"),
    "capture_errors": _described(INTEGER, "capture writes that failed (a full disk, ...)"),
    "capture_by_reason": _map(INTEGER, "captured frames written, per trigger",
                              ("uncertain", "disagree", "contradict", "health")),
}


#: A capture bag's ``capture`` message: why a frame was kept (robot_daemon.capture).
CAPTURE_PROPERTIES: Final[dict[str, Schema]] = {
    "seq": _described(INTEGER, "the captured frame's seq"),
    "t": _described(NUMBER, "the captured frame's sensor time, seconds"),
    "src": _described(STRING, "the captured frame's src (when it had one)"),
    "reasons": _described(_STRINGS, "the triggers that captured it: uncertain, disagree,"
                                    " contradict, health"),
}


def schema(topic: str, meta: BagMeta) -> Schema:
    """The JSON schema of ``topic``'s exported messages in a bag described by ``meta``.

    Feature and class names, when the bag knows them, become properties (``features``,
    ``classes``), so that Foxglove offers them too.
    """
    features = _map(NUMBER, "x by feature name (when known)", tuple(meta.feature_names or ()))
    reading: dict[str, Schema] = {
        "seq": _described(INTEGER, "publisher's sequence number"),
        "t": _described(NUMBER, "sensor time, seconds"),
        "x": _described(_NUMBERS, "the d readings"),
        "src": _described(STRING, "the publisher's name (when it gave one)"),
        "features": features,
    }
    class_names = tuple(meta.class_names or ())
    if topic == wire.TOPIC_FRAME.decode():
        return _object("robot_daemon.frame", reading, ["seq", "t", "x"])
    if topic == wire.TOPIC_LABEL.decode():
        label = {
            **reading,
            "y": _described(_INTEGERS, "the c targets, 0 or 1"),
            "classes": _map(INTEGER, "y by class name (when known)", class_names),
        }
        return _object("robot_daemon.label", label, ["seq", "t", "x", "y"])
    if topic in (wire.TOPIC_PRED.decode(), wire.TOPIC_SHADOW.decode()):
        # A shadow model's answers have the pred format (run --shadow, capture bags).
        return _object(f"robot_daemon.{topic}", _pred_properties(class_names),
                       ["tick", "t", "seq", "p", "n", "c", "model"])
    if topic == wire.TOPIC_CAPTURE.decode():
        return _object("robot_daemon.capture", CAPTURE_PROPERTIES, ["seq", "t", "reasons"])
    if topic == wire.TOPIC_STATUS.decode():
        return {**_object("robot_daemon.status", STATUS_PROPERTIES, []),
                "additionalProperties": True}
    # A topic we do not know: a map of anything.
    return {**_object("robot_daemon.map", {}, []), "additionalProperties": True}


def _pred_properties(class_names: tuple[str, ...]) -> dict[str, Schema]:
    row = {
        "type": "object",
        "properties": dict.fromkeys(class_names, NUMBER),
        "additionalProperties": NUMBER,
    }
    return {
        "tick": _described(INTEGER, "the daemon's tick number"),
        "t": _described(NUMBER, "time the tick was served, seconds"),
        "seq": _described(_INTEGERS, "seq of each answered frame"),
        "p": {"type": "array", "items": _NUMBERS, "description": "n rows of c probabilities"},
        "n": _described(INTEGER, "frames answered"),
        "c": _described(INTEGER, "classes"),
        "model": _described(STRING, "the model's version"),
        "t_frame": _described(_NUMBERS, "each answered frame's sensor time"),
        "classes": {
            "type": "array",
            "items": row,
            "description": "each row of p by class name (when known)",
        },
    }


def _object(title: str, properties: dict[str, Schema], required: list[str]) -> Schema:
    schema: Schema = {"title": title, "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema
