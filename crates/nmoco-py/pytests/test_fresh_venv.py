"""The wheel installs and works in a fresh venv that has only numpy (no tonic, torch,
SpikingJelly). The wheel path comes from $NMOCO_WHEEL (set by .ci/run after `maturin build`)."""

import os
import subprocess
import sys
import venv

import pytest

SCRIPT = r"""
import importlib.util, sys
import numpy as np
import nmoco_events as ne
assert importlib.util.find_spec("tonic") is None and importlib.util.find_spec("torch") is None
ev = np.zeros(4, dtype=ne.EVENT_DTYPE)
ev["x"] = [1, 2, 3, 4]; ev["y"] = 1; ev["t"] = [1, 2, 3, 4]; ev["p"] = [True, False, True, True]
for fmt, name in (("nbin", "a.bin"), ("aedat2", "a.aedat"), ("aedat3", "b.aedat"), ("aedat4", "a.aedat4")):
    ne.write(name, ev, fmt)
    assert ne.read(name)[0].tobytes() == ev.tobytes(), fmt
frames = ne.to_frames(ev, 2, sensor_size=(5, 2, 2))
assert frames.shape == (2, 2, 2, 5) and frames.sum() == 4
try:
    ne.decode_bytes(b"#!AER-DAT4.0\r\n\x01", "aedat4")
except ne.DecodeError as e:
    assert isinstance(e, ValueError) and e.offset is not None
else:
    raise SystemExit("no DecodeError")
print("fresh-venv-ok", ne.__version__, np.__version__)
"""


def test_wheel_imports_in_a_fresh_venv_with_only_numpy(tmp_path):
    wheel = os.environ.get("NMOCO_WHEEL")
    if not wheel:
        pytest.skip("NMOCO_WHEEL (path of the built wheel) is not set; .ci/run sets it")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["numpy"], check=True, timeout=600)
    subprocess.run(pip + ["--no-deps", wheel], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run(
        [str(py), "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fresh-venv-ok" in out.stdout
    assert sys.prefix != str(env_dir)
