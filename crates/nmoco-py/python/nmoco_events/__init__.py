"""Fast, byte-exact event-camera file decoders and SpikingJelly-exact frame integration.

Python bindings of the nmoco crates ``nmoco-events`` (decoders and writers for N-MNIST /
N-Caltech101 binary, AEDAT 2.0, 3.1 and 4.0) and ``nmoco-frames`` (event-to-frame integration).

Reading
    ``read(path, format=None, **options)`` -> ``(events, info)``. ``events`` is a writable numpy
    structured array with tonic's field names and dtypes (``x`` int16, ``y`` int16, ``t`` int64
    in microseconds as the file stores it, ``p`` bool = ON), so it drops into tonic transforms;
    ``info`` is a dict with ``format``, ``sensor_size`` (tonic's ``(W, H, 2)``, or None when the
    file does not state it), ``skipped`` (records or packets skipped, by kind) and ``n_events``.

    ``read_columns`` returns the four columns as separate arrays (``t`` int64, ``x``/``y`` int16,
    ``p`` bool) that own the decoder's buffers, with no interleaving copy: the layout of
    SpikingJelly's ``{'t', 'x', 'y', 'p'}`` dicts.

    ``iter_chunks(path, n)`` streams a file in chunks of at most ``n`` events in bounded memory;
    ``decode_bytes(data, format)`` decodes bytes already in memory.

    Options (keywords): ``nbin_overflow`` ('tonic': every ``y == 240`` record is dropped and adds
    8192 us to the later timestamps, as tonic does; 'ignore': no overflow handling, as
    SpikingJelly; 'wrap23': +2**23 us per marker), ``aedat2_layout`` ('auto' from the header's
    AEChip line, 'dvs128', 'davis240', 'davis346'), ``dvs128_polarity`` ('bit0_on' or 'jaer'),
    ``keep_special`` (AEDAT 2.0: decode special/APS/IMU words as events, as tonic and
    SpikingJelly do), ``keep_invalid`` (AEDAT 3.1: keep events whose validity bit is 0),
    ``allow_partial_record`` (drop a trailing partial record instead of failing),
    ``aedat4_stream`` (AEDAT 4 stream id; default the lowest events stream, as tonic), and
    ``orientation`` ('raw', or 'spikingjelly' for CIFAR10-DVS: ``x = 127 - Y``, ``y = 127 - X``,
    ``p = 1 - bit0``, exactly SpikingJelly's CIFAR10-DVS arrays).

Writing
    ``write(path, events, format=None, sensor_size=None, compression='lz4')`` for every format
    (``FORMATS``); the format defaults to the one the extension names (``.bin``, ``.aedat4``).

Frames
    ``to_frames(events, n_frames=None, split_by='number', sensor_size=None, size=None, ...)`` ->
    float32 ``[T, 2, H, W]`` (channel 0 = OFF, 1 = ON; tonic's ``ToFrame`` layout), equal to
    SpikingJelly's ``integrate_events_by_fixed_frames_number`` (``split_by='number'`` or
    ``'time'``) and ``integrate_events_by_fixed_duration`` (``split_by='duration'``).

Errors
    A file that cannot be decoded raises ``DecodeError`` (a ``ValueError``) with attributes
    ``file``, ``offset`` (absolute byte offset), ``value`` (the offending value) and ``kind``.
    A missing or unreadable file raises the matching ``OSError``; bad arguments ``ValueError``
    or ``TypeError``. No input crashes the interpreter.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

from ._native import (
    EVENT_DTYPE,
    FORMATS,
    ChunkIter,
    DecodeError,
    __version__,
    _to_frames,
    _write,
    decode_bytes,
    iter_chunks,
    read,
    read_columns,
)

__all__ = [
    "EVENT_DTYPE",
    "FORMATS",
    "ChunkIter",
    "DecodeError",
    "__version__",
    "decode_bytes",
    "iter_chunks",
    "read",
    "read_columns",
    "to_frames",
    "tonic_reader",
    "write",
]

PathLike = Union[str, "os.PathLike[str]"]


def _column(events: Any, name: str) -> np.ndarray:
    """One column of a structured array or a mapping (dict of arrays, SpikingJelly style)."""
    if isinstance(events, np.ndarray):
        names = events.dtype.names
        if names is None or name not in names:
            raise TypeError(
                f"events must be a structured array with fields t, x, y, p (tonic) or a dict of "
                f"arrays; this array has fields {names}"
            )
        return events[name]
    if isinstance(events, Mapping):
        if name not in events:
            raise TypeError(f"events has no {name!r} column (need t, x, y, p)")
        return np.asarray(events[name])
    raise TypeError(
        f"events must be a structured numpy array or a dict of arrays, not {type(events).__name__}"
    )


def _columns(events: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The t, x, y, p columns as contiguous native-endian 1-D arrays, in their own integer (or
    bool) dtypes: the native side converts and range-checks them in one pass. ``p`` counts as
    ON when non-zero (SpikingJelly's ``p != 0``)."""
    cols = []
    for name in ("t", "x", "y", "p"):
        c = _column(events, name)
        if c.ndim != 1:
            raise ValueError(f"column {name} must be one-dimensional, not shape {c.shape}")
        dt = c.dtype
        if dt.kind not in "iub":
            raise TypeError(f"column {name} must hold integers or booleans, not {dt}")
        if not dt.isnative:
            c = c.astype(dt.newbyteorder("="))
        flags = c.flags
        if not (flags.c_contiguous and flags.aligned):
            # Fields of a packed structured array are strided and misaligned: copy those.
            c = np.require(c, requirements=("C", "A"))
        cols.append(c)
    return cols[0], cols[1], cols[2], cols[3]


