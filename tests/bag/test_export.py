"""Tests of ``bag export --json``'s schemas: JSON, what Foxglove's reader takes, field
names for every topic, and the exported messages valid against them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader

from robot_daemon import sim, wire
from robot_daemon.bag import BagMeta, BagWriter, schemas
from robot_daemon.bag.export import export_json

ROOT = Path(__file__).resolve().parents[2]
T0_NS = 1_764_000_000_000_000_000
#: What a JSON-schema reader must understand here: nothing else may appear.
KEYWORDS = {"title", "description", "type", "properties", "required", "items",
            "additionalProperties", "enum"}
TYPES = {"object", "array", "number", "integer", "string", "boolean", "null"}
#: What Foxglove's reader turns into fields: one of these per property.
FOXGLOVE_TYPES = TYPES - {"null"}


def _check_structure(schema: dict[str, Any], path: str = "$") -> None:
    """Only known keywords; types Foxglove reads; every object with properties, every
    array with items (Foxglove refuses a field without them)."""
    assert set(schema) <= KEYWORDS, f"{path}: {set(schema) - KEYWORDS}"
    kind = schema.get("type")
    assert kind in FOXGLOVE_TYPES, f"{path}: type {kind!r}"
    if kind == "object":
        assert isinstance(schema.get("properties"), dict), f"{path}: no properties"
        for name, sub in schema["properties"].items():
            _check_structure(sub, f"{path}.{name}")
        extra = schema.get("additionalProperties", True)
        assert isinstance(extra, bool) or _types(extra) <= TYPES, path
        assert set(schema.get("required", [])) <= set(schema["properties"]), path
    if kind == "array":
        _check_structure(schema["items"], f"{path}[]")


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema["type"]
    return set(kind) if isinstance(kind, list) else {kind}


def _is(value: object, kind: str) -> bool:
    checks: dict[str, Any] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }
    return bool(checks[kind](value))


def _validate(value: object, schema: dict[str, Any], path: str = "$") -> None:
    """A JSON-schema validator for the keywords of KEYWORDS (jsonschema is not a
    dependency): raises AssertionError at the first mismatch."""
    if "type" in schema:
        assert any(_is(value, k) for k in _types(schema)), f"{path}: {value!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r}"
    if isinstance(value, dict):
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{path}: missing {missing}"
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _validate(item, properties[key], f"{path}.{key}")
            else:
                assert extra is not False, f"{path}: unexpected {key}"
                if isinstance(extra, dict):
                    _validate(item, extra, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _validate(item, schema["items"], f"{path}[{i}]")


def test_the_validator_catches_what_it_should() -> None:
    schema = schemas.schema("status", BagMeta())
    _validate({"ticks": 3, "frames_rejected": {"wrong_d": 1}, "new_key": "x"}, schema)
    for bad in ({"ticks": 1.5}, {"health": "fine"}, {"frames_rejected": {"x": "y"}},
                {"stale_srcs": [1]}):
        with pytest.raises(AssertionError):
            _validate(bad, schema)


def _daemon_status(workdir: Path, *, online: bool) -> dict[str, Any]:
    """A real daemon's status map (built in this process, never run)."""
    from robot_daemon import config
    from robot_daemon.serve import daemon

    settings: dict[str, Any] = {"model": str(ROOT / "models/default.npz"),
                                "frames": [f"ipc://{workdir}/f"], "pred": f"ipc://{workdir}/p"}
    if online:
        settings.update(online=True, labels=f"ipc://{workdir}/l")
    status = daemon.Daemon(config.load(None, settings)).status()
    status["frames_rejected"] = {"wrong_d": 2, "bad_envelope": 1}
    status["src_silent_ms"] = {"lidar": 12.5}
    return status


def _every_kind_of_message(path: Path, workdir: Path) -> None:
    """Frames, labels, a pred and two statuses (with and without online learning)."""
    meta = BagMeta(d=sim.D, c=sim.C, feature_names=list(sim.FEATURE_NAMES),
                   class_names=list(sim.CLASSES))
    data = sim.simulate(1, rate_hz=10, seed=1)
    p = np.full((2, sim.C), 0.25)
    pred = wire.encode_pred(7, 100.5, np.array([0, 1]), p, "m-1", t_frame=[100.0, 100.1],
                            src=["lidar", None])
    with BagWriter(path, meta=meta) as bag:
        for i in range(data.n):
            t_ns = T0_NS + i * 100_000_000
            bag.write("frame", wire.encode_frame(i, 100.0 + i / 10, data.X[i], src="sim"), t_ns)
            bag.write("label", wire.encode_label(i, 100.0 + i / 10, data.X[i], data.Y[i]), t_ns)
        bag.write("pred", pred, T0_NS + 2_000_000_000)
        for n, online in enumerate((False, True)):
            status = wire.encode_status(_daemon_status(workdir, online=online))
            bag.write("status", status, T0_NS + 3_000_000_000 + n)
        bag.write("odometry", wire.encode_status({"v": 1.5}), T0_NS + 4_000_000_000)


