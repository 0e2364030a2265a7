"""The capture directory: the hard bound under a flood, rotation with the oldest deleted
first, the bags of earlier runs, and the bag a killed run left open."""

from __future__ import annotations

import shutil
from pathlib import Path

from robot_daemon import wire
from robot_daemon.bag import BagMeta, BagReader
from robot_daemon.capture.frames import messages
from robot_daemon.capture.store import CaptureStore, bag_bytes_for, sort_key

from .conftest import C, D, captured, on_disk

META = BagMeta(d=D, c=C)
MB = 1_000_000


def _seqs(path: Path) -> list[int]:
    with BagReader(path) as bag:
        return [wire.decode_frame(m.payload).seq for m in bag.messages(["frame"])]


def test_a_flood_never_passes_the_bound_and_deletes_the_oldest_first(tmp_path: Path) -> None:
    store = CaptureStore(tmp_path, MB, META)
    store.scan()
    highest = 0
    n = 6000  # ~7 bags of 256 KiB: three rotations past the bound
    for i, frame in enumerate(captured(n)):
        store.write(messages(frame), frame.recv_ns, i)
        if i % 20 == 0:
            highest = max(highest, on_disk(tmp_path))
    store.close()
    bags = sorted(tmp_path.iterdir(), key=sort_key)
    assert max(highest, on_disk(tmp_path)) <= MB
    assert store.bag_bytes == bag_bytes_for(MB) == 256 * 1024
    assert all(p.stat().st_size <= store.bag_bytes for p in bags)
    # the reserve for the index is a bound, not a waste: bags fill most of their size
    assert store.largest_bag > 0.7 * store.bag_bytes
    assert 3 <= len(bags) <= 4  # at the end, the open bag's room holds the last bag
    assert all(p.name.startswith("capture-") and p.suffix == ".mcap" for p in bags)
    assert [sort_key(p)[0] for p in bags][-1] >= 7
    seqs = [s for p in bags for s in _seqs(p)]  # whole bags gone, from the oldest
    assert seqs == list(range(seqs[0], n))
    assert seqs[0] > 0


def test_the_bags_of_earlier_runs_count_and_the_oldest_go(tmp_path: Path) -> None:
    for k in range(5):  # 5 x 300 kB from earlier runs: over a 1 MB bound
        (tmp_path / f"capture-20261201T00000{k}Z-{k + 1:04d}.mcap").write_bytes(b"x" * 300_000)
    (tmp_path / "notes.txt").write_text("not a capture bag: never counted, never deleted")
    store = CaptureStore(tmp_path, MB, META)
    store.scan()
    # room for one more bag of 262,144 bytes: 737,856 left for the old ones, so two stay
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "capture-20261201T000003Z-0004.mcap", "capture-20261201T000004Z-0005.mcap",
        "notes.txt"]
    assert (store.bytes_on_disk, store.bag_count) == (600_000, 2)
    frame = captured(1)[0]
    store.write(messages(frame), frame.recv_ns, 0)
    store.close()
    newest = sorted(tmp_path.glob("capture-*.mcap"), key=sort_key)[-1]
    assert sort_key(newest)[0] == 6  # numbered after the earlier runs' bags
    assert on_disk(tmp_path) - len("not a capture bag: never counted, never deleted") <= MB


def test_a_clock_set_back_does_not_make_the_newest_bags_the_oldest(tmp_path: Path) -> None:
    # Bag 2 was opened after the clock went back a day: by name's time it looks oldest.
    for name in ("capture-20261208T010000Z-0001.mcap", "capture-20261207T010000Z-0002.mcap",
                 "capture-20261207T020000Z-0003.mcap", "capture-20261207T030000Z-0004.mcap"):
        (tmp_path / name).write_bytes(b"x" * 300_000)
    store = CaptureStore(tmp_path, MB, META)
    store.scan()  # room for a new bag: the two opened first go
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "capture-20261207T020000Z-0003.mcap", "capture-20261207T030000Z-0004.mcap"]


def test_the_open_bag_is_hidden_readable_and_kept_after_a_kill(tmp_path: Path) -> None:
    store = CaptureStore(tmp_path / "a", MB, META)
    store.scan()
    for i, frame in enumerate(captured(50)):
        store.write(messages(frame), frame.recv_ns, i)
    store.flush()  # what the writer does every flush_s
    (partial,) = (tmp_path / "a").iterdir()
    assert partial.name.startswith(".capture-")
    assert partial.name.endswith(".mcap.partial")
    with BagReader(partial) as bag:  # bag info on the open bag: no crash, the chunks so far
        info = bag.info()
    assert info.topics["frame"].count == 50
    assert not info.complete
    # the file as a kill -9 would leave it: copied before the store finishes it
    killed = tmp_path / "b"
    killed.mkdir()
    shutil.copy(partial, killed / partial.name)
    store.close()
    again = CaptureStore(killed, MB, META)
    again.scan()
    (kept,) = killed.iterdir()
    assert kept.name == partial.name[1:].removesuffix(".partial")
    assert _seqs(kept) == list(range(50))  # a cut bag: read to its last chunk, counted
    assert again.bag_count == 1
    assert again.bytes_on_disk == kept.stat().st_size


def test_a_directory_or_a_symlink_named_like_a_bag_is_not_a_bag(tmp_path: Path) -> None:
    """Someone else's entries named like bags are neither counted nor deleted: a directory
    named ``capture-....mcap`` (the oldest by its name) failed the unlink of every
    rotation, and the capture stopped for good ('Is a directory', every retry)."""
    directory = tmp_path / "capture"
    directory.mkdir()
    (directory / "capture-20000101T000000Z-0001.mcap").mkdir()
    (directory / "capture-20000101T000000Z-0002.mcap").symlink_to("/dev/zero")
    (directory / ".capture-20000101T000000Z-0003.mcap.partial").symlink_to("/dev/zero")
    store = CaptureStore(directory, MB, META)
    store.scan()
    assert store.bag_count == 0
    for i, frame in enumerate(captured(6000)):  # past the bound: rotations delete bags
        store.write(messages(frame), frame.recv_ns, i)
    store.close()
    assert (directory / "capture-20000101T000000Z-0001.mcap").is_dir()
    assert (directory / "capture-20000101T000000Z-0002.mcap").is_symlink()
    assert (directory / ".capture-20000101T000000Z-0003.mcap.partial").is_symlink()
    assert 3 <= store.bag_count <= 4
    assert store.bytes_on_disk <= MB


def test_a_bag_deleted_while_it_is_written_is_lost_not_a_failing_disk(tmp_path: Path) -> None:
    """Another process deletes the open ``.partial``: closing it lost its frames, but the
    disk works: no exception for the writer's back-off (an ERROR and a second of frames
    dropped at each rotation when a cleaner ran beside the daemon)."""
    store = CaptureStore(tmp_path, MB, META)
    store.scan()
    frames = captured(20)
    for i, frame in enumerate(frames[:10]):
        store.write(messages(frame), frame.recv_ns, i)
    (partial,) = tmp_path.iterdir()
    partial.unlink()
    store.close()  # no exception
    assert store.bag_count == 0
    for i, frame in enumerate(frames[10:]):
        store.write(messages(frame), frame.recv_ns, i)
    store.close()
    (kept,) = tmp_path.iterdir()
    assert _seqs(kept) == list(range(10, 20))
    assert store.bytes_on_disk == kept.stat().st_size
