"""gankit.models.cyclegan: networks, official key layout and checkpoint loading, losses, image pool, lr rule.

The reference facts come from junyanz/pytorch-CycleGAN-and-pix2pix: models/networks.py
(ResnetGenerator, ResnetBlock, NLayerDiscriminator, get_norm_layer, init_weights, get_scheduler),
models/cycle_gan_model.py (backward_D_basic, backward_G), util/image_pool.py and
models/base_model.py (load_networks, __patch_instance_norm_state_dict).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gankit.models.cyclegan import (
    CycleGANConfig,
    ImagePool,
    PatchDiscriminator,
    ResnetBlock,
    ResnetGenerator,
    build_models,
    cycle_consistency_loss,
    discriminator_loss,
    generator_adversarial_loss,
    generator_loss,
    identity_loss,
    init_weights,
    linear_decay_lambda,
    load_official_state_dict,
    lsgan_loss,
    set_requires_grad,
)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(c_in: int, c_out: int, k: int) -> int:
    """Parameters of a k x k (transposed) convolution with bias."""
    return c_in * c_out * k * k + c_out


def generator_params(input_nc=3, output_nc=3, ngf=64, n_blocks=9) -> int:
    total = conv(input_nc, ngf, 7) + conv(ngf, 2 * ngf, 3) + conv(2 * ngf, 4 * ngf, 3)  # stem, downsamples
    total += n_blocks * 2 * conv(4 * ngf, 4 * ngf, 3)                                   # two convs per block
    return total + conv(4 * ngf, 2 * ngf, 3) + conv(2 * ngf, ngf, 3) + conv(ngf, output_nc, 7)


def discriminator_params(input_nc=3, ndf=64, n_layers=3) -> int:
    widths = [ndf * min(2**n, 8) for n in range(n_layers + 1)]  # 64, 128, 256, 512
    total = conv(input_nc, widths[0], 4) + sum(conv(a, b, 4) for a, b in zip(widths, widths[1:]))
    return total + conv(widths[-1], 1, 4)


# --- the official structure, written from models/networks.py, independently of gankit's code -----
def official_generator_layout(input_nc=3, output_nc=3, ngf=64, n_blocks=9, use_dropout=False):
    """(key, shape) in state_dict order, walking ResnetGenerator.__init__'s `model` list index by index."""
    layers = ["pad", ("conv", input_nc, ngf, 7), "norm", "relu"]
    for i in range(2):  # n_downsampling = 2
        mult = 2**i
        layers += [("conv", ngf * mult, ngf * mult * 2, 3), "norm", "relu"]
    layers += [("block", ngf * 4)] * n_blocks
    for i in range(2):
        mult = 2 ** (2 - i)
        layers += [("convT", ngf * mult, ngf * mult // 2, 3), "norm", "relu"]
    layers += ["pad", ("conv", ngf, output_nc, 7), "tanh"]
    keys = []
    for index, layer in enumerate(layers):
        if layer[0] == "conv":
            _, c_in, c_out, k = layer
            keys += [(f"model.{index}.weight", (c_out, c_in, k, k)), (f"model.{index}.bias", (c_out,))]
        elif layer[0] == "convT":  # ConvTranspose2d weights are (in, out, k, k)
            _, c_in, c_out, k = layer
            keys += [(f"model.{index}.weight", (c_in, c_out, k, k)), (f"model.{index}.bias", (c_out,))]
        elif layer[0] == "block":  # conv_block: pad, conv, norm, relu, [dropout], pad, conv, norm
            dim = layer[1]
            for j in (1, 6 if use_dropout else 5):
                keys += [(f"model.{index}.conv_block.{j}.weight", (dim, dim, 3, 3)),
                         (f"model.{index}.conv_block.{j}.bias", (dim,))]
    return keys


def official_discriminator_layout(input_nc=3, ndf=64, n_layers=3):
    """NLayerDiscriminator's `sequence`: conv, lrelu, then (conv, norm, lrelu) x n_layers, then conv."""
    widths = [input_nc] + [ndf * min(2**n, 8) for n in range(n_layers + 1)] + [1]
    indices = [0] + [2 + 3 * i for i in range(n_layers + 1)]
    keys = []
    for index, c_in, c_out in zip(indices, widths, widths[1:]):
        keys += [(f"model.{index}.weight", (c_out, c_in, 4, 4)), (f"model.{index}.bias", (c_out,))]
    return keys


def layout(module: nn.Module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


# --- networks -------------------------------------------------------------------------------
def test_parameter_counts_are_the_official_ones():
    assert generator_params() == 11_378_179 and generator_params(n_blocks=6) == 7_837_699
    assert discriminator_params() == 2_764_737
    assert count(ResnetGenerator()) == 11_378_179
    assert count(ResnetGenerator(n_blocks=6)) == 7_837_699
    assert count(PatchDiscriminator()) == 2_764_737
    assert count(ResnetGenerator(1, 2, ngf=8, n_blocks=3)) == generator_params(1, 2, 8, 3)
    assert count(PatchDiscriminator(2, ndf=8, n_layers=5)) == discriminator_params(2, 8, 5)  # widths cap at 8ndf


def test_state_dict_keys_and_shapes_are_the_official_ones():
    expected = official_generator_layout()
    assert expected[:2] == [("model.1.weight", (64, 3, 7, 7)), ("model.1.bias", (64,))]
    assert ("model.10.conv_block.1.weight", (256, 256, 3, 3)) in expected
    assert expected[-2:] == [("model.26.weight", (3, 64, 7, 7)), ("model.26.bias", (3,))]
    assert layout(ResnetGenerator()) == expected
    assert layout(ResnetGenerator(n_blocks=6)) == official_generator_layout(n_blocks=6)
    assert layout(ResnetGenerator(1, 2, 8, 2, use_dropout=True)) == official_generator_layout(1, 2, 8, 2, True)
    assert layout(PatchDiscriminator()) == official_discriminator_layout()
    assert [k for k, _ in official_discriminator_layout()][::2] == [f"model.{i}.weight" for i in (0, 2, 5, 8, 11)]
    assert layout(PatchDiscriminator(1, 8, 2)) == official_discriminator_layout(1, 8, 2)


def test_instance_norm_is_the_official_one_and_blocks_are_residual():
    g = ResnetGenerator(ngf=8, n_blocks=1)
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
    assert all(m.bias is not None for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    assert isinstance(g.model[4], nn.Conv2d) and g.model[4].stride == (2, 2)
    assert g.model[11].output_padding == (1, 1) and isinstance(g.model[0], nn.ReflectionPad2d)
    block = ResnetBlock(4)
    for p in block.parameters():
        nn.init.zeros_(p)  # conv_block(x) is then 0: the block is the identity
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(block(x), x)


def test_patch_map_and_generator_shapes():
    assert PatchDiscriminator()(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert PatchDiscriminator(1, 8)(torch.randn(2, 1, 64, 96)).shape == (2, 1, 6, 10)
    g = init_weights(ResnetGenerator(ngf=8, n_blocks=2), gain=1.0)  # large weights: tanh saturates
    for size in [(16, 16), (20, 28), (36, 12)]:  # any multiple of 4 works, as in the official code
        x = torch.randn(2, 3, *size) * 10
        y = g(x)
        assert y.shape == x.shape
        assert y.abs().max() <= 1.0 and y.abs().max() > 0.99
    with pytest.raises(ValueError, match="multiples of 4"):
        g(torch.randn(1, 3, 30, 32))


def test_init_weights_is_the_official_normal_init():
    torch.manual_seed(0)
    g = init_weights(ResnetGenerator(ngf=16, n_blocks=2), gain=0.02)
    weights = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    biases = torch.cat([m.bias for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert torch.count_nonzero(biases) == 0
    torch.manual_seed(0)
    again = init_weights(ResnetGenerator(ngf=16, n_blocks=2))
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), again.state_dict().values()))


def test_build_models_directions_and_init():
    config = CycleGANConfig(input_nc=1, output_nc=3, ngf=8, ndf=8, n_blocks=2, lambda_identity=0, init_gain=0.05)
    models = build_models(config)
    assert sorted(models) == ["D_A", "D_B", "G_A", "G_B"]
    a, b = torch.randn(1, 1, 32, 32), torch.randn(1, 3, 32, 32)
    assert models["G_A"](a).shape == b.shape and models["G_B"](b).shape == a.shape  # G_A: A -> B
    assert models["D_A"](b).shape == (1, 1, 2, 2) and models["D_B"](a).shape == (1, 1, 2, 2)  # D_A judges B
    first = models["D_A"].model[0]
    assert first.in_channels == 3 and torch.count_nonzero(first.bias) == 0
    assert 0.03 < models["G_A"].model[7].weight.std().item() < 0.07


# --- loading official checkpoints ----------------------------------------------------------------
def old_style_checkpoint(net: nn.Module) -> dict:
    """What a DataParallel save from PyTorch < 0.4 looks like: `module.` keys and InstanceNorm stats."""
    state = {}
    for key, value in net.state_dict().items():
        state["module." + key] = value.clone()
    for name, m in net.named_modules():
        if isinstance(m, nn.InstanceNorm2d):
            state[f"module.{name}.running_mean"] = torch.zeros(m.num_features)
            state[f"module.{name}.running_var"] = torch.ones(m.num_features)
            state[f"module.{name}.num_batches_tracked"] = torch.tensor(0)
    return state


def test_load_official_state_dict_patches_old_checkpoints(tmp_path):
    torch.manual_seed(1)
    source = init_weights(ResnetGenerator(ngf=8, n_blocks=2))
    state = old_style_checkpoint(source)
    assert "module.model.2.running_mean" in state and "module.model.10.conv_block.2.running_var" in state
    n_keys = len(state)
    net = ResnetGenerator(ngf=8, n_blocks=2)
    assert load_official_state_dict(net, state) is net
    assert len(state) == n_keys  # the caller's dict is left alone
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values()))
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(state, path)
    wrapped = nn.DataParallel(ResnetGenerator(ngf=8, n_blocks=2))  # loads into the wrapped module
    load_official_state_dict(wrapped, path)
    assert torch.equal(wrapped.module.model[1].weight, source.model[1].weight)
    d_source = PatchDiscriminator(ndf=8)
    d = load_official_state_dict(PatchDiscriminator(ndf=8), old_style_checkpoint(d_source))
    assert torch.equal(d.model[8].weight, d_source.model[8].weight)


def test_load_official_state_dict_rejects_other_architectures(tmp_path):
    path = tmp_path / "horse2zebra.pth"
    torch.save(ResnetGenerator(ngf=8, n_blocks=6).state_dict(), path)
    with pytest.raises(ValueError) as error:
        load_official_state_dict(ResnetGenerator(ngf=8, n_blocks=9), path)
    message = str(error.value)
    assert "horse2zebra.pth" in message and "n_blocks" in message and "n_blocks=9" in message
    assert "model.16" in message  # the first block the 6-block checkpoint lacks
    with pytest.raises(ValueError, match=r"model\.1\.weight: checkpoint \(8, 3, 7, 7\) vs model \(16, 3, 7, 7\)"):
        load_official_state_dict(ResnetGenerator(ngf=16, n_blocks=6), path)
    with pytest.raises(ValueError, match="unexpected"):
        load_official_state_dict(ResnetGenerator(ngf=8, n_blocks=3), path)


# --- losses --------------------------------------------------------------------------------------
def test_lsgan_cycle_and_identity_losses_are_the_closed_forms():
    p = torch.randn(2, 1, 5, 5)
    assert torch.allclose(lsgan_loss(p, True), ((p - 1) ** 2).mean())
    assert torch.allclose(lsgan_loss(p, False), (p**2).mean())
    assert torch.allclose(lsgan_loss(p, True), nn.MSELoss()(p, torch.tensor(1.0).expand_as(p)))  # official GANLoss
    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.allclose(cycle_consistency_loss(x, y), (x - y).abs().mean())
    assert torch.allclose(identity_loss(x, y), nn.L1Loss()(x, y))


class Offset(nn.Module):
    """A mock discriminator: the first channel plus a prime, a (B, 1, H, W) map."""

    def __init__(self, prime: float) -> None:
        super().__init__()
        self.prime = prime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.prime


class Times(nn.Module):
    """A mock generator multiplying by a prime."""

    def __init__(self, prime: float) -> None:
        super().__init__()
        self.prime = prime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.prime


def test_discriminator_loss_halves_and_detaches():
    real = torch.full((2, 3, 4, 4), 3.0)
    fake = torch.full((2, 3, 4, 4), 5.0, requires_grad=True)
    loss = discriminator_loss(Offset(0.0), real, fake)
    assert loss.item() == pytest.approx(0.5 * ((3 - 1) ** 2 + 5**2))  # 14.5
    assert not loss.requires_grad and fake.grad is None  # fake.detach(): no gradient reaches G
    D = PatchDiscriminator(ndf=4)
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    expected = 0.5 * (F.mse_loss(D(real), torch.ones(2, 1, 2, 2)) + F.mse_loss(D(fake), torch.zeros(2, 1, 2, 2)))
    assert torch.allclose(discriminator_loss(D, real, fake), expected)
    assert generator_adversarial_loss(Offset(7.0), torch.zeros(1, 3, 2, 2)).item() == pytest.approx(36.0)


def test_generator_loss_matches_the_official_backward_G_by_hand():
    G_A, G_B, D_A, D_B = Times(2.0), Times(3.0), Offset(5.0), Offset(7.0)
    a, b = 1.0, 5.0
    real_A, real_B = torch.full((2, 3, 4, 4), a), torch.full((2, 3, 4, 4), b)
    config = CycleGANConfig(lambda_A=11.0, lambda_B=13.0, lambda_identity=0.5)
    # cycle_gan_model.py: fake_B = G_A(A) = 2, rec_A = G_B(fake_B) = 6, fake_A = G_B(B) = 15, rec_B = 30.
    loss_G_A = (2 * a + 5 - 1) ** 2                      # D_A(fake_B) = 7 -> 36
    loss_G_B = (3 * b + 7 - 1) ** 2                      # D_B(fake_A) = 22 -> 441
    cycle_A = 11 * abs(6 * a - a)                        # lambda_A * |rec_A - A| = 55
    cycle_B = 13 * abs(6 * b - b)                        # lambda_B * |rec_B - B| = 325
    idt_A = abs(2 * b - b) * 13 * 0.5                    # ||G_A(B) - B|| * lambda_B * lambda_idt = 32.5
    idt_B = abs(3 * a - a) * 11 * 0.5                    # ||G_B(A) - A|| * lambda_A * lambda_idt = 11
    total, parts, fakes = generator_loss(G_A, G_B, D_A, D_B, real_A, real_B, config)
    assert total.item() == pytest.approx(loss_G_A + loss_G_B + cycle_A + cycle_B + idt_A + idt_B)  # 900.5
    assert {k: pytest.approx(v.item()) for k, v in parts.items()} == {
        "G_A": loss_G_A, "G_B": loss_G_B, "cycle_A": cycle_A, "cycle_B": cycle_B, "idt_A": idt_A, "idt_B": idt_B}
    assert sorted(fakes) == ["fake_A", "fake_B", "idt_A", "idt_B", "rec_A", "rec_B"]
    assert fakes["fake_B"][0, 0, 0, 0].item() == 2 * a and fakes["idt_B"][0, 0, 0, 0].item() == 3 * a

    total, parts, fakes = generator_loss(G_A, G_B, D_A, D_B, real_A, real_B, config.override(["lambda_identity=0"]))
    assert total.item() == pytest.approx(loss_G_A + loss_G_B + cycle_A + cycle_B)  # 857
    assert parts["idt_A"].item() == 0 and parts["idt_B"].item() == 0 and "idt_A" not in fakes


def test_generator_loss_trains_the_generators_with_frozen_discriminators():
    models = build_models(CycleGANConfig(ngf=4, ndf=4, n_blocks=1))
    set_requires_grad([models["D_A"], models["D_B"]], False)
    total, parts, fakes = generator_loss(models["G_A"], models["G_B"], models["D_A"], models["D_B"],
                                        torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1)
    assert torch.allclose(total, sum(parts.values()))
    total.backward()
    assert all(p.grad is not None for p in models["G_A"].parameters())
    assert all(p.grad is None for p in models["D_A"].parameters())
    set_requires_grad(models["D_A"], True)
    assert all(p.requires_grad for p in models["D_A"].parameters())


# --- image pool ----------------------------------------------------------------------------------
def ids(batch: torch.Tensor) -> list[int]:
    """Each test image is constant: its value is its id."""
    return [int(image[0, 0, 0]) for image in batch]


def numbered(start: int, n: int) -> torch.Tensor:
    return torch.arange(start, start + n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 3, 2, 2).clone()


def test_pool_size_zero_passes_through():
    images = torch.randn(3, 3, 4, 4, requires_grad=True)
    assert ImagePool(0).query(images) is images


def test_pool_fills_first_then_swaps_from_the_stored_set():
    pool = ImagePool(4, generator=torch.Generator().manual_seed(0))
    first = numbered(0, 3).requires_grad_()
    out = pool(first)
    assert ids(out) == [0, 1, 2] and not out.requires_grad
    assert ids(pool(numbered(3, 1))) == [3] and ids(torch.stack(pool.images)) == [0, 1, 2, 3]
    stored, swaps = set(range(4)), 0
    for step in range(200):
        new = 4 + step
        [got] = ids(pool(numbered(new, 1)))
        assert got == new or got in stored
        if got != new:  # a swap: the returned one left the pool and the new one took its place
            swaps += 1
            stored = (stored - {got}) | {new}
        assert set(ids(torch.stack(pool.images))) == stored and len(pool.images) == 4
    assert 70 < swaps < 130  # probability 1/2


def test_pool_is_reproducible_with_a_seeded_generator():
    def run(seed: int) -> list[int]:
        pool = ImagePool(5, generator=torch.Generator().manual_seed(seed))
        return sum((ids(pool(numbered(4 * i, 4))) for i in range(30)), [])
    assert run(0) == run(0)
    assert run(0) != run(1)
    torch.manual_seed(3)
    global_a = ids(ImagePool(2)(numbered(0, 40)))
    torch.manual_seed(3)
    assert ids(ImagePool(2)(numbered(0, 40))) == global_a  # generator=None: the global torch RNG


def test_pool_never_aliases_stored_images():
    pool = ImagePool(2, generator=torch.Generator().manual_seed(0))
    batch = numbered(0, 2)
    out = pool(batch)
    batch.fill_(-1)  # the caller reuses its buffer
    out.fill_(-2)    # or writes into what it got back
    assert ids(torch.stack(pool.images)) == [0, 1]
    pointers = {t.data_ptr() for t in pool.images}
    returned = []
    for i in range(20):
        got = pool(numbered(2 + i, 1))
        assert got.data_ptr() not in pointers
        returned.append((got, got.clone()))
        pointers = {t.data_ptr() for t in pool.images}
    assert all(torch.equal(got, copy) for got, copy in returned)  # later swaps never changed earlier results


# --- learning-rate rule --------------------------------------------------------------------------
def official_lambda_rule(epoch, n_epochs, n_epochs_decay, epoch_count):
    # models/networks.py, get_scheduler, lr_policy == 'linear':
    #   lr_l = 1.0 - max(0, epoch + opt.epoch_count - opt.n_epochs) / float(opt.n_epochs_decay + 1)
    return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)


@pytest.mark.parametrize("n_epochs, n_epochs_decay, epoch_count", [(100, 100, 1), (100, 100, 51), (3, 5, 1)])
def test_linear_decay_lambda_is_the_official_rule(n_epochs, n_epochs_decay, epoch_count):
    rule = linear_decay_lambda(n_epochs, n_epochs_decay, epoch_count)
    for epoch in [0, 1, 2, 3, 49, 50, 98, 99, 100, 101, 150, 199, 200]:
        assert rule(epoch) == official_lambda_rule(epoch, n_epochs, n_epochs_decay, epoch_count)


def test_linear_decay_lambda_in_lambda_lr():
    rule = linear_decay_lambda()
    assert rule(0) == rule(99) == 1.0 and rule(100) == pytest.approx(1 - 1 / 101)
    assert rule(199) == pytest.approx(1 / 101) and rule(200) == 0.0
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=2e-4, betas=CycleGANConfig().betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, rule)
    for _ in range(150):
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4 * (1 - 51 / 101))


