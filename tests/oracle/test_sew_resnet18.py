"""SEW-ResNet-18 against SpikingJelly 2.0's own `sew_resnet18` (both directions)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from spikingjelly.activation_based.model import sew_resnet

from oracle_common import B, T, compare, frames, nmoco, nmoco_pass, save_state, torch_pass, \
    write_report


def sj_sew_resnet18():
    """SpikingJelly's sew_resnet18 with nmoco's preset neuron (LIF tau 2, hard reset to 0,
    detach reset, ATan alpha 2), a 2-channel stem and no classifier: features [T, B, 512]."""
    net = sew_resnet.sew_resnet18(spiking_neuron=neuron.LIFNode, cnf="ADD", tau=2.0, v_threshold=1.0,
                                  v_reset=0.0, decay_input=True, detach_reset=True,
                                  surrogate_function=surrogate.ATan(alpha=2.0))
    net.conv1 = layer.Conv2d(2, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.fc = nn.Identity()
    functional.set_step_mode(net, "m")
    return net


def calibrate(net, x):
    """BN running statistics := the batch statistics of one train-mode pass over x."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.momentum = 1.0
        net.train()
        net(torch.as_tensor(x))
        functional.reset_net(net)
        for m in bns:
            m.momentum = 0.1


def neuron_names(net):
    return [n for n, m in net.named_modules() if isinstance(m, neuron.BaseNode)]


def run_both(tmp, weights_file, net, tag, report, seed):
    """Loads nothing: `net` already holds the weights of `weights_file`. Compares train mode
    then eval mode, on binary and count frames."""
    names = neuron_names(net)
    assert len(names) == 20, names
    rng = np.random.default_rng(seed)
    for kind in ("binary", "count"):
        x = frames(kind, seed + (kind == "count"))
        w = rng.standard_normal((T, B, 512)).astype(np.float32)
        for train in (True, False):
            snapshot = {k: v.clone() for k, v in net.state_dict().items()}
            t = torch_pass(net, x, w, train, names, lambda n: False, functional.reset_net)
            net.load_state_dict(snapshot)  # each pass starts from the same running statistics
            t_tag = f"{tag} {kind} {'train' if train else 'eval'}"
            n = nmoco_pass(tmp, weights_file, x, w, train, t_tag.replace(" ", "_"))
            compare(t_tag, n, t, train, report)


def test_export_loads_into_spikingjelly_and_agrees(tmp_path):
    """nmoco's seeded init → `nmoco export` → SpikingJelly `load_state_dict` (strict)."""
    exported = tmp_path / "nmoco_sew18.safetensors"
    nmoco("export", "--random-init", 3, "--preset", "sew_resnet18", "--to", "spikingjelly",
          "--out", exported)
    sd = load_file(str(exported))
    net = sj_sew_resnet18()
    net.load_state_dict(sd)  # strict: every key present, no extra key, same shapes
    # nmoco's init leaves BN at identity statistics, under which eval mode hardly fires: give
    # the BNs the statistics of real activations (one PyTorch train pass with momentum 1), and
    # run both sides from that file.
    calibrate(net, frames("count", 100))
    calibrated = tmp_path / "nmoco_sew18_calibrated.safetensors"
    save_state(net.state_dict(), calibrated)
    assert any(k.endswith("num_batches_tracked") for k in sd)
    report = ["SEW-ResNet-18, nmoco -> SpikingJelly"]
    run_both(tmp_path, calibrated, net, "nmoco->sj", report, seed=1)
    write_report("sew_resnet18_export", report)


def test_spikingjelly_checkpoint_imports_and_agrees(tmp_path):
    """SpikingJelly's own init (kaiming fan_out) + random BN state → .pth → `nmoco embed
    --init-from` (and the same weights from .safetensors)."""
    torch.manual_seed(5)
    net = sj_sew_resnet18()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.6, 1.6)
                m.bias.normal_(0.0, 0.3)
    calibrate(net, frames("count", 200))
    pth = tmp_path / "sj_sew18.pth"
    torch.save(net.state_dict(), pth)
    st = tmp_path / "sj_sew18.safetensors"
    save_state(net.state_dict(), st)
    report = ["SEW-ResNet-18, SpikingJelly -> nmoco"]
    run_both(tmp_path, pth, net, "sj->nmoco (.pth)", report, seed=7)
    # The safetensors copy gives the same features as the .pth.
    x = frames("binary", 9)
    np.save(tmp_path / "xs.npy", x)
    for f, out in ((pth, "a.npy"), (st, "b.npy")):
        nmoco("embed", "--init-from", f, "--input", tmp_path / "xs.npy", "--out", tmp_path / out)
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    write_report("sew_resnet18_import", report)


def test_import_names_every_bad_tensor(tmp_path):
    """A state dict with a missing, an extra and a mis-shaped tensor: one error naming all three,
    before anything runs."""
    net = sj_sew_resnet18()
    sd = net.state_dict()
    del sd["layer2.1.bn2.running_var"]
    sd["layer9.0.conv1.weight"] = torch.zeros(3)
    sd["layer3.0.downsample.0.weight"] = torch.zeros(256, 128, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    np.save(tmp_path / "x.npy", frames("binary", 1))
    r = nmoco("embed", "--init-from", bad, "--input", tmp_path / "x.npy", "--out",
              tmp_path / "o.npy", check=False)
    assert r.returncode != 0
    for name in ("layer2.1.bn2.running_var", "layer9.0.conv1.weight", "layer3.0.downsample.0.weight"):
        assert name in r.stderr, r.stderr
    assert not (tmp_path / "o.npy").exists()


def test_sew_small_is_refused(tmp_path):
    r = nmoco("export", "--random-init", 0, "--preset", "sew_small", "--out", tmp_path / "x.safetensors",
              check=False)
    assert r.returncode != 0 and "no PyTorch twin" in r.stderr, r.stderr
