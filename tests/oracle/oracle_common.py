"""Shared machinery of the PyTorch oracle tests: run the `nmoco` binary and PyTorch on the same
weights and frames, and compare spikes, features, gradients and BN running statistics.

Tolerances (issue 13): every neuron layer's spikes >= 99.9 % identical; features within 1e-4
relative L2 error, and within 1e-4 element-wise wherever no upstream spike differs (eval mode:
per sample; train mode couples the samples through the BN batch statistics, so there: when no
spike of the batch differs); parameter gradients of sum(features * W) within 1e-3 relative L2
error per tensor; BN running statistics after one train-mode pass within 1e-5.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[2]
SPIKE_AGREEMENT = 0.999
FEATURE_REL_L2 = 1e-4
FEATURE_ELEMENTWISE = 1e-4
GRAD_REL_L2 = 1e-3
RUNNING_STATS = 1e-5
T, B, H, W = 4, 2, 64, 64


def nmoco_bin():
    """The `nmoco` binary: $NMOCO_BIN, else target/release or target/debug (built by .ci/run)."""
    env = os.environ.get("NMOCO_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "nmoco"
        if p.exists():
            return str(p)
    raise RuntimeError("no nmoco binary: run `cargo build -p nmoco-cli` or set NMOCO_BIN")


def nmoco(*args, check=True):
    """Runs `nmoco ARGS`; returns the completed process (stdout + stderr captured)."""
    r = subprocess.run([nmoco_bin(), *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "RAYON_NUM_THREADS": "2"})
    if check and r.returncode != 0:
        raise AssertionError(f"nmoco {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return r


def frames(kind, seed):
    """[T, B, 2, H, W] event frames: 'binary' (0/1) or 'count' (small Poisson counts)."""
    rng = np.random.default_rng(seed)
    if kind == "binary":
        x = (rng.random((T, B, 2, H, W)) < 0.15).astype(np.float32)
    else:
        x = rng.poisson(0.4, (T, B, 2, H, W)).astype(np.float32)
    return x


def rel_l2(a, b):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class SpikeHooks:
    """Forward hooks on the named neuron modules, keeping each one's output as [T, -1] (token
    layers, output [T, B, C, N], permuted to nmoco's [T, B, N, C] first)."""

    def __init__(self, model, names, token_layer=lambda n: False):
        self.out = {}
        self.handles = []
        for n in names:
            m = model.get_submodule(n)
            self.handles.append(m.register_forward_hook(self._hook(n, token_layer(n))))

    def _hook(self, name, token):
        def f(_m, _inp, out):
            s = out.detach()
            if token:
                s = s.permute(0, 1, 3, 2)
            assert name not in self.out, f"{name} ran twice"
            self.out[name] = s.reshape(s.shape[0], -1).clone()
        return f

    def remove(self):
        for h in self.handles:
            h.remove()


