"""Decoding against tonic's and SpikingJelly's readers: same events, byte for byte."""

import io

import numpy as np
import pytest

import nmoco_events as ne
from conftest import (
    AEDAT31_HEADER,
    aedat2_bytes,
    aedat31_packet,
    aedat31_pol,
    nbin_record,
    random_events,
)

tonic_io = pytest.importorskip("tonic.io")
TONIC_NMNIST_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])


def sj_utils():
    from spikingjelly.datasets import utils

    return utils


def assert_same_events(ours, theirs):
    """Field by field, as the int64 values (tonic/SpikingJelly use other integer dtypes)."""
    assert len(ours) == len(theirs)
    for name in ("t", "x", "y", "p"):
        a = np.asarray(ours[name]).astype(np.int64)
        b = np.asarray(theirs[name]).astype(np.int64)
        assert np.array_equal(a, b), name


def test_structured_array_is_tonics_layout(tmp_path, rng):
    ev = random_events(rng, 100, 34, 34)
    ne.write(tmp_path / "a.bin", ev)
    got, info = ne.read(tmp_path / "a.bin")
    assert got.dtype == tonic_io.events_struct
    assert got.dtype.names == ("x", "y", "t", "p") and got.dtype["p"] == np.bool_
    assert got.flags.writeable and got.flags.c_contiguous
    assert got.tobytes() == ev.tobytes()
    assert info == {"format": "nbin", "sensor_size": None, "skipped": {}, "n_events": 100}


@pytest.mark.parametrize("n", [0, 1, 4_000, 50_000])
def test_nbin_written_by_the_crate_matches_tonic(tmp_path, rng, n):
    # t up to 2^25 us makes the writer insert overflow markers (y == 240) that tonic's reader
    # turns into +8192 us each.
    ev = random_events(rng, n, 240, 180, t_max=1 << 25)
    path = tmp_path / "s.bin"
    ne.write(path, ev)
    ours, info = ne.read(path)
    theirs = tonic_io.read_mnist_file(str(path), dtype=TONIC_NMNIST_DTYPE)
    assert_same_events(ours, theirs)
    assert ours.tobytes() == ev.tobytes()
    if n:
        assert info["skipped"].get("overflow", 0) > 0


def test_nbin_hand_built_fixture_matches_tonic_and_spikingjelly(tmp_path):
    raw = (
        nbin_record(3, 4, 1, 0x012345)
        + bytes([9, 240, 0, 0, 0])  # overflow marker
        + nbin_record(255, 7, 0, 10)
        + bytes([0, 240, 0x80, 0, 1])  # another marker
        + nbin_record(0, 0, 1, 0x7FFFFF)
    )
    path = tmp_path / "fixture.bin"
    path.write_bytes(raw)
    ours, info = ne.read(path)
    assert_same_events(ours, tonic_io.read_mnist_file(str(path), dtype=TONIC_NMNIST_DTYPE))
    assert ours["t"].tolist() == [0x012345, 10 + 8192, 0x7FFFFF + 2 * 8192]
    assert info["skipped"] == {"overflow": 2}
    # SpikingJelly's load_ATIS_bin does no overflow handling: markers are events.
    cols, _ = ne.read_columns(path, nbin_overflow="ignore")
    sj = sj_utils().load_ATIS_bin(str(path))
    assert_same_events(cols, sj)
    # tonic's stream variant.
    streamed = tonic_io.read_mnist_file(io.BytesIO(raw), dtype=TONIC_NMNIST_DTYPE, is_stream=True)
    assert_same_events(ne.decode_bytes(raw, "nbin")[0], streamed)


def test_read_columns_are_separate_writable_arrays(tmp_path, rng):
    ev = random_events(rng, 1000, 34, 34)
    ne.write(tmp_path / "c.bin", ev)
    cols, info = ne.read_columns(tmp_path / "c.bin")
    assert [cols[k].dtype for k in "txyp"] == [np.int64, np.int16, np.int16, np.bool_]
    for k in "txyp":
        assert cols[k].flags.c_contiguous and cols[k].flags.writeable
        assert np.array_equal(cols[k], ev[k])
    cols["x"][0] = 7  # owned, writable memory
    assert info["n_events"] == 1000