# --- config --------------------------------------------------------------------------------------
def test_config_defaults_are_the_papers_and_override_parses():
    c = CycleGANConfig()
    assert (c.ngf, c.ndf, c.n_blocks, c.n_layers_D) == (64, 64, 9, 3)
    assert (c.lambda_A, c.lambda_B, c.lambda_identity, c.pool_size) == (10.0, 10.0, 0.5, 50)
    assert (c.lr, c.betas, c.n_epochs, c.n_epochs_decay, c.batch_size) == (2e-4, (0.5, 0.999), 100, 100, 1)
    assert (c.load_size, c.crop_size, c.no_flip, c.gan_mode, c.init_gain) == (286, 256, False, "lsgan", 0.02)
    changed = c.override(["n-blocks=6", "lambda_A=5", "no_flip=true", "beta1=0.9"])
    assert (changed.n_blocks, changed.lambda_A, changed.no_flip, changed.betas) == (6, 5.0, True, (0.9, 0.999))
    assert c.n_blocks == 9  # a copy
    assert CycleGANConfig.from_dict({"pool_size": 0, "crop_size": "128", "load_size": 143}).crop_size == 128
    with pytest.raises(ValueError, match="unknown CycleGAN setting"):
        CycleGANConfig.from_dict({"lambda_C": 1})
    with pytest.raises(ValueError, match="gan_mode"):
        CycleGANConfig(gan_mode="vanilla")
    with pytest.raises(ValueError, match="multiple of 4"):
        c.override(["crop_size=250"])
    with pytest.raises(ValueError, match="identity"):
        CycleGANConfig(input_nc=1)