def _sensor_wh(sensor_size: Any) -> Tuple[int, int]:
    """``(W, H, 2)`` (tonic) or ``(W, H)`` -> ``(W, H)``."""
    try:
        dims = tuple(int(v) for v in sensor_size)
    except TypeError:
        raise TypeError("sensor_size must be a tuple (W, H) or tonic's (W, H, 2)") from None
    if len(dims) not in (2, 3) or (len(dims) == 3 and dims[2] not in (1, 2)):
        raise ValueError(f"sensor_size must be (W, H) or (W, H, 2), not {sensor_size!r}")
    w, h = dims[0], dims[1]
    if w <= 0 or h <= 0 or w > 65535 or h > 65535:
        raise ValueError(f"sensor size {w}x{h} must be within 1..65535 on both axes")
    return w, h


def write(
    path: PathLike,
    events: Any,
    format: Optional[str] = None,
    sensor_size: Any = None,
    compression: str = "lz4",
) -> None:
    """Write events (structured array or dict of t/x/y/p) to ``path``.

    ``format`` is one of ``FORMATS`` ('nbin', 'aedat2', 'aedat3', 'aedat4'); ``None`` takes it
    from the extension ('.bin' -> nbin, '.aedat4' -> aedat4). Events outside a format's domain
    (e.g. x >= 256 for nbin, x >= 128 for AEDAT 2.0 DVS128) raise ``ValueError``;
    ``compression`` ('none', 'lz4', 'lz4_high', 'zstd', 'zstd_high') applies to AEDAT 4.
    ``read`` gives the events back exactly (AEDAT 4 stores x/y as int16).
    """
    path = os.fspath(path)
    if format is None:
        ext = os.path.splitext(path)[1].lower()
        format = {".bin": "nbin", ".aedat4": "aedat4"}.get(ext)
        if format is None:
            raise ValueError(
                f"cannot tell the format from the extension of {path!r}; pass format= (one of {FORMATS})"
            )
    t, x, y, p = _columns(events)
    sensor = None if sensor_size is None else _sensor_wh(sensor_size)
    _write(path, t, x, y, p, format, sensor, compression)


