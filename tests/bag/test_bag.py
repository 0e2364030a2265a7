"""Tests of robot_daemon.bag: the MCAP bag format, crash safety and tolerant reading."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from mcap.writer import Writer

from robot_daemon import wire
from robot_daemon.bag import BagMessage, BagMeta, BagReader, BagWriter, seconds_to_ns
from robot_daemon.bag.reader import human_size
from robot_daemon.errors import BagError

T0_NS = 1_764_000_000_000_000_000  # a recv time in 2025, as time.time_ns() would give
CHUNK_OPCODE = 0x06
METADATA_OPCODE = 0x0C


def _messages(n: int, d: int = 4, c: int = 3) -> list[BagMessage]:
    """n frames and labels alternating, 20 ms apart, with distinct payloads."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = 100.0 + 0.02 * i
        x = rng.normal(size=d).astype(np.float32)
        if i % 2:
            y = rng.integers(0, 2, size=c).astype(np.uint8)
            topic, payload = "label", wire.encode_label(i, t, x, y)
        else:
            topic, payload = "frame", wire.encode_frame(i, t, x)
        out.append(BagMessage(topic, payload, T0_NS + 20_000_000 * i, seconds_to_ns(t)))
    return out


def _write(path: Path, messages: list[BagMessage], meta: BagMeta | None = None) -> None:
    with BagWriter(path, meta=meta) as bag:
        for m in messages:
            bag.write(m.topic, m.payload, m.recv_ns, m.sensor_ns)


def _read(path: Path) -> list[BagMessage]:
    with BagReader(path) as bag:
        return list(bag.messages())


def test_round_trip_keeps_payloads_times_and_meta(tmp_path: Path) -> None:
    meta = BagMeta(
        d=4,
        c=3,
        feature_names=["a", "b", "c", "d"],
        class_names=["dog", "pole", "bike"],
        extra={"seed": "7", "robot": "r2"},
    )
    messages = _messages(50)
    _write(tmp_path / "b.mcap", messages, meta)
    with BagReader(tmp_path / "b.mcap") as bag:
        assert list(bag.messages()) == messages
        assert bag.meta == meta
        assert not bag.damaged
        assert bag.warning is None
        assert [m.topic for m in bag.messages(topics=["label"])] == ["label"] * 25


def test_unknown_sensor_time_reads_back_as_none_and_zero_stays_zero(tmp_path: Path) -> None:
    frame_at_zero = wire.encode_frame(0, 0.0, np.zeros(4, np.float32))
    messages = [
        BagMessage("frame", b"\xc1 not msgpack", 5, None),
        # sensor time equal to recv time: stored ambiguously, recovered from the payload
        BagMessage("frame", frame_at_zero, 0, 0),
        BagMessage("frame", frame_at_zero, 7, 0),
    ]
    _write(tmp_path / "b.mcap", messages)
    assert _read(tmp_path / "b.mcap") == messages


def test_plain_mcap_from_another_tool_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "plain.mcap"
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start()
        schema = writer.register_schema("Pose", "jsonschema", b'{"type": "object"}')
        channel = writer.register_channel("/pose", "json", schema)
        for i in range(3):
            writer.add_message(channel, log_time=10 + i, data=b'{"x": 1}', publish_time=5 + i)
        writer.finish()  # type: ignore[no-untyped-call]
    with BagReader(path) as bag:
        assert bag.meta == BagMeta()
        assert bag.meta.d is None
        assert bag.meta.c is None
        assert list(bag.messages()) == [
            BagMessage("/pose", b'{"x": 1}', 10 + i, 5 + i) for i in range(3)
        ]
        info = bag.info()
    assert info.complete
    assert info.topics["/pose"].count == 3


def test_later_meta_record_wins(tmp_path: Path) -> None:
    path = tmp_path / "b.mcap"
    with BagWriter(path) as bag:
        bag.write("frame", b"x", 1)
        bag.write_meta(BagMeta(d=16, c=8))
    with BagReader(path) as reader:
        assert reader.meta == BagMeta(d=16, c=8)


def test_writer_finishes_the_file_when_an_exception_unwinds(tmp_path: Path) -> None:
    path = tmp_path / "b.mcap"
    messages = _messages(10)

    def write_then_fail() -> None:
        with BagWriter(path) as bag:
            for m in messages:
                bag.write(m.topic, m.payload, m.recv_ns, m.sensor_ns)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    with BagReader(path) as reader:
        assert list(reader.messages()) == messages
        assert not reader.damaged


