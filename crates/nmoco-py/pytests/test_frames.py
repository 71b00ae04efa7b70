"""Frames against SpikingJelly's numpy integration functions: same values, byte for byte."""

import numpy as np
import pytest

import nmoco_events as ne
from conftest import random_events

sj = pytest.importorskip("spikingjelly.datasets.utils")


def sj_dict(ev):
    return {"t": ev["t"], "x": ev["x"], "y": ev["y"], "p": ev["p"].astype(np.int64)}


def assert_bytes_equal(ours, theirs):
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape
    assert ours.tobytes() == theirs.astype(np.float32).tobytes()


@pytest.mark.parametrize("n,T", [(20_000, 16), (1_001, 10), (7, 16), (500, 1)])
def test_split_by_number_equals_spikingjelly(rng, n, T):
    W, H = 34, 26
    ev = random_events(rng, n, W, H, sort=False)  # file order, never re-sorted
    ours = ne.to_frames(ev, T, "number", sensor_size=(W, H, 2))
    theirs = sj.integrate_events_by_fixed_frames_number(sj_dict(ev), "number", T, H, W)
    assert_bytes_equal(ours, theirs)
    assert ours.sum() == n


@pytest.mark.parametrize("T", [1, 5, 16])
def test_split_by_time_equals_spikingjelly_on_sorted_input(rng, T):
    W, H = 128, 128
    ev = random_events(rng, 30_000, W, H, t_max=1_000_000)
    ours = ne.to_frames(ev, T, "time", sensor_size=(W, H, 2))
    theirs = sj.integrate_events_by_fixed_frames_number(sj_dict(ev), "time", T, H, W)
    assert_bytes_equal(ours, theirs)


@pytest.mark.parametrize("duration", [10_000, 33_333, 250_000])
def test_split_by_duration_equals_spikingjelly(rng, duration):
    W, H = 64, 48
    ev = random_events(rng, 20_000, W, H, t_max=1_000_000)
    ev["t"] += 5_000  # SpikingJelly rebases on the minimum
    ours = ne.to_frames(ev, split_by="duration", duration=duration, sensor_size=(W, H))
    theirs = sj.integrate_events_by_fixed_duration(sj_dict(ev), duration, H, W)
    assert_bytes_equal(ours, theirs)


def test_duration_with_exact_multiple_span_keeps_last_events_like_spikingjelly():
    ev = {"t": np.array([0, 5, 10, 20]), "x": np.array([0, 1, 2, 3]), "y": np.zeros(4, int),
          "p": np.array([1, 0, 1, 1])}
    ours = ne.to_frames(ev, split_by="duration", duration=10, sensor_size=(4, 1))
    theirs = sj.integrate_events_by_fixed_duration(ev, 10, 1, 4)
    assert_bytes_equal(ours, theirs)
    assert ours.shape[0] == 2 and ours[1].sum() == 2


def test_dict_and_structured_inputs_agree_and_nonzero_p_is_on(rng):
    ev = random_events(rng, 1_000, 16, 16)
    d = {"t": ev["t"], "x": ev["x"].astype(np.uint16), "y": ev["y"].astype(np.int32),
         "p": np.where(ev["p"], -1, 0)}
    assert ne.to_frames(ev, 4, sensor_size=(16, 16)).tobytes() == ne.to_frames(
        d, 4, sensor_size=(16, 16)
    ).tobytes()


def test_layout_matches_tonic_toframe_for_one_bin(rng):
    tonic_tf = pytest.importorskip("tonic.transforms")
    ev = random_events(rng, 5_000, 34, 34)
    ours = ne.to_frames(ev, 1, sensor_size=(34, 34, 2))
    theirs = tonic_tf.ToFrame(sensor_size=(34, 34, 2), n_event_bins=1)(ev)
    assert ours.shape == theirs.shape  # [T, 2, H, W]
    assert np.array_equal(ours, theirs.astype(np.float32))


def test_resize_options(rng):
    W, H = 240, 180
    ev = random_events(rng, 10_000, W, H)
    full = ne.to_frames(ev, 4, sensor_size=(W, H))
    pooled = ne.to_frames(ev, 4, sensor_size=(W, H), size=(90, 120), resize="pool")
    # Integer factor 2: pool is 2x2 sum pooling of the full-resolution counts.
    expect = full.reshape(4, 2, 90, 2, 120, 2).sum(axis=(3, 5))
    assert np.array_equal(pooled, expect)
    mapped = ne.to_frames(ev, 4, sensor_size=(W, H), size=(90, 120), resize="events")
    assert np.array_equal(mapped, expect)
    cropped = ne.to_frames(ev, 4, sensor_size=(W, H), size=(100, 100), resize="none")
    assert np.array_equal(cropped, full[:, :, :100, :100])
    assert ne.to_frames(ev, 4, sensor_size=(W, H), binarize=True).max() == 1
    assert np.allclose(ne.to_frames(ev, 4, sensor_size=(W, H), log_scale=True), np.log1p(full))