def torch_pass(model, x, w, train, neuron_names, token_layer, reset):
    """One forward + backward of sum(features * w) in PyTorch; returns features [T, B, D], the
    spikes per layer, the parameter gradients and the state dict after the pass."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    hooks = SpikeHooks(model, neuron_names, token_layer)
    xt = torch.as_tensor(x)
    feats = model(xt)
    (feats * torch.as_tensor(w)).sum().backward()
    hooks.remove()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    reset(model)
    return feats.detach(), hooks.out, grads, state


def nmoco_pass(tmp, weights, x, w, train, tag):
    """The same pass in nmoco (`nmoco embed --init-from`); returns features [T, B, D], spikes,
    gradients and the exported state after the pass."""
    xin, win = tmp / f"x_{tag}.npy", tmp / f"w_{tag}.npy"
    np.save(xin, x)
    np.save(win, w)
    out = tmp / f"feats_{tag}.npy"
    sp, gr, st = tmp / f"spikes_{tag}.safetensors", tmp / f"grads_{tag}.safetensors", \
        tmp / f"state_{tag}.safetensors"
    nmoco("embed", "--init-from", weights, "--input", xin, "--out", out, "--per-step",
          "--mode", "train" if train else "eval", "--spikes-out", sp, "--loss-weights", win,
          "--grads-out", gr, "--state-out", st)
    return torch.from_numpy(np.load(out)), load_file(sp), load_file(gr), load_file(st)


def compare(tag, ours, theirs, train, report):
    """Asserts every tolerance; appends one line per check to `report` (a list of strings)."""
    f_n, s_n, g_n, st_n = ours
    f_t, s_t, g_t, st_t = theirs
    failures = []
    # Spikes, layer by layer.
    assert set(s_n) == set(s_t), f"{tag}: neuron layers differ: {sorted(set(s_n) ^ set(s_t))}"
    worst, rates, per_sample_equal, all_equal = 1.0, [], np.ones(B, bool), True
    for name in sorted(s_t):
        a, b = s_n[name], s_t[name]
        assert a.shape == b.shape, f"{tag}: {name} spikes {tuple(a.shape)} vs {tuple(b.shape)}"
        eq = (a == b)
        agree = float(eq.double().mean())
        worst = min(worst, agree)
        rates.append(float(b.double().mean()))
        per_sample_equal &= eq.reshape(T, B, -1).all(dim=2).all(dim=0).numpy()
        all_equal &= bool(eq.all())
        if agree < SPIKE_AGREEMENT:
            failures.append(f"spikes of {name}: {100 * agree:.4f} % identical")
    silent = sum(r == 0 for r in rates)
    report.append(f"{tag}: spikes {len(s_t)} layers, worst agreement {100 * worst:.4f} %, "
                  f"firing rates {min(rates):.3f}..{max(rates):.3f} ({silent} silent)")
    # Features.
    e = rel_l2(f_n, f_t)
    if e > FEATURE_REL_L2:
        failures.append(f"features rel L2 {e:.3e}")
    checked = per_sample_equal if not train else np.full(B, all_equal)
    diff = (f_n.double() - f_t.double()).abs() / f_t.double().abs().clamp_min(1.0)
    ew = float(diff[:, checked].max()) if checked.any() else float("nan")
    if checked.any() and ew > FEATURE_ELEMENTWISE:
        failures.append(f"features element-wise {ew:.3e} where no spike differs")
    report.append(f"{tag}: features rel L2 {e:.2e}, element-wise {ew:.2e} on {int(checked.sum())}/{B} "
                  f"samples with identical spikes")
    # Gradients: every parameter. Tensors whose true gradient is 0 (a bias right before a
    # train-mode BN) hold rounding noise on both sides: there the absolute error is compared
    # with the typical gradient size instead.
    assert set(g_n) == set(g_t), f"{tag}: gradient names differ: {sorted(set(g_n) ^ set(g_t))}"
    norms = sorted(float(g.norm()) for g in g_t.values())
    typical = norms[len(norms) // 2]
    worst_g, worst_name = 0.0, None
    for name in sorted(g_t):
        a, b = g_n[name].double(), g_t[name].double().reshape(g_n[name].shape)
        if float(b.norm()) < 1e-4 * typical:
            err = float((a - b).norm()) / typical
            if err > GRAD_REL_L2 * 1e-1:
                failures.append(f"gradient {name}: |diff| {err:.3e} of the typical norm (true 0)")
            continue
        err = rel_l2(a, b)
        if err > worst_g:
            worst_g, worst_name = err, name
        if err > GRAD_REL_L2:
            failures.append(f"gradient {name}: rel L2 {err:.3e}")
    report.append(f"{tag}: {len(g_t)} parameter gradients, worst rel L2 {worst_g:.2e} ({worst_name})")
    # Running statistics (train mode changes them; eval mode must not).
    worst_s = 0.0
    for k, b in st_t.items():
        if not (k.endswith("running_mean") or k.endswith("running_var")):
            continue
        a = st_n[k].double()
        d = float(((a - b.double()).abs() / b.double().abs().clamp_min(1.0)).max())
        worst_s = max(worst_s, d)
        if d > RUNNING_STATS:
            failures.append(f"running statistic {k}: {d:.3e}")
    report.append(f"{tag}: BN running statistics after the pass, max diff {worst_s:.2e}")
    assert not failures, f"{tag}: " + "; ".join(failures)


def write_report(name, lines):
    """Prints the figures (pytest -s shows them) and keeps them under $NMOCO_ORACLE_REPORT."""
    text = "\n".join(lines)
    print(text)
    d = os.environ.get("NMOCO_ORACLE_REPORT")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        (Path(d) / f"{name}.txt").write_text(text + "\n")


def save_state(state, path):
    """Saves a state dict as safetensors (contiguous copies)."""
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


__all__ = ["nmoco", "nmoco_bin", "frames", "torch_pass", "nmoco_pass", "compare", "write_report", "save_state",
           "T", "B", "H", "W", "ROOT", "sys"]
