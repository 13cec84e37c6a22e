"""gankit.models.dcgan (networks, losses, train_step, recipe) and the `gankit train dcgan` command."""
from __future__ import annotations

import argparse
import json
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from gankit.models.dcgan import (
    DCGANConfig,
    Discriminator,
    Generator,
    discriminator_block,
    discriminator_loss,
    generator_block,
    generator_loss_minimax,
    generator_loss_non_saturating,
    train_dcgan,
    train_step,
    weights_init,
)
from gankit.training import MixedPrecision


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def widths(base: int, image_size: int) -> list[int]:
    """Channel widths of the hidden layers at 4x4, 8x8, ..., image_size/2 (largest first)."""
    hidden = int(math.log2(image_size)) - 2  # 4x4 .. size/2
    return [base * 2 ** (hidden - 1 - i) for i in range(hidden)]


def generator_params(z_dim, ngf, channels, image_size, output_bias=True):
    w = widths(ngf, image_size)
    total = z_dim * w[0] * 16 + 2 * w[0]  # 4x4 transposed conv, no bias, + BN gamma and beta
    total += sum(a * b * 16 + 2 * b for a, b in zip(w, w[1:]))
    return total + w[-1] * channels * 16 + (channels if output_bias else 0)


def discriminator_params(ndf, channels, image_size, output_bias=True):
    w = widths(ndf, image_size)[::-1]  # smallest first
    total = channels * w[0] * 16  # first layer: no bias, no BN
    total += sum(a * b * 16 + 2 * b for a, b in zip(w, w[1:]))
    return total + w[-1] * 16 + (1 if output_bias else 0)


# --- networks ----------------------------------------------------------------------------------
def test_parameter_counts_match_the_pytorch_dcgan_example():
    # The PyTorch example (64x64, 3 channels, no biases anywhere): G 3,576,704 and D 2,765,568.
    assert generator_params(100, 64, 3, 64, output_bias=False) == 3_576_704
    assert discriminator_params(64, 3, 64, output_bias=False) == 2_765_568
    assert count(Generator(output_bias=False)) == 3_576_704
    assert count(Discriminator(output_bias=False)) == 2_765_568
    # Default: the output layers have a bias (no BN after them), as in the week-1 assignment.
    assert count(Generator()) == 3_576_704 + 3 and count(Discriminator()) == 2_765_568 + 1


@pytest.mark.parametrize("z_dim,width,channels,size", [(100, 64, 1, 32), (13, 7, 3, 32), (11, 5, 2, 64), (3, 2, 1, 16)])
def test_parameter_counts_follow_the_layer_shapes(z_dim, width, channels, size):
    assert count(Generator(z_dim, width, channels, size)) == generator_params(z_dim, width, channels, size)
    assert count(Discriminator(width, channels, size)) == discriminator_params(width, channels, size)


def test_week1_architecture_at_32x32():
    """Same count as the assignment's hidden test, spelled out layer by layer."""
    G, D = Generator(100, 64, 1, 32), Discriminator(64, 1, 32)
    assert count(G) == ((100 * 256 * 16 + 2 * 256) + (256 * 128 * 16 + 2 * 128) + (128 * 64 * 16 + 2 * 64)
                        + (64 * 16 + 1))
    assert count(D) == (64 * 16) + (64 * 128 * 16 + 2 * 128) + (128 * 256 * 16 + 2 * 256) + (256 * 16 + 1)
    assert isinstance(G.net[-1], nn.Tanh)
    assert [type(m) for m in D.net[0]] == [nn.Conv2d, nn.LeakyReLU], "no BN on the discriminator's input"
    modules = [*G.modules(), *D.modules()]
    assert not any(isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d)) for m in modules)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 2


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_range(size):
    torch.manual_seed(0)
    G, D = Generator(z_dim=7, ngf=4, channels=3, image_size=size), Discriminator(ndf=4, channels=3, image_size=size)
    z = torch.randn(5, 7) * 50  # large inputs saturate tanh but cannot leave [-1, 1]
    images = G(z)
    assert images.shape == (5, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(G.eval()(z.view(5, 7, 1, 1)), G(z)), "(B, z) and (B, z, 1, 1) are the same input"
    assert D(images).shape == (5,)


def test_blocks():
    x = torch.randn(2, 3, 6, 6)
    g = generator_block(3, 5)
    assert g(x).shape == (2, 5, 12, 12) and (g(x) >= 0).all()
    assert [type(m) for m in g] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU]
    assert g[0].bias is None and (g[0].kernel_size, g[0].stride, g[0].padding) == ((4, 4), (2, 2), (1, 1))
    d = discriminator_block(3, 5)
    assert d(x).shape == (2, 5, 3, 3) and d[-1].negative_slope == 0.2
    assert count(discriminator_block(3, 5, batch_norm=False)) == 3 * 5 * 16