def test_aedat4_written_by_the_crate_matches_tonic_read_aedat4(tmp_path, rng):
    pytest.importorskip("aedat")
    ev = random_events(rng, 30_000, 346, 260)
    for compression in ("lz4", "zstd", "none"):
        path = tmp_path / f"r_{compression}.aedat4"
        ne.write(path, ev, sensor_size=(346, 260, 2), compression=compression)
        ours, info = ne.read(path)
        theirs = tonic_io.read_aedat4(str(path))
        assert_same_events(ours, theirs)
        assert ours.tobytes() == ev.tobytes()
        assert info["sensor_size"] == (346, 260, 2) and info["format"] == "aedat4"


def test_aedat4_negative_coordinates_round_trip_as_int16(tmp_path):
    ev = np.zeros(3, dtype=ne.EVENT_DTYPE)
    ev["x"] = [-5, 0, 32767]
    ev["y"] = [-32768, 1, 2]
    ev["t"] = [1, 2, 3]
    ne.write(tmp_path / "n.aedat4", ev, sensor_size=(10, 10))
    assert ne.read(tmp_path / "n.aedat4")[0].tobytes() == ev.tobytes()


def test_aedat31_hand_built_fixture_matches_spikingjelly(tmp_path):
    b = AEDAT31_HEADER
    # A special packet (type 0) that would decode as events if misread.
    b += aedat31_packet(0, 8, 4, 0, aedat31_pol(3, 5, True, True, 5), 1)
    # Polarity packet with overflow 1: valid ON, invalid ON, valid OFF at the 15-bit limits.
    payload = (
        aedat31_pol(17, 33, True, True, 100)
        + aedat31_pol(1, 1, True, False, 101)
        + aedat31_pol(32767, 0, False, True, 0x7FFFFFFF)
    )
    b += aedat31_packet(1, 8, 4, 1, payload, 3)
    b += aedat31_packet(1, 8, 4, 0, aedat31_pol(2, 3, False, True, 77), 1)
    path = tmp_path / "fixture.aedat"
    path.write_bytes(b)
    ours, info = ne.read(path)
    assert ours["t"].tolist() == [(1 << 31) | 100, (1 << 31) | 0x7FFFFFFF, 77]
    assert info["skipped"] == {"invalid": 1, "packet:special": 1}
    # SpikingJelly (DVS128 Gesture) keeps events whose validity bit is 0.
    cols, _ = ne.read_columns(path, keep_invalid=True)
    assert_same_events(cols, sj_utils().load_aedat_v3(str(path)))


def test_aedat31_written_by_the_crate_and_the_sample_match_spikingjelly(tmp_path, rng):
    ev = random_events(rng, 5_000, 128, 128, t_max=1 << 33)
    ne.write(tmp_path / "g.aedat", ev, "aedat3")
    for path in (tmp_path / "g.aedat", SAMPLE):
        cols, info = ne.read_columns(path, keep_invalid=True)
        assert info["format"] == "aedat3"
        assert_same_events(cols, sj_utils().load_aedat_v3(str(path)))
    assert ne.read(tmp_path / "g.aedat")[0].tobytes() == ev.tobytes()


SAMPLE = __import__("pathlib").Path(__file__).resolve().parents[3] / "datasets/sample/sample.aedat"


