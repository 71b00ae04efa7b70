"""SpikingJelly multi-step LIF on CUDA at the fused-kernel benchmark's shape, side by side with
`nmoco-snn`'s `gpu_check` example (scripts/gpu/check.sh runs both in one device session).

Input [T=16, N] float32 ~ U(0, 2); loss = (spikes * g).sum() with a fixed random g; tau 2, v_th 1,
hard reset to 0, detach_reset, ATan(2), step_mode 'm'. Timed with CUDA events: median of `reps`
runs after warm-up. Works with spikingjelly 2.0 (LIFNode picks its CUDA implementation itself)
and with 0.0.0.0.14 (`--backend cupy` or `torch`). Prints one JSON line."""
import argparse
import json
import statistics

import torch

p = argparse.ArgumentParser()
p.add_argument("--label", required=True)
p.add_argument("--backend", default=None, help="0.0.0.0.14 only: cupy | torch")
p.add_argument("--n", type=int, default=16 * 1024 * 1024)
p.add_argument("--reps", type=int, default=20)
a = p.parse_args()

import numpy as np  # noqa: E402

# spikingjelly 0.0.0.0.14 still uses the aliases np.int/np.float/np.bool that NumPy 2 removed.
for _name, _type in (("int", int), ("float", float), ("bool", bool)):
    if _name not in np.__dict__:
        setattr(np, _name, _type)

import spikingjelly  # noqa: E402
from spikingjelly.activation_based import functional, neuron, surrogate  # noqa: E402

T, N = 16, a.n
dev = torch.device("cuda")
kw = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, detach_reset=True,
          surrogate_function=surrogate.ATan(), step_mode="m")
if a.backend:
    kw["backend"] = a.backend
node = neuron.LIFNode(**kw).to(dev)
torch.manual_seed(0)
x = (torch.rand(T, N, device=dev) * 2.0).requires_grad_(True)
g = torch.rand(T, N, device=dev)


def timed(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        out.append(s.elapsed_time(e))
    return statistics.median(out)


def copy():
    y.copy_(x.detach())


def fwd():
    with torch.no_grad():
        node(x)
    functional.reset_net(node)


def fwd_bwd():
    x.grad = None
    s = node(x)
    (s * g).sum().backward()
    functional.reset_net(node)


y = torch.empty_like(x)
res = {"label": a.label, "spikingjelly": getattr(spikingjelly, "__version__", "?"),
       "backend": a.backend or "auto", "torch": torch.__version__, "T": T, "N": N}
res["copy_ms"] = round(timed(copy, a.reps), 4)
res["copy_gb_per_s"] = round(8 * T * N / res["copy_ms"] / 1e6, 1)
res["fwd_ms"] = round(timed(fwd, a.reps), 4)
res["fwd_bwd_ms"] = round(timed(fwd_bwd, a.reps), 4)
with torch.no_grad():
    res["spike_rate"] = round(node(x).mean().item(), 4)
functional.reset_net(node)
print("SJ " + json.dumps(res), flush=True)
