"""`nmoco pretrain --init-from`: a SpikingJelly checkpoint becomes the starting backbone (checked
with lr 1e-20: the trained encoder keeps the imported weights), a bad one fails before training and
names every bad tensor; `nmoco embed --checkpoint` on the run, with and without --head; `nmoco
export` of the run loads back into SpikingJelly."""
import numpy as np
import torch
from safetensors.torch import load_file

from oracle_common import frames, nmoco
from test_sew_resnet18 import sj_sew_resnet18


def pretrain_args(tmp, name, init):
    return ["pretrain", "--init-from", init, "--name", name,
            "--set", f'run.runs_dir="{tmp / "runs"}"', "--set", f'data.root="{tmp / "syn"}"',
            "--set", 'model.preset="sew_resnet18"', "--set", "run.epochs=1",
            "--set", "optim.lr=1e-20", "--set", "optim.batch_size=8", "--set", "moco.k=8"]


def test_pretrain_starts_from_a_spikingjelly_checkpoint(tmp_path):
    nmoco("make-synthetic", "--out", tmp_path / "syn", "--classes", 3, "--per-class", 2,
          "--users", 2, "--train-users", 1)
    torch.manual_seed(8)
    net = sj_sew_resnet18()
    sd = net.state_dict()
    torch.save(sd, tmp_path / "sj.pth")

    bad = dict(sd)
    del bad["layer4.1.conv2.weight"]
    bad["layer1.0.bn1.weight"] = torch.ones(3)
    torch.save(bad, tmp_path / "bad.pth")
    r = nmoco(*pretrain_args(tmp_path, "bad", tmp_path / "bad.pth"), check=False)
    assert r.returncode != 0
    assert "layer4.1.conv2.weight" in r.stderr and "layer1.0.bn1.weight" in r.stderr, r.stderr
    assert not (tmp_path / "runs" / "bad" / "checkpoints").exists() or \
        not any((tmp_path / "runs" / "bad" / "checkpoints").iterdir())

    nmoco(*pretrain_args(tmp_path, "good", tmp_path / "sj.pth"))
    run = tmp_path / "runs" / "good"
    enc = load_file(str(run / "final" / "encoder.safetensors"))
    # lr 1e-20: every weight is still the imported one, to rounding (the BN statistics moved in
    # train mode).
    for k, v in sd.items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        nm = {"conv1": "stem.conv", "bn1": "stem.bn"}.get(k.split(".")[0])
        if nm is None:
            continue
        ours = enc[f"backbone.{nm}.{k.split('.', 1)[1]}"]
        assert torch.allclose(ours, v, rtol=1e-6, atol=1e-12), k
    exported = tmp_path / "good_sj.safetensors"
    nmoco("export", run, "--to", "spikingjelly", "--out", exported)
    back = load_file(str(exported))
    assert not any(k.startswith("moco_head.") for k in back)
    nmoco("export", run, "--to", "spikingjelly", "--out", tmp_path / "h.safetensors", "--with-head")
    with_head = load_file(str(tmp_path / "h.safetensors"))
    assert {"moco_head.fc1.weight", "moco_head.bn1.running_var", "moco_head.fc2.bias"} <= set(with_head)
    net.load_state_dict({k: v for k, v in with_head.items() if not k.startswith("moco_head.")})
    for k, v in sd.items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.allclose(back[k], v, rtol=1e-6, atol=1e-12), k
    x = frames("binary", 3)[:, :, :, :32, :32].copy()
    np.save(tmp_path / "x.npy", x)
    nmoco("embed", "--checkpoint", run, "--input", tmp_path / "x.npy", "--out", tmp_path / "f.npy")
    assert np.load(tmp_path / "f.npy").shape == (2, 512)
    nmoco("embed", "--checkpoint", run, "--input", tmp_path / "x.npy", "--out", tmp_path / "h.npy",
          "--head", "--per-step")
    h = np.load(tmp_path / "h.npy")
    assert h.shape[:2] == (4, 2) and np.isfinite(h).all()
