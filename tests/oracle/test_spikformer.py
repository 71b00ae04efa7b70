"""Spikformer-2-256 against the official DVS model (tests/oracle/spikformer_dvs.py), both
directions."""
import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from oracle_common import B, T, compare, frames, nmoco, nmoco_pass, save_state, torch_pass, \
    write_report
from spikformer_dvs import OFFICIAL_HEAD_KEYS, OFFICIAL_UNUSED_KEYS, reset, spikformer_dvs
from spikingjelly.activation_based import neuron


def neuron_names(net):
    return [n for n, m in net.named_modules() if isinstance(m, neuron.BaseNode)]


def token_layer(name):
    return name.startswith("block.")


def run_both(tmp, weights_file, net, tag, report, seed):
    names = neuron_names(net)
    assert len(names) == 19, names
    rng = np.random.default_rng(seed)
    for kind in ("binary", "count"):
        x = frames(kind, seed + (kind == "count"))
        w = rng.standard_normal((T, B, 256)).astype(np.float32)
        for train in (True, False):
            snapshot = {k: v.clone() for k, v in net.state_dict().items()}
            t = torch_pass(net, x, w, train, names, token_layer, reset)
            net.load_state_dict(snapshot)
            t_tag = f"{tag} {kind} {'train' if train else 'eval'}"
            n = nmoco_pass(tmp, weights_file, x, w, train, t_tag.replace(" ", "_"))
            compare(t_tag, n, t, train, report)


def calibrate(net, x):
    """BN running statistics := the batch statistics of one train-mode pass over x."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.momentum = 1.0
        net.train()
        net.forward_features(torch.as_tensor(x))
        reset(net)
        for m in bns:
            m.momentum = 0.1


def load_official(net, sd):
    res = net.load_state_dict(sd, strict=False)
    assert not res.missing_keys, res.missing_keys
    assert set(res.unexpected_keys) <= set(OFFICIAL_UNUSED_KEYS + OFFICIAL_HEAD_KEYS), res.unexpected_keys


def test_export_loads_into_the_official_model_and_agrees(tmp_path):
    exported = tmp_path / "nmoco_spikformer.safetensors"
    nmoco("export", "--random-init", 4, "--preset", "spikformer_2_256", "--out", exported)
    net = spikformer_dvs()
    sd = load_file(str(exported))
    load_official(net, sd)
    assert set(sd) == set(net.state_dict())  # exactly the official backbone keys
    # nmoco's init leaves BN at identity statistics, under which eval mode does not fire: give
    # the BNs the statistics of real activations (one PyTorch train pass with momentum 1), and
    # run both sides from that file.
    calibrate(net, frames("count", 300))
    calibrated = tmp_path / "nmoco_spikformer_calibrated.safetensors"
    save_state(net.state_dict(), calibrated)
    report = ["Spikformer-2-256, nmoco -> official DVS model"]
    run_both(tmp_path, calibrated, net, "nmoco->official", report, seed=11)
    write_report("spikformer_export", report)


def test_official_checkpoint_imports_and_agrees(tmp_path):
    torch.manual_seed(6)
    net = spikformer_dvs(num_classes=10)  # an official checkpoint carries the classifier too
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.uniform_(0.6, 1.6)
                m.bias.normal_(0.3, 0.3)
    calibrate(net, frames("count", 400))
    # An official checkpoint also holds the tensors its forward never reads.
    sd = {**net.state_dict(), "pos_embed": torch.zeros(1, 256, 8, 8)}
    pth = tmp_path / "official.pth"
    torch.save(sd, pth)
    backbone = spikformer_dvs()
    load_official(backbone, sd)
    report = ["Spikformer-2-256, official DVS model -> nmoco"]
    run_both(tmp_path, pth, backbone, "official->nmoco", report, seed=13)
    write_report("spikformer_import", report)