def test_weights_init():
    torch.manual_seed(0)
    G = Generator(init_std=None)
    G.apply(weights_init)
    first = G.net[0].weight
    assert abs(first.mean().item()) < 1e-3 and abs(first.std().item() - 0.02) < 1e-3
    gamma = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(gamma.mean().item() - 1) < 0.01 and abs(gamma.std().item() - 0.02) < 0.005
    assert torch.equal(G.net[-2].bias, torch.zeros(3))


# --- losses ------------------------------------------------------------------------------------
def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_losses_match_their_definitions():
    real, fake = [2.0, -3.0, 5.0], [-7.0, 11.0, 0.0]
    expected_d = -sum(math.log(sigmoid(r)) for r in real) / 3 - sum(math.log(1 - sigmoid(f)) for f in fake) / 3
    assert discriminator_loss(torch.tensor(real), torch.tensor(fake)).item() == pytest.approx(expected_d, rel=1e-6)
    assert generator_loss_minimax(torch.tensor(fake)).item() == pytest.approx(
        sum(math.log(1 - sigmoid(f)) for f in fake) / 3, rel=1e-6)
    assert generator_loss_non_saturating(torch.tensor(fake)).item() == pytest.approx(
        -sum(math.log(sigmoid(f)) for f in fake) / 3, rel=1e-6)


def test_losses_equal_bce_with_logits_and_stay_finite():
    real = torch.tensor([130.0, -97.0, 3.0, -2.0])
    fake = torch.tensor([-101.0, 113.0, -5.0, 7.0])
    bce = F.binary_cross_entropy_with_logits
    d = discriminator_loss(real, fake)
    assert torch.isfinite(d)
    assert torch.allclose(d, bce(real, torch.ones(4)) + bce(fake, torch.zeros(4)))
    assert torch.allclose(generator_loss_non_saturating(fake), bce(fake, torch.ones(4)))
    assert torch.allclose(generator_loss_minimax(fake), -bce(fake, torch.zeros(4)))


def test_saturation_argument():
    """At very negative logits (D rejects the fakes) the minimax gradient vanishes; the non-saturating one is -1/B."""
    logits = [-11.0, -13.0, -17.0]
    mm = torch.tensor(logits, requires_grad=True)
    generator_loss_minimax(mm).backward()
    ns = torch.tensor(logits, requires_grad=True)
    generator_loss_non_saturating(ns).backward()
    for i, l in enumerate(logits):
        assert mm.grad[i].item() == pytest.approx(-sigmoid(l) / 3, rel=1e-4)  # d/dl log(1 - s(l)) = -s(l)
        assert ns.grad[i].item() == pytest.approx((sigmoid(l) - 1) / 3, rel=1e-4)  # d/dl -log s(l) = s(l) - 1
    assert mm.grad.abs().max() < 1e-4 < 0.3 < ns.grad.abs().min()


# --- train_step with prime-number mock networks --------------------------------------------------
class ScaleG(nn.Module):
    """G(z) = g * z."""

    def __init__(self, g):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(g))

    def forward(self, z):
        return self.g * z


