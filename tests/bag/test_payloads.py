"""read_payloads: what BagReader.messages gives, payload for payload, cut or whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot_daemon import sim
from robot_daemon.bag import BagReader
from robot_daemon.bag.payloads import read_payloads
from robot_daemon.errors import BagError

TOPICS = ["frame", "label"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("payloads") / "run.mcap"
    sim.write_bag(path, sim.simulate(12.0, seed=3))
    return path


def _reader(path: Path) -> tuple[dict[str, list[bytes]], bool, object]:
    with BagReader(path) as reader:
        found: dict[str, list[bytes]] = {t: [] for t in TOPICS}
        for message in reader.messages(TOPICS):
            found[message.topic].append(message.payload)
        return found, reader.damaged, reader.meta


def test_a_whole_bag_gives_every_payload_and_the_meta(bag: Path) -> None:
    fast = read_payloads(bag, TOPICS)
    expected, damaged, meta = _reader(bag)
    assert fast.by_topic == expected
    assert len(fast.by_topic["label"]) == 600
    assert fast.warning is None
    assert not damaged
    assert fast.meta == meta


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.61, 0.97, 0.999])
def test_a_cut_bag_gives_what_bag_reader_gives(bag: Path, tmp_path: Path, fraction: float) -> None:
    data = bag.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * fraction)])
    fast = read_payloads(cut, TOPICS)
    expected, damaged, _ = _reader(cut)
    assert fast.by_topic == expected
    assert damaged
    assert fast.warning is not None
    assert "is damaged at byte" in fast.warning


def test_a_flipped_byte_in_a_chunk_ends_the_bag_there(bag: Path, tmp_path: Path) -> None:
    data = bytearray(bag.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.mcap"
    bad.write_bytes(bytes(data))
    fast = read_payloads(bad, TOPICS)
    expected, damaged, _ = _reader(bad)
    assert fast.by_topic == expected
    assert damaged == (fast.warning is not None)


def test_a_file_that_is_no_bag_is_refused_as_bag_reader_refuses_it(tmp_path: Path) -> None:
    other = tmp_path / "notes.mcap"
    other.write_text("hello")
    with pytest.raises(BagError, match="is not an MCAP bag"):
        read_payloads(other, TOPICS)