def test_writer_rejects_bad_times_and_writes_after_close(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "b.mcap") as bag:
        with pytest.raises(BagError, match="recv_ns must be integer nanoseconds"):
            bag.write("frame", b"", -1)
        with pytest.raises(BagError, match="sensor_ns must be integer nanoseconds"):
            bag.write("frame", b"", 1, 2**64)
    with pytest.raises(BagError, match="already closed"):
        bag.write("frame", b"", 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d": 0}, "BagMeta.d must be a positive integer"),
        ({"c": -3}, "BagMeta.c must be a positive integer"),
        ({"d": 2, "feature_names": ["a"]}, "feature_names has 1 names for 2 values"),
        ({"class_names": [1, 2]}, "class_names must be a list of strings"),
    ],
)
def test_meta_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(BagError, match=match):
        BagMeta(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"\x89MCA", "is not an MCAP bag"),
        (b"PK\x03\x04 a zip file, not a bag", "is not an MCAP bag"),
        (bytes(range(256)) * 4, "is not an MCAP bag"),
    ],
)
def test_non_bags_raise_bag_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "x.mcap"
    path.write_bytes(content)
    with pytest.raises(BagError, match=match):
        BagReader(path)


def test_missing_file_and_directory_raise_bag_error(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no such bag"):
        BagReader(tmp_path / "nope.mcap")
    with pytest.raises(BagError, match="is a directory"):
        BagReader(tmp_path)


def _top_level_records(data: bytes) -> list[tuple[int, int, int]]:
    """(opcode, start, end) of each top-level record: an oracle independent of mcap."""
    records, pos = [], 8
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        end = pos + 9 + length
        records.append((opcode, pos, end))
        pos = end
        if opcode == 0x02:  # footer: the closing magic follows
            break
    return records


def _chunked_bag(path: Path, groups: int, per_group: int) -> list[BagMessage]:
    """A bag of ``groups`` chunks of ``per_group`` messages each (one flush per chunk)."""
    messages = _messages(groups * per_group)
    with BagWriter(path, meta=BagMeta(d=4, c=3)) as bag:
        for g in range(groups):
            for m in messages[g * per_group : (g + 1) * per_group]:
                bag.write(m.topic, m.payload, m.recv_ns, m.sensor_ns)
            bag.flush()
    return messages


def test_a_reader_logs_the_same_damage_once_however_often_it_scans(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full, cut = tmp_path / "full.mcap", tmp_path / "cut.mcap"
    _chunked_bag(full, groups=3, per_group=3)
    cut.write_bytes(full.read_bytes()[:-200])
    with BagReader(cut) as bag:
        bag.info()  # bag play checks its options on a first scan, then plays
        for _ in range(3):  # and bag play --loop scans once a pass
            assert len(list(bag.messages())) == 9
        assert bag.damaged
    assert [r.message for r in caplog.records].count(bag.warning) == 1


def test_a_bag_cut_at_every_byte_yields_exactly_its_complete_chunks(tmp_path: Path) -> None:
    full = tmp_path / "full.mcap"
    per_group = 3
    messages = _chunked_bag(full, groups=5, per_group=per_group)
    data = full.read_bytes()
    records = _top_level_records(data)
    chunk_ends = [end for op, _, end in records if op == CHUNK_OPCODE]
    assert len(chunk_ends) == 5
    meta_end = next(end for op, _, end in records if op == METADATA_OPCODE)
    cut = tmp_path / "cut.mcap"
    for size in range(8, len(data)):
        cut.write_bytes(data[:size])
        expected = per_group * sum(end <= size for end in chunk_ends)
        with BagReader(cut) as bag:
            got = list(bag.messages())
            assert got == messages[:expected], f"cut at {size}"
            assert bag.damaged, f"cut at {size}"
            assert bag.damaged_at is not None
            assert bag.damaged_at <= size
            assert bag.warning is not None
            assert "damaged" in bag.warning
            # written first: every cut after its record keeps it
            assert bag.meta == (BagMeta(d=4, c=3) if size >= meta_end else BagMeta())
            info = bag.info()
        assert not info.complete
        assert info.message_count == expected


def test_flipped_bytes_never_yield_garbage(tmp_path: Path) -> None:
    full = tmp_path / "full.mcap"
    messages = _chunked_bag(full, groups=4, per_group=4)
    data = full.read_bytes()
    bad = tmp_path / "bad.mcap"
    rng = np.random.default_rng(1)
    for offset in rng.choice(np.arange(8, len(data)), size=300, replace=False):
        corrupted = bytearray(data)
        corrupted[offset] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(corrupted))
        with BagReader(bad) as bag:
            got = list(bag.messages())
        assert got == messages[: len(got)], f"flip at {offset}"


def test_info_reports_counts_rates_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "b.mcap"
    _write(path, _messages(100), BagMeta(d=4, c=3, class_names=["dog", "pole", "bike"]))
    with BagReader(path) as bag:
        info = bag.info()
    assert info.complete
    assert info.message_count == 100
    assert info.duration_ns == 99 * 20_000_000
    assert info.topics["frame"].count == 50
    assert info.topics["frame"].rate_hz == pytest.approx(25.0)
    summary = info.as_dict()
    assert summary["d"] == 4
    assert summary["integrity"] == "complete"
    assert "dog, pole, bike" in info.describe()


def _mcap_records(path: Path) -> list[object]:
    from mcap.stream_reader import StreamReader

    with open(path, "rb") as f:
        return list(StreamReader(f, emit_chunks=False).records)


def test_each_channel_numbers_its_messages_from_zero(tmp_path: Path) -> None:
    # One counter across the bag would show each channel 0, 2, 4, ...: half "lost".
    from mcap.reader import make_reader

    path = tmp_path / "seq.mcap"
    _write(path, _messages(10), BagMeta(d=4, c=3))
    with open(path, "rb") as f:
        seen: dict[str, list[int]] = {}
        for _, channel, message in make_reader(f).iter_messages(log_time_order=False):
            seen.setdefault(channel.topic, []).append(message.sequence)
    assert seen == {"frame": [0, 1, 2, 3, 4], "label": [0, 1, 2, 3, 4]}


def test_one_metadata_record_and_a_versioned_library(tmp_path: Path) -> None:
    from mcap.records import Header, Metadata

    from robot_daemon import __version__

    path = tmp_path / "meta.mcap"
    with BagWriter(path) as bag:  # the recorder's way: d and c learned on the way
        bag.write("frame", _messages(1)[0].payload, T0_NS)
        bag.write_meta(BagMeta(d=4))
        bag.write_meta(BagMeta(d=4, c=3))
    records = _mcap_records(path)
    metadata = [r for r in records if isinstance(r, Metadata)]
    assert [m.name for m in metadata] == ["robot_daemon"]
    assert metadata[0].metadata["d"] == "4"
    assert metadata[0].metadata["c"] == "3"
    header = next(r for r in records if isinstance(r, Header))
    assert header.library.startswith(f"robot_daemon {__version__}; mcap ")
    with BagReader(path) as bag:
        assert (bag.meta.d, bag.meta.c) == (4, 3)


def test_incomplete_metadata_is_written_at_close(tmp_path: Path) -> None:
    from mcap.records import Metadata

    path = tmp_path / "frames-only.mcap"
    with BagWriter(path) as bag:
        bag.write_meta(BagMeta(d=4))
    assert [r.name for r in _mcap_records(path) if isinstance(r, Metadata)] == ["robot_daemon"]
    with BagReader(path) as bag:
        assert (bag.meta.d, bag.meta.c) == (4, None)


def test_mcap_decodes_our_channels_with_our_decoder_factory(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    from robot_daemon.bag import MsgpackDecoderFactory

    path = tmp_path / "decoded.mcap"
    messages = _messages(4)
    status = wire.encode_status({"frames_in": 3})
    _write(path, [*messages, BagMessage("status", status, T0_NS + 10**9, None)],
           BagMeta(d=4, c=3))
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[MsgpackDecoderFactory()])
        decoded = [(channel.topic, value) for _, channel, _, value
                   in reader.iter_decoded_messages(log_time_order=True)]
    assert [type(v).__name__ for _, v in decoded] == ["Frame", "Label", "Frame", "Label", "dict"]
    frame = decoded[0][1]
    assert isinstance(frame, wire.Frame)
    np.testing.assert_array_equal(frame.x, wire.decode_frame(messages[0].payload).x)
    assert decoded[-1][1]["frames_in"] == 3


@pytest.mark.parametrize(
    ("n_bytes", "text"),
    [
        (0, "0 bytes"),
        (1023, "1,023 bytes"),
        (1024, "1.0 KiB (1,024 bytes)"),
        (12_897_345, "12.3 MiB (12,897,345 bytes)"),
        (5 * 2**30, "5.0 GiB (5,368,709,120 bytes)"),
        (3 * 2**40, "3.0 TiB (3,298,534,883,328 bytes)"),
    ],
)
def test_sizes_read_as_people_read_them_and_exactly(n_bytes: int, text: str) -> None:
    assert human_size(n_bytes) == text


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_one_bag_error_also_when_the_close_fails() -> None:
    """Closing flushes the buffer, which fails again on a full disk: once, that bare
    OSError replaced the BagError and every command that writes bags showed a traceback."""
    from robot_daemon.bag.writer import BagWriteError

    with pytest.raises(BagWriteError, match="No space left on device"):
        _write(Path("/dev/full"), _messages(2000))


def test_leading_meta_is_the_metadata_written_before_any_chunk(tmp_path: Path) -> None:
    early, late = tmp_path / "early.mcap", tmp_path / "late.mcap"
    with BagWriter(early, meta=BagMeta(d=4, c=2, extra={"source": "a"}), chunk_size=64) as bag:
        for i in range(20):
            bag.write("frame", wire.encode_frame(i, i / 10, np.zeros(4, np.float32)), i)
    with BagWriter(late, chunk_size=64) as bag:  # d and c known only at the end
        for i in range(20):
            bag.write("frame", wire.encode_frame(i, i / 10, np.zeros(4, np.float32)), i)
        bag.write_meta(BagMeta(d=4, c=2, extra={"source": "a"}))
    with BagReader(early) as reader:
        assert reader.leading_meta() == reader.meta
    with BagReader(late) as reader:
        assert reader.meta.extra == {"source": "a"}  # found by reading the whole file
        assert reader.leading_meta() is None  # not before the first chunk
