"""Shared helpers for the nmoco_events wheel tests: random event streams and hand-built byte
fixtures (laid out as ../shared/docs/formats.md and crates/nmoco-events/tests/fixtures.rs
describe)."""

import struct

import numpy as np
import pytest

import nmoco_events as ne


def random_events(rng, n, width, height, t_max=1_000_000, sort=True):
    ev = np.empty(n, dtype=ne.EVENT_DTYPE)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    t = rng.integers(0, t_max, n)
    ev["t"] = np.sort(t) if sort else t
    ev["p"] = rng.integers(0, 2, n).astype(bool)
    return ev


def nbin_record(x, y, on, t):
    return bytes([x, y, (on << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])


def aedat2_bytes(words, chip=None):
    b = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n"
    if chip:
        b += f"# AEChip: {chip}\r\n".encode()
    for a, t in words:
        b += struct.pack(">II", a, t)
    return b


AEDAT31_HEADER = (
    b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
    b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n"
)


def aedat31_pol(x, y, on, valid, t):
    return struct.pack("<II", (x << 17) | (y << 2) | (int(on) << 1) | int(valid), t)


def aedat31_packet(event_type, size, ts_offset, overflow, payload, number):
    capacity = len(payload) // size
    return (
        struct.pack("<hhiiiiii", event_type, 1, size, ts_offset, overflow, capacity, number, number)
        + payload
    )


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
