"""What other tools write into an MCAP file (attachments, metadata records, channels of
other encodings): ``bag info`` lists it, ``bag export`` keeps it, and neither holds an
attachment of many MB in memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer

from robot_daemon import wire
from robot_daemon.bag import BagMeta, BagReader, BagWriter
from robot_daemon.bag.export import export_json
from robot_daemon.errors import BagError

T0_NS = 1_764_000_000_000_000_000
CALIBRATION = b"camera:\n  fx: 615.2\n  fy: 615.9\n"
ATTACHMENT_OPCODE = 0x09


def _foreign_bag(path: Path, *, ours: bool, attachment: bytes = CALIBRATION) -> None:
    """A file written with mcap's own Writer, as a ROS 2 recorder beside ours would: a
    ``cdr`` channel with a ``ros2msg`` schema, an attachment, a metadata record of its own
    and, when ``ours``, our ``frame`` channel (msgpack) and ``robot_daemon`` record."""
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start(profile="ros2", library="another tool")
        if ours:
            writer.add_metadata("robot_daemon", BagMeta(d=4, c=3).to_record())
            frames = writer.register_channel("frame", "msgpack", 0)
        schema = writer.register_schema("std_msgs/msg/String", "ros2msg", b"string data")
        chatter = writer.register_channel("/chatter", "cdr", schema,
                                          {"offered_qos_profiles": "reliable"})
        for i in range(3):
            t_ns = T0_NS + i * 20_000_000
            writer.add_message(chatter, log_time=t_ns, data=b"\x00\x01\x00\x00" + bytes([i]),
                               publish_time=t_ns - 5, sequence=7 + i)
            if ours:
                payload = wire.encode_frame(i, t_ns / 1e9, np.full(4, i, np.float32))
                writer.add_message(frames, log_time=t_ns, data=payload, publish_time=t_ns,
                                   sequence=i)
        writer.flush()  # type: ignore[no-untyped-call]  # the chunk of messages first
        writer.add_attachment(create_time=T0_NS - 1, log_time=T0_NS, name="calibration.yaml",
                              media_type="application/yaml", data=attachment)
        writer.add_metadata("rosbag2", {"recorded_by": "ros2 bag", "storage": "mcap"})
        writer.finish()  # type: ignore[no-untyped-call]


def test_info_lists_attachments_and_metadata_and_says_when_the_protocol_is_unknown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ros.mcap"
    _foreign_bag(path, ours=False)
    with BagReader(path) as bag:
        info = bag.info()
    assert not info.meta_recorded
    summary = info.as_dict()
    assert summary["protocol_version"] is None  # not the v1 of our own bags
    assert summary["attachments"] == [{"name": "calibration.yaml",
                                       "media_type": "application/yaml",
                                       "size_bytes": len(CALIBRATION)}]
    assert summary["metadata"] == [{"name": "rosbag2", "keys": ["recorded_by", "storage"]}]
    assert summary["topics"]["/chatter"]["message_encoding"] == "cdr"
    text = info.describe()
    assert "protocol:   unknown (no 'robot_daemon' metadata record" in text
    assert "v1" not in text
    assert f"  calibration.yaml  application/yaml  {len(CALIBRATION)} bytes" in text
    assert "  rosbag2  keys: recorded_by, storage" in text


def test_info_of_our_own_bag_shows_protocol_v1_and_our_record(tmp_path: Path) -> None:
    path = tmp_path / "ours.mcap"
    with BagWriter(path, meta=BagMeta(d=4, c=3)) as bag:
        bag.write("frame", wire.encode_frame(0, 1.0, np.zeros(4, np.float32)), T0_NS)
    with BagReader(path) as bag:
        info = bag.info()
    assert info.meta_recorded
    assert info.as_dict()["protocol_version"] == 1
    assert info.as_dict()["attachments"] == []
    assert info.as_dict()["metadata"] == [{"name": "robot_daemon",
                                           "keys": ["protocol_version", "d", "c"]}]
    text = info.describe()
    assert "protocol:   v1" in text
    assert "attachments: none" in text


def test_a_scan_never_holds_a_large_attachment(tmp_path: Path) -> None:
    path = tmp_path / "map.mcap"
    big = bytes(range(256)) * (32 << 12)  # 32 MiB
    _foreign_bag(path, ours=True, attachment=big)
    del big
    with BagReader(path) as bag:
        tracemalloc.start()
        try:
            info = bag.info()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.complete
        assert [a.size_bytes for a in info.attachments] == [32 << 20]
        assert peak < 4 << 20  # one piece of 1 MiB at a time, not 32 MiB
        (attachment,) = info.attachments
        with pytest.raises(BagError, match=r"holds 32\.0 MiB .* over the limit of 1\.0 MiB"):
            bag.read_attachment(attachment, 1 << 20)
        assert bag.read_attachment(attachment, 32 << 20)[:512] == bytes(range(256)) * 2


def _attachment_offset(data: bytes) -> int:
    """The offset of the first attachment record in an MCAP file's bytes."""
    offset = 8
    while data[offset] != ATTACHMENT_OPCODE:
        offset += 9 + int.from_bytes(data[offset + 1:offset + 9], "little")
    return offset


