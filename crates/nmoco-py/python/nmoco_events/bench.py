"""Side-by-side speed of nmoco_events and the Python readers it replaces (not a test).

    python -m nmoco_events.bench [--quick] [--reps N]

Writes synthetic recordings with nmoco_events' own writers into a temporary folder, then times
(fastest of N runs per file, summed over files; wall clock, one thread) on the same files / events:
  - N-MNIST-like (34x34, ~4.5k events, 300 ms: ~36 overflow markers per file) and
    N-Caltech101-like (240x180, ~110k events, 300 ms) binary files:
    ``read`` and ``read_columns`` vs ``tonic.io.read_mnist_file`` (NMNIST dtype);
  - AEDAT 4 (346x260, 2M events, LZ4): ``read`` vs ``tonic.io.read_aedat4`` (the ``aedat``
    package);
  - frames (16 x 2 x 128 x 128 from 300k events): ``to_frames`` vs SpikingJelly's
    ``integrate_events_by_fixed_frames_number`` (split_by='number' and 'time') and
    ``integrate_events_by_fixed_duration``.
tonic, aedat and spikingjelly must be importable (they are not dependencies of the wheel).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import nmoco_events as ne


def best(fn, reps):
    """Fastest of ``reps`` calls (the machine may be shared: the minimum is the least disturbed
    run); the result is dropped before the next call, as a data loader drops each sample."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    return min(times)


def per_file(fn, paths, reps):
    """Sum over files of the fastest of ``reps`` decodes of each file."""
    return sum(best(lambda: fn(p), reps) for p in paths)


def synth(rng, n, w, h, duration_us):
    ev = np.empty(n, dtype=ne.EVENT_DTYPE)
    ev["x"] = rng.integers(0, w, n)
    ev["y"] = rng.integers(0, h, n)
    ev["t"] = np.sort(rng.integers(0, duration_us, n))
    ev["p"] = rng.integers(0, 2, n).astype(bool)
    return ev


def row(name, ours, theirs):
    ratio = theirs / ours if ours > 0 else float("inf")
    print(f"{name:<58} {ours * 1e3:10.3f} ms {theirs * 1e3:10.3f} ms {ratio:8.1f}x")
    return ratio


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer files and events")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)

    import tonic
    import tonic.io as tio
    from spikingjelly.datasets import utils as sju

    rng = np.random.default_rng(0)
    q = args.quick
    print(f"nmoco_events {ne.__version__}, tonic {tonic.__version__}, numpy {np.__version__}")
    print(f"{'case':<58} {'nmoco':>13} {'reference':>13} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as d:
        nmnist_dtype = tonic.datasets.NMNIST.dtype
        for label, nfiles, n, w, h in (
            ("N-MNIST-like", 20 if q else 200, 4_500, 34, 34),
            ("N-Caltech101-like", 3 if q else 20, 110_000, 240, 180),
        ):
            paths = []
            for i in range(nfiles):
                p = os.path.join(d, f"{label}-{i}.bin")
                ne.write(p, synth(rng, n, w, h, 300_000))
                paths.append(p)
            for p in paths:
                x, y = ne.read(p)[0], tio.read_mnist_file(p, dtype=nmnist_dtype)
                assert all(np.array_equal(x[k].astype(np.int64), y[k]) for k in "txyp")
            t_ours = per_file(lambda p: ne.read(p), paths, args.reps)
            t_cols = per_file(lambda p: ne.read_columns(p), paths, args.reps)
            t_tonic = per_file(lambda p: tio.read_mnist_file(p, dtype=nmnist_dtype), paths, args.reps)
            row(f"{label} decode, {nfiles} files x {n} ev: read", t_ours, t_tonic)
            row(f"{label} decode, {nfiles} files x {n} ev: read_columns", t_cols, t_tonic)

        try:
            import aedat  # noqa: F401

            n = 200_000 if q else 2_000_000
            p = os.path.join(d, "big.aedat4")
            ne.write(p, synth(rng, n, 346, 260, 10_000_000), sensor_size=(346, 260, 2))
            a, b = ne.read(p)[0], tio.read_aedat4(p)
            assert all(np.array_equal(a[k].astype(np.int64), b[k].astype(np.int64)) for k in "txyp")
            del a, b
            t_ours = best(lambda: ne.read(p), args.reps)
            t_ref = best(lambda: tio.read_aedat4(p), args.reps)
            row(f"AEDAT 4 (LZ4) decode, {n} ev: read vs aedat", t_ours, t_ref)
        except ImportError:
            print("AEDAT 4: the aedat package is not installed; skipped")

        n = 30_000 if q else 300_000
        ev = synth(rng, n, 128, 128, 1_000_000)
        cols = {"t": ev["t"].copy(), "x": ev["x"].copy(), "y": ev["y"].copy(),
                "p": ev["p"].astype(np.int64)}
        for split in ("number", "time"):
            a = ne.to_frames(cols, 16, split, sensor_size=(128, 128))
            b = sju.integrate_events_by_fixed_frames_number(cols, split, 16, 128, 128)
            assert a.tobytes() == b.astype(np.float32).tobytes()
            t_ours = best(lambda: ne.to_frames(cols, 16, split, sensor_size=(128, 128)), args.reps)
            t_sj = best(
                lambda: sju.integrate_events_by_fixed_frames_number(cols, split, 16, 128, 128),
                args.reps,
            )
            row(f"frames 16x2x128x128 from {n} ev, split_by={split!r}", t_ours, t_sj)
        d_us = 62_500  # 16 frames over the 1 s recording
        a = ne.to_frames(cols, split_by="duration", duration=d_us, sensor_size=(128, 128))
        b = sju.integrate_events_by_fixed_duration(cols, d_us, 128, 128)
        assert a.tobytes() == b.astype(np.float32).tobytes()
        t_ours = best(
            lambda: ne.to_frames(cols, split_by="duration", duration=d_us, sensor_size=(128, 128)),
            args.reps,
        )
        t_sj = best(lambda: sju.integrate_events_by_fixed_duration(cols, d_us, 128, 128), args.reps)
        row(f"frames {a.shape[0]}x2x128x128 from {n} ev, fixed duration {d_us} us", t_ours, t_sj)


if __name__ == "__main__":
    main()