def test_aedat2_spikingjelly_cifar10dvs_orientation(tmp_path, rng):
    from spikingjelly.datasets.cifar10_dvs import _load_origin_data

    words = [
        ((5 << 8) | (9 << 1) | 1, 0x80000001),
        (127 << 8, 7),
        (0x8000 | (3 << 8), 8),  # special word: SpikingJelly keeps it
        ((100 << 8) | (2 << 1), 9),
    ]
    path = tmp_path / "cifar.aedat"
    path.write_bytes(aedat2_bytes(words, chip="ch.unizh.ini.jaer.chip.retina.DVS128"))
    cols, info = ne.read_columns(path, orientation="spikingjelly", keep_special=True)
    assert_same_events(cols, _load_origin_data(str(path)))
    assert info["sensor_size"] == (128, 128, 2)
    # Raw fields by default, the special word skipped and counted.
    raw, info = ne.read(path)
    assert raw["x"].tolist() == [9, 0, 2] and raw["p"].tolist() == [True, False, False]
    assert info["skipped"] == {"special": 1}
    # Files written by the crate.
    ev = random_events(rng, 3_000, 128, 128, t_max=1 << 32)
    ne.write(tmp_path / "w.aedat", ev, "aedat2")
    cols, _ = ne.read_columns(tmp_path / "w.aedat", orientation="spikingjelly")
    assert_same_events(cols, _load_origin_data(str(tmp_path / "w.aedat")))


def test_iter_chunks_concatenate_to_read(tmp_path, rng):
    ev = random_events(rng, 10_007, 346, 260)
    for fmt, name in (("aedat4", "a.aedat4"), ("nbin", "a.bin"), ("aedat3", "a.aedat")):
        if fmt != "aedat4":
            ev["x"] %= 128
            ev["y"] %= 128
        ne.write(tmp_path / name, ev, fmt)
        whole, info = ne.read(tmp_path / name)
        it = ne.iter_chunks(tmp_path / name, 1000)
        chunks = list(it)
        assert all(0 < len(c) <= 1000 for c in chunks)
        assert np.concatenate(chunks).tobytes() == whole.tobytes()
        assert it.format == fmt
        assert it.sensor_size == info["sensor_size"] and it.skipped == info["skipped"]
        cols = list(ne.iter_chunks(tmp_path / name, 4096, columns=True))
        assert np.array_equal(np.concatenate([c["t"] for c in cols]), whole["t"])


def test_tonic_reader_drop_in_for_a_tonic_dataset(tmp_path, rng, monkeypatch):
    import tonic
    import tonic.datasets.nmnist as nmnist_mod

    ev = random_events(rng, 2_000, 34, 34, t_max=300_000)
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.bin"
        ne.write(p, ev[i * 500 : (i + 1) * 500 + 100])
        paths.append(str(p))
    # An NMNIST dataset over our files (the constructor would download the real one).
    ds = object.__new__(tonic.datasets.NMNIST)
    ds.data, ds.targets = paths, [0, 1, 2]
    ds.first_saccade_only = ds.stabilize = False
    ds.transform = ds.target_transform = ds.transforms = None
    expected = [ds[i][0] for i in range(3)]  # tonic's own reader
    monkeypatch.setattr(nmnist_mod, "read_mnist_file", ne.tonic_reader("nbin"))
    for i in range(3):
        got, target = ds[i]
        assert got.dtype == expected[i].dtype and target == i
        assert got.tobytes() == expected[i].tobytes()
    # And tonic's transforms take our structured array as is.
    frames = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_event_bins=4)(ne.read(paths[0])[0])
    assert frames.shape == (4, 2, 34, 34) and frames.sum() == 600


def test_threads_decode_and_integrate_concurrently(tmp_path, rng):
    from concurrent.futures import ThreadPoolExecutor

    paths = []
    for i in range(8):
        ev = random_events(rng, 20_000, 128, 128)
        p = tmp_path / f"{i}.aedat4"
        ne.write(p, ev)
        paths.append((p, ev))

    def work(item):
        p, ev = item
        got, _ = ne.read(p)
        frames = ne.to_frames(got, 8, sensor_size=(128, 128))
        return got.tobytes() == ev.tobytes() and frames.sum() == len(ev)

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, paths * 3))
    # One iterator advanced from several threads: each chunk is handed out once.
    it = ne.iter_chunks(paths[0][0], 1000)

    def drain(_):
        n = 0
        while True:
            try:
                chunk = next(it)
            except StopIteration:
                return n
            except RuntimeError:  # another thread holds the iterator right now
                continue
            n += len(chunk)

    with ThreadPoolExecutor(3) as pool:
        assert sum(pool.map(drain, range(3))) == 20_000