def to_frames(
    events: Any,
    n_frames: Optional[int] = None,
    split_by: str = "number",
    sensor_size: Any = None,
    size: Optional[Tuple[int, int]] = None,
    *,
    resize: str = "events",
    duration: Optional[int] = None,
    drop_out_of_bounds: bool = False,
    binarize: bool = False,
    clip: Optional[float] = None,
    log_scale: bool = False,
) -> np.ndarray:
    """Integrate events into float32 frames of shape ``[T, 2, H, W]`` (channel 0 = OFF).

    ``split_by='number'`` (default ``n_frames=16``): SpikingJelly's
    ``integrate_events_by_fixed_frames_number(events, 'number', T, H, W)``: with ``N`` events
    in file order and ``di = N // T``, frame ``i`` counts events ``[i*di, (i+1)*di)``, the last
    frame also the ``N % T`` remainder.

    ``split_by='time'``: SpikingJelly's ``split_by='time'`` (``dt = (t[-1] - t[0]) // T``, frame
    ``i`` takes ``t[0] + i*dt <= t < t[0] + (i+1)*dt``, the last frame everything after), equal
    on time-sorted input; a frame with no event is empty here where SpikingJelly raises.

    ``split_by='duration'`` with ``duration`` (us): without ``n_frames``, SpikingJelly's
    ``integrate_events_by_fixed_duration`` (``T = ceil((t[-1] - min t) / duration)``, at least
    1; frame ``(t - min t) // duration``, later events in the last frame); with ``n_frames``,
    ``n_frames`` windows of ``duration`` us from the first event, later events dropped.

    ``sensor_size`` is tonic's ``(W, H, 2)`` or ``(W, H)``; ``None`` takes ``max + 1`` of the
    coordinates. ``size=(H, W)`` sets the output canvas (default: the sensor); ``resize``
    maps the sensor onto it: 'events' (``x' = x*W'//W``, count-preserving), 'pool' (exact
    area resampling of the full-resolution counts) or 'none' (crop/pad at the top-left).
    Events outside the sensor raise ``ValueError`` unless ``drop_out_of_bounds``. ``binarize``,
    ``clip`` and ``log_scale`` (``log1p``) post-process the counts in that order.
    """
    t, x, y, p = _columns(events)
    if sensor_size is None:
        if t.size == 0:
            raise ValueError("sensor_size is needed when there are no events")
        if x.min() < 0 or y.min() < 0:
            raise ValueError("negative coordinates: pass sensor_size and drop_out_of_bounds")
        sensor = (int(x.max()) + 1, int(y.max()) + 1)
        if sensor[0] > 65535 or sensor[1] > 65535:
            raise ValueError(f"coordinates up to {sensor} exceed the 16-bit sensor range")
    else:
        sensor = _sensor_wh(sensor_size)
    if size is None:
        hw = (sensor[1], sensor[0])
    else:
        try:
            hw = (int(size[0]), int(size[1]))
        except (TypeError, IndexError):
            raise TypeError("size must be a tuple (H, W)") from None
        if hw[0] <= 0 or hw[1] <= 0:
            raise ValueError(f"size must be positive, not {size!r}")
    if n_frames is not None:
        n_frames = int(n_frames)
        if n_frames <= 0:
            raise ValueError(f"n_frames must be at least 1, not {n_frames}")
    if drop_out_of_bounds and (x.dtype.kind == "i" or x.dtype.itemsize > 2 or y.dtype.kind == "i"
                               or y.dtype.itemsize > 2):
        keep = (x >= 0) & (y >= 0) & (x < 65536) & (y < 65536)
        if not keep.all():
            t, x, y, p = t[keep], x[keep], y[keep], p[keep]
    return _to_frames(
        t,
        x,
        y,
        p,
        n_frames,
        split_by,
        sensor,
        hw,
        resize,
        None if duration is None else int(duration),
        drop_out_of_bounds,
        binarize,
        None if clip is None else float(clip),
        log_scale,
    )


def tonic_reader(format: Optional[str] = None, **options: Any):
    """A drop-in for tonic's readers such as ``tonic.io.read_mnist_file(path, dtype,
    is_stream=False)``: returns ``path -> events`` (``read(path, format, **options)[0]``),
    converted to ``dtype`` when one is given (tonic's datasets pass theirs), e.g.
    ``tonic.datasets.nmnist.read_mnist_file = nmoco_events.tonic_reader("nbin")``."""

    def _read(path: Any, dtype: Any = None, is_stream: bool = False) -> np.ndarray:
        if is_stream:
            ev = decode_bytes(path.read(), format, **options)[0]
        else:
            ev = read(path, format, **options)[0]
        if dtype is None or np.dtype(dtype) == ev.dtype:
            return ev
        dtype = np.dtype(dtype)
        out = np.empty(ev.shape, dtype=dtype)
        for name in dtype.names or ():
            if name not in EVENT_DTYPE.names:
                raise ValueError(f"dtype field {name!r} is not one of x, y, t, p")
            out[name] = ev[name]
        return out

    return _read