def test_exported_schemas_name_every_field_and_validate_every_message(
    tmp_path: Path, workdir: Path
) -> None:
    source, out = tmp_path / "a.mcap", tmp_path / "a.json.mcap"
    _every_kind_of_message(source, workdir)
    summary = export_json(source, out)
    assert summary.skipped == {}
    with open(out, "rb") as f:
        records = list(make_reader(f).iter_messages())
    seen: dict[str, dict[str, Any]] = {}
    for schema_record, channel, message in records:
        assert schema_record is not None
        schema = json.loads(schema_record.data)  # plain JSON
        _check_structure(schema)
        _validate(json.loads(message.data), schema, channel.topic)
        seen[channel.topic] = schema
    assert set(seen) == {"frame", "label", "pred", "status", "odometry"}
    frame, label, pred = seen["frame"], seen["label"], seen["pred"]
    assert list(frame["properties"]["features"]["properties"]) == list(sim.FEATURE_NAMES)
    assert list(label["properties"]["classes"]["properties"]) == list(sim.CLASSES)
    assert list(pred["properties"]["classes"]["items"]["properties"]) == list(sim.CLASSES)
    status = seen["status"]
    assert status["title"] == "robot_daemon.status"
    assert status["additionalProperties"] is True  # new keys may appear
    assert "required" not in status
    assert {"latency_ms_p99", "health", "frames_rejected"} <= set(status["properties"])
    assert "wrong_d" in status["properties"]["frames_rejected"]["properties"]
    assert seen["odometry"] == {"title": "robot_daemon.map", "type": "object",
                                "properties": {}, "additionalProperties": True}


def test_a_bag_without_names_still_has_schemas_foxglove_reads(tmp_path: Path) -> None:
    for topic in ("frame", "label", "pred", "status", "anything"):
        schema = schemas.schema(topic, BagMeta())
        _check_structure(schema)
        json.loads(json.dumps(schema))
    assert schemas.schema("frame", BagMeta())["properties"]["features"]["properties"] == {}


def _doc_table(page: str, heading: str) -> dict[str, str]:
    """``key -> type`` of the first table after ``heading`` (type: the second column)."""
    text = (ROOT / "docs" / page).read_text()
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| key"))
    rows: dict[str, str] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for key in re.findall(r"`(\w+)`", cells[0]):
            rows[key] = cells[1]
    return rows


_DOC_TYPES = {"float": "number", "int": "integer", "str": "string"}


def test_the_status_schema_has_the_documented_keys_with_their_types() -> None:
    properties = schemas.schema("status", BagMeta())["properties"]
    protocol = _doc_table("protocol.md", "## `status`")
    assert len(protocol) == 21
    for key, doc_type in protocol.items():
        kind = properties[key]["type"]
        if doc_type.startswith("map"):
            assert kind == "object", key
        elif doc_type.startswith("array of"):
            assert (kind, properties[key]["items"]["type"]) == ("array", _DOC_TYPES[doc_type[9:]])
        else:
            assert kind == _DOC_TYPES[doc_type], key
    deploy = _doc_table("daemon-reference.md", "`status` holds the keys")
    assert len(deploy) > 20
    assert set(deploy) <= set(properties), set(deploy) - set(properties)


def test_an_export_stopped_half_way_leaves_the_old_output_and_no_file_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C or SIGTERM in the middle of an export: once, the output was a bag cut at
    that message that ``bag info`` called complete, written over the old one."""
    from robot_daemon.bag import export

    source = tmp_path / "run.mcap"
    sim.write_bag(source, sim.simulate(2, seed=4))
    out = tmp_path / "out.mcap"
    out.write_bytes(b"an earlier export")
    real, calls = export._export_one, []

    def stopped(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(export, "_export_one", stopped)
    with pytest.raises(KeyboardInterrupt):
        export_json(source, out)
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mcap", "run.mcap"]


def test_a_capture_bags_shadow_and_capture_topics_have_schemas_that_validate(
    tmp_path: Path
) -> None:
    from robot_daemon.capture import CapturedFrame
    from robot_daemon.capture.frames import messages

    meta = BagMeta(d=2, c=2, class_names=["person", "dog"])
    source, out = tmp_path / "capture.mcap", tmp_path / "capture.json.mcap"
    with BagWriter(source, meta=meta) as bag:
        for src in ("lidar", None):
            frame = CapturedFrame(7, 100.5, np.ones(2, np.float32), src, T0_NS,
                                  np.array([0.48, 0.9], np.float32), "m-1",
                                  np.array([0.6, 0.9], np.float32), "m-2",
                                  np.array([1, 1], np.uint8), ("uncertain", "disagree"))
            for message in messages(frame):
                bag.write(message.topic, message.payload, T0_NS, message.sensor_ns)
    assert export_json(source, out).skipped == {}
    with open(out, "rb") as f:
        records = list(make_reader(f).iter_messages())
    seen = set()
    for schema_record, channel, message in records:
        assert schema_record is not None
        schema = json.loads(schema_record.data)
        _check_structure(schema)
        _validate(json.loads(message.data), schema, channel.topic)
        seen.add((channel.topic, schema["title"]))
    assert seen == {("frame", "robot_daemon.frame"), ("pred", "robot_daemon.pred"),
                    ("shadow", "robot_daemon.shadow"), ("label", "robot_daemon.label"),
                    ("capture", "robot_daemon.capture")}
    shadow = next(json.loads(m.data) for _, c, m in records if c.topic == "shadow")
    assert (shadow["model"], shadow["classes"]) == ("m-2", [{"person": pytest.approx(0.6),
                                                             "dog": pytest.approx(0.9)}])
