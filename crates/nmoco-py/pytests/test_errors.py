"""Every error path raises the documented exception; random and truncated bytes never crash."""

import numpy as np
import pytest

import nmoco_events as ne
from conftest import AEDAT31_HEADER, aedat2_bytes, aedat31_packet, aedat31_pol, random_events


def test_decode_error_is_a_value_error_with_file_offset_value(tmp_path):
    assert issubclass(ne.DecodeError, ValueError)
    path = tmp_path / "partial.bin"
    path.write_bytes(bytes(5 * 3 + 2))
    with pytest.raises(ne.DecodeError) as e:
        ne.read(path)
    err = e.value
    assert err.file == str(path) and err.offset == 15 and err.value == 2
    assert err.kind == "PartialRecord" and str(path) in str(err)
    # The documented option reproduces numpy.fromfile's silent drop.
    assert len(ne.read(path, allow_partial_record=True)[0]) == 3


@pytest.mark.parametrize(
    "data,fmt,kind",
    [
        (b"#!AER-DAT3.0\r\n", None, "UnsupportedVersion"),
        (b"#!AER-DAT9.9\r\n", None, "UnsupportedVersion"),
        (b"garbage", None, "UnknownFormat"),
        (b"not an aedat file", "aedat2", "BadMagic"),
        (b"#!AER-DAT4.0\r\n\x10", "aedat4", "Truncated"),
        (AEDAT31_HEADER + b"\x01\x00", "aedat3", "Truncated"),
        (aedat2_bytes([(0, 0)]) + b"\x00\x01", "aedat2", "PartialRecord"),
        (AEDAT31_HEADER + aedat31_packet(1, 8, 4, 0, aedat31_pol(1, 1, True, True, 5), 1)[:-3],
         "aedat3", "PacketPastEnd"),
    ],
)
def test_decode_errors_by_kind(data, fmt, kind):
    with pytest.raises(ne.DecodeError) as e:
        ne.decode_bytes(data, fmt)
    assert e.value.kind == kind
    assert e.value.file is None
    assert e.value.offset is None or e.value.offset >= 0


def test_bad_field_carries_the_offending_value():
    # An AEDAT 3.1 polarity packet whose event size (3) is smaller than the 8-byte event.
    b = AEDAT31_HEADER + aedat31_packet(1, 3, 4, 0, b"\x00" * 6, 2)
    with pytest.raises(ne.DecodeError) as e:
        ne.decode_bytes(b)
    assert e.value.kind == "BadField" and e.value.value == 3
    assert e.value.offset == len(AEDAT31_HEADER) + 4  # the eventSize field of the packet header


def test_missing_file_and_directory_are_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ne.read(tmp_path / "nope.bin")
    with pytest.raises(OSError):
        ne.read(tmp_path, "nbin")
    with pytest.raises(FileNotFoundError):
        ne.iter_chunks(tmp_path / "nope.bin", 10, "nbin")
    with pytest.raises(FileNotFoundError):
        ne.write(tmp_path / "no" / "dir.bin", random_events(np.random.default_rng(0), 3, 4, 4))