def test_a_damaged_attachment_is_damage_not_garbage_or_a_huge_allocation(tmp_path: Path) -> None:
    path = tmp_path / "ros.mcap"
    _foreign_bag(path, ours=True)
    data = path.read_bytes()
    at = _attachment_offset(data)
    flipped = bytearray(data)
    flipped[data.index(CALIBRATION) + 3] ^= 0x40  # fails the attachment's CRC
    # the data's length field, after opcode, length, two times and the two strings
    size_field = at + 9 + 16 + 4 + len("calibration.yaml") + 4 + len("application/yaml")
    absurd = bytearray(data)
    absurd[size_field:size_field + 8] = (1 << 62).to_bytes(8, "little")
    for name, content in (("flipped", flipped), ("absurd", absurd)):
        broken = tmp_path / f"{name}.mcap"
        broken.write_bytes(bytes(content))
        with BagReader(broken) as bag:
            info = bag.info()
        assert not info.complete, name
        assert info.damaged_at == at, name
        assert info.attachments == [], name
        assert info.topics["frame"].count == 3, name  # everything before it was read


def test_export_keeps_attachments_foreign_metadata_and_channels(tmp_path: Path) -> None:
    source, out = tmp_path / "mixed.mcap", tmp_path / "mixed.json.mcap"
    _foreign_bag(source, ours=True)
    summary = export_json(source, out)
    assert summary.counts == {"frame": 3}
    assert summary.copied == {("/chatter", "cdr"): 3}
    assert summary.attachments == ["calibration.yaml"]
    assert summary.metadata == ["rosbag2"]
    assert summary.skipped == summary.no_schema == {}
    assert summary.attachments_left_out == []
    text = summary.describe()
    assert "copied 3 /chatter messages unchanged (message encoding 'cdr')" in text
    assert "copied attachment calibration.yaml" in text
    assert "copied metadata record rosbag2" in text

    with open(source, "rb") as f:
        before = list(make_reader(f).iter_messages(topics=["/chatter"]))
    with open(out, "rb") as f:
        reader = make_reader(f)
        after = list(reader.iter_messages(topics=["/chatter"]))
        (attachment,) = list(reader.iter_attachments())
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
        frames = list(reader.iter_messages(topics=["frame"]))
    # Copied unchanged: schema, channel (metadata included), payloads, times, sequences.
    assert [(s.name, s.encoding, s.data) for s, _, _ in after] == [
        (s.name, s.encoding, s.data) for s, _, _ in before]
    assert [(c.topic, c.message_encoding, c.metadata) for _, c, _ in after] == [
        (c.topic, c.message_encoding, c.metadata) for _, c, _ in before]
    assert [(m.data, m.log_time, m.publish_time, m.sequence) for _, _, m in after] == [
        (m.data, m.log_time, m.publish_time, m.sequence) for _, _, m in before]
    assert (attachment.name, attachment.media_type, attachment.data) == (
        "calibration.yaml", "application/yaml", CALIBRATION)
    assert (attachment.log_time, attachment.create_time) == (T0_NS, T0_NS - 1)
    assert metadata["rosbag2"] == {"recorded_by": "ros2 bag", "storage": "mcap"}
    assert metadata["robot_daemon"]["extra.exported_from"] == str(source)
    assert [json.loads(m.data)["x"] for _, _, m in frames] == [[i] * 4 for i in range(3)]
    # ... and what bag info shows of the copy
    with BagReader(out) as bag:
        info = bag.info()
    assert info.complete
    assert [a.name for a in info.attachments] == ["calibration.yaml"]
    assert [m.name for m in info.metadata] == ["robot_daemon", "rosbag2"]


def test_export_names_what_it_leaves_out_and_why(tmp_path: Path) -> None:
    source, out = tmp_path / "mixed.mcap", tmp_path / "mixed.json.mcap"
    _foreign_bag(source, ours=True, attachment=b"x" * 2048)
    summary = export_json(source, out, max_attachment_bytes=1024)
    assert summary.attachments == []
    assert summary.attachments_left_out == [("calibration.yaml", 2048)]
    assert ("left out attachment calibration.yaml (2.0 KiB (2,048 bytes)): over the limit"
            " of 1.0 KiB (1,024 bytes) per attachment") in summary.describe()
    with open(out, "rb") as f:
        assert list(make_reader(f).iter_attachments()) == []


def test_export_leaves_out_a_channel_whose_schema_is_missing(tmp_path: Path) -> None:
    source, out = tmp_path / "broken-schema.mcap", tmp_path / "out.mcap"
    with open(source, "wb") as f:
        writer = Writer(f)
        writer.start()
        channel = writer.register_channel("/points", "cdr", 9)  # schema 9: never declared
        writer.add_message(channel, log_time=T0_NS, data=b"\x00", publish_time=T0_NS)
        writer.finish()  # type: ignore[no-untyped-call]
    summary = export_json(source, out)
    assert summary.no_schema == {"/points": 1}
    assert "left out 1 /points messages: their channel's schema is not in the bag" in (
        summary.describe())


def test_info_and_export_reports_keep_one_line_per_item_whatever_the_names(
    tmp_path: Path,
) -> None:
    """A newline in an attachment's, metadata record's or topic's name forged a line of
    ``bag info`` and ``bag export``: the reports were escaped line by line afterwards."""
    forged = "x\n\x1b[2Jrobot-daemon: forged line"
    source = tmp_path / "forged.mcap"
    with source.open("wb") as f:
        writer = Writer(f)
        writer.start(profile="", library="another tool")
        writer.add_attachment(create_time=0, log_time=0, name=forged, media_type=forged,
                              data=b"calibration")
        writer.add_metadata(forged, {forged: forged})
        channel = writer.register_channel(forged, "cdr", 0)
        writer.add_message(channel, log_time=1, data=b"\x00", publish_time=1)
        writer.finish()
    with BagReader(source) as bag:
        info = bag.info().describe()
    exported = export_json(source, tmp_path / "out.mcap").describe()
    for report in (info, exported):
        assert "forged" in report
        assert not any(line.startswith("robot-daemon") for line in report.split("\n"))
        assert "\x1b" not in report
