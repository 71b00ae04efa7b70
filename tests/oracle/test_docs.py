"""Runs the Python snippets of docs/interop.md (and its linear-probe command) as written."""
import re
import shlex
import subprocess
import sys

from oracle_common import ROOT, nmoco, nmoco_bin  # noqa: F401

DOC = ROOT / "docs" / "interop.md"


def snippets():
    """{marker: code} for every fenced block whose first line is `# interop-doc: ...`."""
    out = {}
    for lang, body in re.findall(r"```(python|sh)\n(.*?)```", DOC.read_text(), flags=re.S):
        first = body.splitlines()[0]
        if first.startswith("# interop-doc:"):
            out[first.split(":", 1)[1].strip()] = body
    return out


def run_python(code, cwd):
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"snippet failed:\n{code}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_snippet_loads_an_nmoco_encoder_into_spikingjelly(tmp_path):
    code = snippets()["load an nmoco encoder into SpikingJelly"]
    nmoco("export", "--random-init", 0, "--preset", "sew_resnet18", "--to", "spikingjelly",
          "--out", tmp_path / "encoder_sj.safetensors")
    assert run_python(code, tmp_path).strip() == "(1, 512)"


def test_snippet_saves_a_checkpoint_that_linear_probe_evaluates(tmp_path):
    s = snippets()
    run_python(s["save a SpikingJelly checkpoint for nmoco"], tmp_path)
    assert (tmp_path / "sew18_sj.pth").exists()
    # A tiny synthetic set and an eval config for it (the doc's `eval.toml`).
    nmoco("make-synthetic", "--out", tmp_path / "syn", "--classes", 3, "--per-class", 2,
          "--users", 2, "--train-users", 1)
    (tmp_path / "eval.toml").write_text(
        '[data]\ndataset = "synthetic"\nroot = "syn"\n'
        '[data.frames]\nt = 4\nheight = 32\nwidth = 32\nresize = "pool"\n')
    cmd = [line for line in s["evaluate it"].splitlines() if line.startswith("cargo xtask")][0]
    args = shlex.split(cmd)[2:]  # `cargo xtask linear-probe ...` = `nmoco linear-probe ...`
    r = subprocess.run([nmoco_bin(), *args], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "linear probe" in r.stdout, r.stdout
    reports = list((tmp_path / "runs" / "imported" / "sew18_sj" / "eval").rglob("report.json"))
    assert reports, r.stdout + r.stderr