class LinearD(nn.Module):
    """D(x) = v * mean(x) + b, a logit per sample."""

    def __init__(self, v, b):
        super().__init__()
        self.v, self.b = nn.Parameter(torch.tensor(v)), nn.Parameter(torch.tensor(b))

    def forward(self, x):
        return self.v * x.mean(dim=(1, 2, 3)) + self.b


def reference(g, v, b, real_means, z_means, lr, loss):
    """The step done by hand: gradients of the definitions, D step first, then G against the new D."""
    fake_means = [g * m for m in z_means]
    lr_, lf = [v * m + b for m in real_means], [v * m + b for m in fake_means]
    n = len(real_means)
    d_loss = (sum(math.log1p(math.exp(-l)) for l in lr_) + sum(math.log1p(math.exp(l)) for l in lf)) / n
    grad_v = (sum(-sigmoid(-l) * m for l, m in zip(lr_, real_means))
              + sum(sigmoid(l) * m for l, m in zip(lf, fake_means))) / n
    grad_b = (sum(-sigmoid(-l) for l in lr_) + sum(sigmoid(l) for l in lf)) / n
    v, b = v - lr * grad_v, b - lr * grad_b
    lf = [v * m + b for m in fake_means]
    if loss == "non_saturating":
        g_loss = sum(math.log1p(math.exp(-l)) for l in lf) / n
        grad_g = sum(-sigmoid(-l) * v * m for l, m in zip(lf, z_means)) / n
    else:
        g_loss = -sum(math.log1p(math.exp(l)) for l in lf) / n
        grad_g = -sum(sigmoid(l) * v * m for l, m in zip(lf, z_means)) / n
    return d_loss, g_loss, g - lr * grad_g, v, b