def test_bad_arguments_are_value_or_type_errors(tmp_path, rng):
    ev = random_events(rng, 10, 34, 34)
    ne.write(tmp_path / "a.bin", ev)
    with pytest.raises(ValueError):
        ne.read(tmp_path / "a.bin", "mp4")
    with pytest.raises(ValueError):
        ne.read(tmp_path / "a.bin", nbin_overflow="sometimes")
    with pytest.raises(ValueError):
        ne.read(tmp_path / "a.bin", orientation="spikingjelly")  # not AEDAT 2.0 DVS128
    with pytest.raises(ValueError):
        ne.iter_chunks(tmp_path / "a.bin", 0)
    with pytest.raises(ValueError):
        ne.write(tmp_path / "a.xyz", ev)  # format not given, not in the extension
    big = ev.copy()
    big["x"][3] = 300
    with pytest.raises(ValueError, match="event 3"):
        ne.write(tmp_path / "b.bin", big)  # x >= 256 does not fit N-binary
    with pytest.raises(ValueError):
        ne.write(tmp_path / "b.aedat", ev, "aedat2", compression="brotli")
    with pytest.raises(TypeError):
        ne.write(tmp_path / "c.bin", [1, 2, 3])
    with pytest.raises(TypeError):
        ne.to_frames({"t": [0.5], "x": [0], "y": [0], "p": [1]}, 1, sensor_size=(1, 1))
    with pytest.raises(ValueError):
        ne.to_frames(ev, 0, sensor_size=(34, 34))
    with pytest.raises(ValueError):
        ne.to_frames(ev, 4, "sometimes", sensor_size=(34, 34))
    with pytest.raises(ValueError):
        ne.to_frames(ev, split_by="duration", sensor_size=(34, 34))
    with pytest.raises(ValueError):
        ne.to_frames(ev, split_by="duration", duration=-3, sensor_size=(34, 34))
    with pytest.raises(ValueError):
        ne.to_frames(ev, 4, sensor_size=(34, 34), resize="bicubic", size=(8, 8))
    with pytest.raises(ValueError):
        ne.to_frames(ev, 4, sensor_size=(34, 34), clip=-1.0)
    with pytest.raises(ValueError):
        ne.to_frames(ev, 4, sensor_size=(0, 34))
    for split in ("number", "time"):
        with pytest.raises(MemoryError):
            ne.to_frames(ev, 1 << 40, split, sensor_size=(34, 34))
    with pytest.raises(MemoryError):  # pooling's full-resolution scratch would be 32 GiB
        ne.to_frames(ev, 1, sensor_size=(65535, 65535), size=(4, 4), resize="pool")


def test_error_in_iter_chunks_names_the_file(tmp_path, rng):
    ev = random_events(rng, 5_000, 128, 128)
    ne.write(tmp_path / "t.aedat4", ev)
    data = (tmp_path / "t.aedat4").read_bytes()
    (tmp_path / "cut.aedat4").write_bytes(data[: len(data) // 2])
    with pytest.raises(ne.DecodeError) as e:
        for _ in ne.iter_chunks(tmp_path / "cut.aedat4", 256):
            pass
    assert e.value.file == str(tmp_path / "cut.aedat4") and e.value.offset is not None


def valid_files(rng):
    ev = random_events(rng, 300, 128, 128, t_max=1 << 24)
    import tempfile, os

    out = {}
    with tempfile.TemporaryDirectory() as d:
        for fmt, name, comp in (("nbin", "a.bin", "lz4"), ("aedat2", "a.aedat", "lz4"),
                                ("aedat3", "b.aedat", "lz4"), ("aedat4", "a.aedat4", "lz4"),
                                ("aedat4", "z.aedat4", "zstd")):
            p = os.path.join(d, name)
            ne.write(p, ev, fmt, compression=comp)
            with open(p, "rb") as f:
                out[(fmt, comp)] = f.read()
    return out


def test_thousands_of_random_and_truncated_inputs_raise_decode_error_or_decode(rng):
    files = valid_files(rng)
    outcomes = {"ok": 0, "err": 0}

    def attempt(data, fmt):
        try:
            ev, info = ne.decode_bytes(data, fmt)
            assert len(ev) == info["n_events"]
            outcomes["ok"] += 1
        except ne.DecodeError as e:
            assert e.offset is None or 0 <= e.offset <= len(data) + (1 << 32)
            outcomes["err"] += 1

    formats = [None, "nbin", "aedat2", "aedat3", "aedat4"]
    for i in range(1500):  # pure noise, with and without a plausible magic line
        n = int(rng.integers(0, 400))
        noise = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        prefix = [b"", b"#!AER-DAT2.0\r\n", b"#!AER-DAT3.1\r\n", b"#!AER-DAT4.0\r\n"][i % 4]
        attempt(prefix + noise, formats[i % 5])
    for (fmt, _), data in files.items():  # every truncation point of the headers, then strides
        cuts = list(range(0, min(len(data), 600))) + list(range(600, len(data), 37))
        for c in cuts:
            attempt(data[:c], fmt)
        for _ in range(200):  # random byte flips in a valid file
            b = bytearray(data)
            for pos in rng.integers(0, len(b), int(rng.integers(1, 8))):
                b[pos] = int(rng.integers(0, 256))
            attempt(bytes(b), fmt)
    assert outcomes["ok"] + outcomes["err"] > 3000
    assert outcomes["err"] > 1000