def test_out_of_sensor_events_error_or_drop():
    ev = {"t": np.arange(3), "x": np.array([0, 5, -1]), "y": np.array([0, 0, 0]),
          "p": np.array([1, 1, 0])}
    with pytest.raises(ValueError):
        ne.to_frames(ev, 1, sensor_size=(4, 4))
    f = ne.to_frames(ev, 1, sensor_size=(4, 4), drop_out_of_bounds=True)
    assert f.sum() == 1


def test_duration_on_unsorted_input_assigns_each_event_by_its_own_time(rng):
    W, H, d = 8, 6, 1000
    ev = random_events(rng, 5_000, W, H, t_max=10_000, sort=False)
    ev["t"][-1] = 9_999  # the last event (in file order) sets the span, as in SpikingJelly
    ours = ne.to_frames(ev, split_by="duration", duration=d, sensor_size=(W, H))
    t = ev["t"].astype(np.int64)
    T = max(1, -(-(int(t[-1]) - int(t.min())) // d))
    frame = np.minimum((t - t.min()) // d, T - 1)
    pos = ((frame * 2 + ev["p"].astype(np.int64)) * H + ev["y"]) * W + ev["x"]
    expect = np.bincount(pos, minlength=T * 2 * H * W).reshape(T, 2, H, W).astype(np.float32)
    assert ours.tobytes() == expect.tobytes()


# split_by='number' on the sensor's own canvas without post-processing takes a direct path
# (counts from the columns in their own dtypes, 8-bit counters for planes up to 2^17 pixels);
# `clip=huge` changes no value but takes the general path: the direct path's reference twin.
@pytest.mark.parametrize("xy_dtype", [np.int16, np.uint16, np.int32, np.int64, np.uint8, np.uint64])
@pytest.mark.parametrize("p_dtype", [np.bool_, np.int8, np.int64, np.uint32])
@pytest.mark.parametrize("W,H,T", [(128, 128, 16), (400, 300, 3), (7, 5, 40)])
def test_direct_number_path_equals_general_path(rng, xy_dtype, p_dtype, W, H, T):
    n = 5_000
    cols = {
        "t": rng.integers(0, 10**6, n),
        "x": rng.integers(0, min(W, 256), n).astype(xy_dtype),
        "y": rng.integers(0, min(H, 256), n).astype(xy_dtype),
        "p": rng.integers(-1, 2, n).astype(p_dtype) if p_dtype != np.bool_
        else rng.integers(0, 2, n).astype(bool),
    }
    # A hot pixel: 1 500 events on one pixel and polarity (the 8-bit counters wrap 5 times).
    cols["x"][1000:2500] = 3
    cols["y"][1000:2500] = 2
    cols["p"][1000:2500] = 1
    direct = ne.to_frames(cols, T, "number", sensor_size=(W, H))
    general = ne.to_frames(cols, T, "number", sensor_size=(W, H), clip=1e30)
    assert direct.tobytes() == general.tobytes()
    assert direct.sum() == n


@pytest.mark.parametrize("n", [0, 1, 5, 17, 255, 256, 257, 513, 4_095, 4_096, 4_097, 40_000])
def test_direct_number_path_with_empty_and_partial_frames(rng, n):
    # Fewer events than frames (empty frames before, between and after), and event counts
    # around the direct path's block size (256: single blocks, and frames of one block, 4096 =
    # 16 · 256), one polarity and one pixel hot.
    W, H, T = 34, 34, 16
    cols = {
        "t": np.arange(n),
        "x": rng.integers(0, W, n).astype(np.int16),
        "y": rng.integers(0, H, n).astype(np.int16),
        "p": rng.integers(0, 2, n).astype(np.int64),
    }
    cols["x"][: n // 2] = 5
    cols["p"][: n // 2] = 0
    direct = ne.to_frames(cols, T, "number", sensor_size=(W, H))
    general = ne.to_frames(cols, T, "number", sensor_size=(W, H), clip=1e30)
    assert direct.shape == (T, 2, H, W)
    assert direct.tobytes() == general.tobytes()
    assert direct.sum() == n


def test_direct_number_path_hands_off_what_it_does_not_take(rng):
    W, H = 16, 16
    n = 3_000
    ev = {"t": np.arange(n), "x": rng.integers(0, W, n).astype(np.int16),
          "y": rng.integers(0, H, n).astype(np.int32), "p": rng.integers(0, 2, n)}
    # x and y of different dtypes: general path, same counts as SpikingJelly.
    theirs = sj.integrate_events_by_fixed_frames_number(ev, "number", 4, H, W)
    assert_bytes_equal(ne.to_frames(ev, 4, sensor_size=(W, H)), theirs)
    # Events off the sensor (negative, or >= W / H) in a late block: the general path's
    # error, or its dropping.
    for col, v in (("x", -1), ("y", H), ("x", W)):
        bad = {k: a.copy() for k, a in ev.items()}
        bad[col][2_900] = v
        with pytest.raises(ValueError):
            ne.to_frames(bad, 4, sensor_size=(W, H))
        dropped = ne.to_frames(bad, 4, sensor_size=(W, H), drop_out_of_bounds=True)
        assert dropped.sum() == n - 1
    # Non-contiguous columns are copied by the wrapper and still agree.
    ev2 = {k: np.repeat(a, 2)[::2] for k, a in ev.items()}
    assert_bytes_equal(ne.to_frames(ev2, 4, sensor_size=(W, H)), theirs)


# 'time' and fixed 'duration' take the same direct path when the timestamps are sorted (each
# frame is then a contiguous range of events) and not uint64; `clip=huge` again forces the
# general path, their reference twin.
def _split_kwargs(split):
    if split == "time":
        return {"n_frames": 16, "split_by": "time"}
    return {"split_by": "duration", "duration": 20_000}


@pytest.mark.parametrize("split", ["time", "duration"])
@pytest.mark.parametrize("n", [1, 5, 255, 256, 257, 4_097, 40_000])
def test_direct_time_and_duration_paths_equal_general_path(rng, split, n):
    W, H = 34, 34
    t = np.sort(rng.integers(0, 300_000, n))
    t = np.where(t >= 100_000, t + 100_000, t)  # no events in 100-200 ms: empty frames
    cols = {
        "t": t,
        "x": rng.integers(0, W, n).astype(np.int16),
        "y": rng.integers(0, H, n).astype(np.int16),
        "p": rng.integers(0, 2, n).astype(np.int64),
    }
    cols["x"][: n // 2] = 5  # one pixel hot: the 8-bit counters wrap
    cols["y"][: n // 2] = 7
    cols["p"][: n // 2] = 1
    kw = _split_kwargs(split)
    direct = ne.to_frames(cols, sensor_size=(W, H), **kw)
    general = ne.to_frames(cols, sensor_size=(W, H), clip=1e30, **kw)
    assert direct.shape == general.shape
    assert direct.tobytes() == general.tobytes()
    assert direct.sum() == n
    if split == "duration" and t[-1] > t[0]:  # SpikingJelly makes no frame of a zero span
        assert_bytes_equal(direct, sj.integrate_events_by_fixed_duration(cols, 20_000, H, W))


@pytest.mark.parametrize("split", ["time", "duration"])
def test_direct_time_split_with_other_timestamp_dtypes_and_unsorted_input(rng, split):
    # Sorted timestamps of other dtypes (int32, uint32, big-endian uint32 as in SpikingJelly's
    # CIFAR10-DVS events: converted; uint64: the general path) give the int64 frames; unsorted
    # ones take the general path.
    W, H, n = 16, 12, 3_000
    base = random_events(rng, n, W, H, t_max=200_000)
    kw = _split_kwargs(split)
    want = ne.to_frames(base, sensor_size=(W, H), **kw)
    for t_dtype in (np.int32, np.uint32, ">u4", np.uint64):
        ev = {"t": base["t"].astype(t_dtype), "x": base["x"], "y": base["y"], "p": base["p"]}
        assert ne.to_frames(ev, sensor_size=(W, H), **kw).tobytes() == want.tobytes()
        general = ne.to_frames(ev, sensor_size=(W, H), clip=1e30, **kw)
        assert general.tobytes() == want.tobytes()
    small = {"t": (base["t"] // 1000).astype(np.uint8), "x": base["x"], "y": base["y"],
             "p": base["p"]}
    assert (ne.to_frames(small, sensor_size=(W, H), **kw).tobytes()
            == ne.to_frames(small, sensor_size=(W, H), clip=1e30, **kw).tobytes())
    shuffled = base.copy()
    swap = rng.permutation(n)[:2]
    shuffled[swap] = shuffled[swap[::-1]]
    direct_unsorted = ne.to_frames(shuffled, sensor_size=(W, H), **kw)
    general_unsorted = ne.to_frames(shuffled, sensor_size=(W, H), clip=1e30, **kw)
    assert direct_unsorted.tobytes() == general_unsorted.tobytes()
    # The general path's errors: no events for a duration split, too many frames, an event
    # off the sensor.
    empty = {k: base[k][:0] for k in "txyp"}
    if split == "duration":
        with pytest.raises(ValueError, match="at least one event"):
            ne.to_frames(empty, sensor_size=(W, H), **kw)
        long = base.copy()
        long["t"][-1] = 5_000_000
        with pytest.raises(ValueError, match=r"would make \d+ frames"):
            ne.to_frames(long, sensor_size=(W, H), split_by="duration", duration=1)
        with pytest.raises(ValueError, match="positive"):
            ne.to_frames(base, sensor_size=(W, H), split_by="duration", duration=0)
    else:
        assert ne.to_frames(empty, sensor_size=(W, H), **kw).sum() == 0
    bad = base.copy()
    bad["x"][n // 2] = W
    with pytest.raises(ValueError):
        ne.to_frames(bad, sensor_size=(W, H), **kw)