@pytest.mark.parametrize("loss", ["non_saturating", "minimax"])
@pytest.mark.parametrize("amp", [None, MixedPrecision("cpu", "fp32")])
def test_train_step_wiring(loss, amp):
    g, v, b, lr = 2.0, 3.0, -5.0, 0.1
    real = torch.tensor([7.0, 11.0]).view(2, 1, 1, 1) / 13  # per-sample means 7/13 and 11/13
    z = torch.tensor([[17.0, 19.0], [23.0, 29.0]]).view(2, 1, 1, 2) / 31
    G, D = ScaleG(g), LinearD(v, b)
    for p in [*G.parameters(), *D.parameters()]:
        p.grad = torch.full_like(p, 37.0)  # stale gradients must not leak into the step
    opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=lr), torch.optim.SGD(D.parameters(), lr=lr)
    losses = train_step(G, D, opt_g, opt_d, real, z, loss=loss, amp=amp)
    d_loss, g_loss, g_new, v_new, b_new = reference(
        g, v, b, [7 / 13, 11 / 13], [(17 + 19) / 62, (23 + 29) / 62], lr, loss)
    assert set(losses) == {"d_loss", "g_loss"} and all(isinstance(x, float) for x in losses.values())
    assert losses["d_loss"] == pytest.approx(d_loss, rel=1e-5)
    assert losses["g_loss"] == pytest.approx(g_loss, rel=1e-5)
    assert D.v.item() == pytest.approx(v_new, rel=1e-5) and D.b.item() == pytest.approx(b_new, rel=1e-5)
    assert G.g.item() == pytest.approx(g_new, rel=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_few_real_training_steps(precision):
    torch.manual_seed(0)
    G, D = Generator(z_dim=8, ngf=4, channels=1, image_size=16), Discriminator(ndf=4, channels=1, image_size=16)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    before_g, before_d = [p.clone() for p in G.parameters()], [p.clone() for p in D.parameters()]
    amp = MixedPrecision("cpu", precision)
    for _ in range(3):
        real = torch.rand(6, 1, 16, 16) * 2 - 1
        losses = train_step(G, D, opt_g, opt_d, real, torch.randn(6, 8), amp=amp)
        assert all(math.isfinite(x) for x in losses.values())
    assert all(not torch.equal(a, b) for a, b in zip(before_g, G.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, D.parameters()))


# --- config ------------------------------------------------------------------------------------
def test_config_defaults_and_overrides():
    c = DCGANConfig()
    assert (c.z_dim, c.ngf, c.ndf, c.image_size, c.channels) == (100, 64, 64, 64, 3)
    assert (c.lr, c.betas, c.batch_size) == (2e-4, (0.5, 0.999), 128)
    assert (c.loss, c.init_std) == ("non_saturating", 0.02)
    c2 = c.override(["lr=1e-4", "betas=0.5,0.99", "loss=minimax", "image-size=32", "epochs=3"])
    assert (c2.lr, c2.betas, c2.loss, c2.image_size, c2.epochs) == (1e-4, (0.5, 0.99), "minimax", 32, 3)
    assert DCGANConfig.from_dict(json.loads(json.dumps(vars(c2)))) == c2, "a config.json round trip"
    for bad in (["nope=1"], ["epochs=two"], ["loss=wasserstein"], ["image_size=48"], ["lr"]):
        with pytest.raises(ValueError):
            c.override(bad)


# --- the recipe and the command line, on fake MNIST ----------------------------------------------
@pytest.fixture
def fake_data(monkeypatch, tmp_path):
    """Stand-in for gankit.data: random 'digits' in a TensorDataset, no files, no network."""
    module = types.ModuleType("gankit.data")
    calls = []

    def MNISTIdx(root_dir, split="train", image_size=32):  # noqa: N802 (mimics the class)
        calls.append((str(root_dir), split, image_size))
        rng = torch.Generator().manual_seed(0)
        return TensorDataset(torch.rand(40, 1, image_size, image_size, generator=rng) * 2 - 1, torch.zeros(40))

    def prepare(name, data_dir, smoke=False, seed=0):
        calls.append((name, data_dir, smoke, seed))
        return tmp_path / "mnist"

    module.MNISTIdx, module.prepare = MNISTIdx, prepare
    monkeypatch.setitem(sys.modules, "gankit.data", module)
    return calls


def test_train_dcgan_smoke_and_resume(fake_data, tmp_path):
    run = tmp_path / "run"
    trainer = train_dcgan({"loss": "minimax"}, tmp_path / "mnist", run, "cpu", smoke=True, progress=False)
    assert trainer.result.step == 8 and trainer.result.stopped_by is None
    assert fake_data == [(str(tmp_path / "mnist"), "train", 32)]
    config = json.loads((run / "config.json").read_text())
    assert (config["channels"], config["image_size"], config["loss"]) == (1, 32, "minimax")
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_000004.png", "step_000008.png"]
    assert (run / "checkpoints" / "last.pt").exists()
    assert trainer.models["G"](torch.randn(2, 100)).shape == (2, 1, 32, 32)
    again = train_dcgan({"loss": "minimax", "max_steps": 10}, tmp_path / "mnist", run, "cpu", smoke=True,
                        progress=False)
    assert again.result.step == 10
    rows = (run / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,d_loss,g_loss" and len(rows) == 11


def _parse(argv):
    from gankit.train_cli import add_parser

    parser = argparse.ArgumentParser(prog="gankit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli(fake_data, tmp_path, capsys):
    args = _parse(["train", "dcgan", "--data-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "r"),
                   "--device", "cpu", "--epochs", "2", "--smoke", "--no-progress", "--set", "lr=1e-3",
                   "--set", "seed=5"])
    assert args.resume is True and args.overrides == ["lr=1e-3", "seed=5"]
    assert args.func(args) == 0
    assert fake_data[0] == ("mnist", str(tmp_path / "cache"), True, 5)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (config["lr"], config["epochs"], config["seed"]) == (1e-3, 2, 5)
    assert "step 4, epoch 2" in capsys.readouterr().out  # 40 samples: 2 batches of 16 per epoch
    assert _parse(["train", "dcgan", "--no-resume"]).resume is False
    bad = _parse(["train", "dcgan", "--set", "nope=1"])
    assert bad.func(bad) == 2 and "nope" in capsys.readouterr().err
