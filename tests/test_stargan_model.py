"""gankit.models.stargan: networks, official key layout and checkpoint loading, losses, labels, lr rule.

The reference facts come from yunjey/stargan: model.py (ResidualBlock, Generator, Discriminator),
solver.py (gradient_penalty, classification_loss, label2onehot, create_labels, train: the D and G
objectives, rand_idx, the lr decay) and main.py (the defaults). Helpers below are written from those
files, independently of gankit's code.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gankit.models.stargan import (
    Discriminator,
    Generator,
    ResidualBlock,
    StarGANConfig,
    build_models,
    classification_loss,
    create_labels,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    label2onehot,
    load_official_state_dict,
    lr_at,
    random_target_labels,
)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def norm(c: int) -> int:
    return 2 * c  # InstanceNorm2d(affine=True): weight and bias; running stats are buffers


def generator_params(conv_dim=64, c_dim=5, repeat_num=6) -> int:
    d = conv_dim
    total = conv(3 + c_dim, d, 7, False) + norm(d)                                     # stem
    total += conv(d, 2 * d, 4, False) + norm(2 * d) + conv(2 * d, 4 * d, 4, False) + norm(4 * d)
    total += repeat_num * 2 * (conv(4 * d, 4 * d, 3, False) + norm(4 * d))             # residual blocks
    total += conv(4 * d, 2 * d, 4, False) + norm(2 * d) + conv(2 * d, d, 4, False) + norm(d)
    return total + conv(d, 3, 7, False)


def discriminator_params(image_size=128, conv_dim=64, c_dim=5, repeat_num=6) -> int:
    widths = [conv_dim * 2**i for i in range(repeat_num)]  # 64 ... 2048
    total = conv(3, widths[0], 4, True) + sum(conv(a, b, 4, True) for a, b in zip(widths, widths[1:]))
    return total + conv(widths[-1], 1, 3, False) + conv(widths[-1], c_dim, image_size // 2**repeat_num, False)


def official_generator_layout(conv_dim=64, c_dim=5, repeat_num=6):
    """(key, shape) in state_dict order, walking model.Generator.__init__'s `layers` list."""
    d = conv_dim
    layers = [("conv", 3 + c_dim, d, 7), ("norm", d), "relu"]
    for _ in range(2):
        layers += [("conv", d, 2 * d, 4), ("norm", 2 * d), "relu"]
        d *= 2
    layers += [("block", d)] * repeat_num
    for _ in range(2):
        layers += [("convT", d, d // 2, 4), ("norm", d // 2), "relu"]
        d //= 2
    layers += [("conv", d, 3, 7), "tanh"]

    def entries(prefix, layer):
        if layer[0] == "conv":
            return [(f"{prefix}.weight", (layer[2], layer[1], layer[3], layer[3]))]
        if layer[0] == "convT":  # ConvTranspose2d weights are (in, out, k, k)
            return [(f"{prefix}.weight", (layer[1], layer[2], layer[3], layer[3]))]
        if layer[0] == "norm":
            c = layer[1]
            return [(f"{prefix}.{n}", (c,)) for n in ("weight", "bias", "running_mean", "running_var")] + [
                (f"{prefix}.num_batches_tracked", ())]
        if layer[0] == "block":  # ResidualBlock.main: conv, IN, ReLU, conv, IN
            c = layer[1]
            return (entries(f"{prefix}.main.0", ("conv", c, c, 3)) + entries(f"{prefix}.main.1", ("norm", c))
                    + entries(f"{prefix}.main.3", ("conv", c, c, 3)) + entries(f"{prefix}.main.4", ("norm", c)))
        return []  # relu, tanh

    return [e for i, layer in enumerate(layers) for e in entries(f"main.{i}", layer)]


def official_discriminator_layout(image_size=128, conv_dim=64, c_dim=5, repeat_num=6):
    keys, c_in, c_out = [], 3, conv_dim
    for i in range(repeat_num):  # main: conv, LeakyReLU, conv, LeakyReLU, ...
        keys += [(f"main.{2 * i}.weight", (c_out, c_in, 4, 4)), (f"main.{2 * i}.bias", (c_out,))]
        c_in, c_out = c_out, c_out * 2
    k = image_size // 2**repeat_num
    return keys + [("conv1.weight", (1, c_in, 3, 3)), ("conv2.weight", (c_dim, c_in, k, k))]


def layout(net: nn.Module):
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


@pytest.fixture(scope="module")
def official_nets():
    torch.manual_seed(0)
    return build_models(StarGANConfig())


# --- networks --------------------------------------------------------------------------------------
def test_parameter_counts_match_the_official_print(official_nets):
    assert generator_params() == 8_430_528 == count(official_nets["G"])
    assert discriminator_params() == 44_762_048 == count(official_nets["D"])
    for args in [(8, 3, 1), (16, 7, 2)]:
        assert count(Generator(*args)) == generator_params(*args)
    assert count(Discriminator(32, 8, 4, 3)) == discriminator_params(32, 8, 4, 3)


def test_state_dict_keys_and_shapes_are_the_official_ones(official_nets):
    assert layout(official_nets["G"]) == official_generator_layout()
    assert layout(official_nets["D"]) == official_discriminator_layout()
    assert layout(Discriminator(256)) [-1] == ("conv2.weight", (5, 2048, 4, 4))  # the 256x256 release
    assert layout(Generator(8, 3, 2)) == official_generator_layout(8, 3, 2)


def test_layer_settings_are_the_official_ones(official_nets):
    G, D = official_nets["G"], official_nets["D"]
    norms = [m for m in G.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 5 + 2 * 6 and all(m.affine and m.track_running_stats for m in norms)
    assert all(m.bias is None for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    assert isinstance(G.main[9], ResidualBlock) and isinstance(G.main[-1], nn.Tanh)
    assert not any(isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) for m in D.modules())
    assert {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)} == {0.01}
    assert D.conv1.bias is None and D.conv2.bias is None and D.main[0].bias is not None


def test_generator_tiles_the_label_and_keeps_the_size():
    torch.manual_seed(0)
    G = Generator(conv_dim=8, c_dim=3, repeat_num=1)
    x, c = torch.rand(2, 3, 16, 12) * 2 - 1, torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    y = G(x, c)
    assert y.shape == x.shape and y.abs().max() <= 1
    tiled = c[:, :, None, None].repeat(1, 1, 16, 12)
    torch.testing.assert_close(y, G.main(torch.cat([x, tiled], 1)))
    assert not torch.allclose(y, G(x, 1 - c))  # the label matters
    with pytest.raises(ValueError, match="multiples of 4"):
        G(torch.zeros(1, 3, 10, 12), c[:1])
    with pytest.raises(ValueError, match="c_dim"):
        G(x, torch.zeros(2, 4))


def test_discriminator_output_shapes(official_nets):
    with torch.no_grad():
        src, cls = official_nets["D"](torch.randn(2, 3, 128, 128))
    assert src.shape == (2, 1, 2, 2) and cls.shape == (2, 5)
    src, cls = Discriminator(32, 8, 4, 3)(torch.randn(3, 3, 32, 32))
    assert src.shape == (3, 1, 4, 4) and cls.shape == (3, 4)


# --- checkpoints -----------------------------------------------------------------------------------
def scrambled(net: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.full_like(v, 7))
            for k, v in net.state_dict().items()}


def test_load_official_state_dict_strips_module_prefix(tmp_path):
    state = scrambled(Generator(8, 3, 1))
    path = tmp_path / "200000-G.ckpt"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    G = load_official_state_dict(Generator(8, 3, 1), path)
    for k, v in G.state_dict().items():
        assert torch.equal(v, state[k]), k
    D_state = scrambled(Discriminator(32, 8, 3, 3))
    D = load_official_state_dict(Discriminator(32, 8, 3, 3), D_state)
    assert torch.equal(D.conv2.weight, D_state["conv2.weight"])


def test_load_accepts_saves_without_num_batches_tracked():
    state = {k: v for k, v in scrambled(Generator(8, 3, 1)).items() if not k.endswith("num_batches_tracked")}
    G = load_official_state_dict(Generator(8, 3, 1), state)
    assert int(G.main[1].num_batches_tracked) == 0
    assert torch.equal(G.main[1].running_var, state["main.1.running_var"])


def test_load_reports_mismatches_clearly(tmp_path):
    path = tmp_path / "200000-G.ckpt"
    torch.save(Generator(8, 5, 1).state_dict(), path)
    with pytest.raises(ValueError, match=r"200000-G\.ckpt.*main\.0\.weight: checkpoint \(8, 8, 7, 7\) vs model "
                                         r"\(8, 11, 7, 7\).*c_dim"):
        load_official_state_dict(Generator(8, 8, 1), path)
    with pytest.raises(ValueError, match=r"conv2\.weight.*image_size"):
        load_official_state_dict(Discriminator(64, 8, 3, 3), Discriminator(32, 8, 3, 3).state_dict())
    with pytest.raises(ValueError, match=r"missing main\.10\.weight.* in all\).*repeat_num"):
        load_official_state_dict(Generator(8, 5, 1), Generator(8, 5, 2).state_dict())


# --- gradient penalty ------------------------------------------------------------------------------
class LinearCritic(nn.Module):
    """D(x) = <w, x> + b on the flattened image: its gradient is w everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w.clone()), nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.view(-1, 1) + self.b  # (B, 1)


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    w = torch.randn(48)
    gp = gradient_penalty(LinearCritic(w), real, fake)
    assert gp.dtype == torch.float32 and gp.dim() == 0
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-6)
    assert gradient_penalty(LinearCritic(w / w.norm()), real, fake).item() == pytest.approx(0, abs=1e-6)


def test_gradient_penalty_stays_fp32_inside_autocast():
    torch.manual_seed(0)
    w = torch.randn(48) * 0.37
    real, fake = torch.randn(4, 3, 4, 4).bfloat16(), torch.randn(4, 3, 4, 4).bfloat16()
    closed_form = (w.double().norm().item() - 1) ** 2
    critic = LinearCritic(w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(critic, real, fake)
        # What an unguarded computation would give: bf16 is visibly off, so the check below can fail.
        x = real.float().requires_grad_(True)
        grad, = torch.autograd.grad(critic(x).sum(), x)
    assert abs(((grad.float().flatten(1).norm(dim=1) - 1) ** 2).mean().item() - closed_form) > 1e-4
    assert gp.dtype == torch.float32
    assert gp.item() == pytest.approx(closed_form, rel=1e-5)


def test_gradient_penalty_is_differentiable_wrt_the_critic():
    torch.manual_seed(0)
    w = torch.randn(48)
    critic = LinearCritic(w)
    gradient_penalty(critic, torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)).backward()
    n = w.norm()
    torch.testing.assert_close(critic.w.grad, 2 * (n - 1) * w / n)  # d/dw (|w| - 1)^2


def test_gradient_penalty_mixes_per_sample_with_the_given_generator():
    real, fake = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    critic = lambda x: (0.5 * x.pow(2).flatten(1).sum(1), None)  # gradient at x^ is x^ itself; tuple like D
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    alpha = torch.rand((3, 1, 1, 1), generator=torch.Generator().manual_seed(5))
    x_hat = alpha * real + (1 - alpha) * fake
    expected = ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-6)
    assert len(set(alpha.flatten().tolist())) == 3


# --- classification and the objectives -------------------------------------------------------------
def test_classification_loss_matches_torch_ops():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 5), torch.randint(0, 2, (4, 5)).float()
    expected = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()
    torch.testing.assert_close(classification_loss(logits, target), expected)
    by_hand = -sum(t * math.log(torch.sigmoid(l).item()) + (1 - t) * math.log(1 - torch.sigmoid(l).item())
                   for l, t in zip(logits.flatten(), target.flatten().tolist())) / 4
    assert classification_loss(logits, target).item() == pytest.approx(by_hand, rel=1e-5)
    labels = torch.tensor([0, 7, 3, 3])
    logits8 = torch.randn(4, 8)
    torch.testing.assert_close(classification_loss(logits8, labels, "RaFD"), F.cross_entropy(logits8, labels))
    with pytest.raises(ValueError):
        classification_loss(logits, target, "Both")


def bce(logit: float, t: float) -> float:
    return math.log1p(math.exp(-logit)) if t == 1 else math.log1p(math.exp(logit))


class PrimeD(nn.Module):
    """out_src = 3 x[:, :1, :2, :2] (gradient norm 3 * 2 = 6 everywhere: GP = 25), out_cls = 5 x[:, 0, 0, :3]."""

    def forward(self, x):
        return 3 * x[:, :1, :2, :2], 5 * x[:, 0, 0, :3]


class PrimeG(nn.Module):
    """G(x, c) = x / 2 + 0.07 c_0 + 0.11 c_1, recording its label arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, c):
        self.calls.append(c)
        return 0.5 * x + (0.07 * c[:, 0] + 0.11 * c[:, 1]).view(-1, 1, 1, 1)


R, FAKE = [0.5, -0.25], [0.125, 0.75]  # per-sample constant images
C_ORG, C_TRG = [[1.0, 0, 1], [0, 1, 1]], [[0.0, 1, 1], [1, 0, 1]]


def images(values):
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()


def test_discriminator_loss_against_hand_values():
    real, fake = images(R), images(FAKE).requires_grad_(True)
    config = StarGANConfig(lambda_cls=2.0, lambda_gp=3.0, c_dim=3, selected_attrs=("Black_Hair", "Male", "Young"))
    total, parts = discriminator_loss(PrimeD(), real, fake, torch.tensor(C_ORG), config)
    real_term = -(3 * R[0] + 3 * R[1]) / 2
    fake_term = (3 * FAKE[0] + 3 * FAKE[1]) / 2
    cls = sum(bce(5 * R[b], t) for b in range(2) for t in C_ORG[b]) / 2
    assert parts["real"].item() == pytest.approx(real_term) and parts["fake"].item() == pytest.approx(fake_term)
    assert parts["cls"].item() == pytest.approx(cls, rel=1e-6) and parts["gp"].item() == pytest.approx(25)
    assert total.item() == pytest.approx(real_term + fake_term + 2 * cls + 3 * 25, rel=1e-6)
    assert not parts["fake"].requires_grad  # the official D(x_fake.detach()): PrimeD has no parameters
    default_total, _ = discriminator_loss(PrimeD(), real, fake, torch.tensor(C_ORG))
    assert default_total.item() == pytest.approx(real_term + fake_term + cls + 10 * 25, rel=1e-6)


def test_generator_loss_against_hand_values():
    G, real = PrimeG(), images(R)
    total, parts, fake = generator_loss(G, PrimeD(), real, torch.tensor(C_ORG), torch.tensor(C_TRG))
    fk = [0.5 * R[b] + 0.07 * C_TRG[b][0] + 0.11 * C_TRG[b][1] for b in range(2)]  # G(x, c_trg)
    rec = [0.5 * fk[b] + 0.07 * C_ORG[b][0] + 0.11 * C_ORG[b][1] for b in range(2)]  # G(G(x, c_trg), c_org)
    adv = -(3 * fk[0] + 3 * fk[1]) / 2
    cls = sum(bce(5 * fk[b], t) for b in range(2) for t in C_TRG[b]) / 2
    l1 = (abs(R[0] - rec[0]) + abs(R[1] - rec[1])) / 2
    assert [c.tolist() for c in G.calls] == [C_TRG, C_ORG]
    torch.testing.assert_close(fake, images(fk))
    assert parts["fake"].item() == pytest.approx(adv) and parts["rec"].item() == pytest.approx(l1)
    assert parts["cls"].item() == pytest.approx(cls, rel=1e-6)
    assert total.item() == pytest.approx(adv + 10 * l1 + 1 * cls, rel=1e-6)


def test_rafd_objectives_use_class_indices():
    G, real = PrimeG(), images(R)
    c_org, c_trg = label2onehot(torch.tensor([0, 2]), 3), label2onehot(torch.tensor([2, 1]), 3)
    config = StarGANConfig(dataset="RaFD", c_dim=3)
    _, parts, fake = generator_loss(G, PrimeD(), real, c_org, c_trg, config)
    torch.testing.assert_close(parts["cls"], F.cross_entropy(PrimeD()(fake)[1], torch.tensor([2, 1])))
    _, d_parts = discriminator_loss(PrimeD(), real, fake, torch.tensor([0, 2]), config)
    torch.testing.assert_close(d_parts["cls"], F.cross_entropy(5 * real[:, 0, 0, :3], torch.tensor([0, 2])))


def test_tiny_real_networks_train_one_step():
    torch.manual_seed(0)
    config = StarGANConfig(image_size=16, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3)
    nets = build_models(config)
    x, c_org = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 1, 0, 1]])
    c_trg = random_target_labels(c_org, torch.Generator().manual_seed(0))
    d_total, _ = discriminator_loss(nets["D"], x, nets["G"](x, c_trg), c_org, config)
    d_total.backward()  # double backward through the GP
    g_total, _, _ = generator_loss(nets["G"], nets["D"], x, c_org, c_trg, config)
    g_total.backward()
    for net in nets.values():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# --- labels ----------------------------------------------------------------------------------------
def test_create_labels_celeba_rules():
    c_org = torch.tensor([[1.0, 0, 0, 1, 1], [0, 0, 1, 0, 0]])  # Black_Hair, Blond_Hair, Brown_Hair, Male, Young
    expected = [
        [[1, 0, 0, 1, 1], [1, 0, 0, 0, 0]],  # black hair: the other colours cleared
        [[0, 1, 0, 1, 1], [0, 1, 0, 0, 0]],  # blond
        [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]],  # brown
        [[1, 0, 0, 0, 1], [0, 0, 1, 1, 0]],  # Male flipped
        [[1, 0, 0, 1, 0], [0, 0, 1, 0, 1]],  # Young flipped
    ]
    targets = create_labels(c_org, 5, "CelebA", StarGANConfig().selected_attrs)
    assert [t.tolist() for t in targets] == expected
    assert c_org.tolist() == [[1, 0, 0, 1, 1], [0, 0, 1, 0, 0]]  # untouched
    odd = create_labels(torch.tensor([[1.0, 0, 1]]), 3, "CelebA", ["Male", "Gray_Hair", "Black_Hair"])
    assert [t.tolist() for t in odd] == [[[0, 0, 1]], [[1, 1, 0]], [[1, 0, 1]]]


def test_create_labels_rafd_and_label2onehot():
    targets = create_labels(torch.zeros(3, 5), 4, "RaFD")
    assert [t.tolist() for t in targets] == [[[float(j == i) for j in range(4)]] * 3 for i in range(4)]
    assert label2onehot(torch.tensor([2.0, 0.0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]


def test_random_target_labels_is_a_seeded_permutation():
    label_org = torch.tensor([[(i >> j) & 1 for j in range(4)] for i in range(8)], dtype=torch.float)
    shuffled = random_target_labels(label_org, torch.Generator().manual_seed(3))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(shuffled, label_org[perm]) and not torch.equal(perm, torch.arange(8))
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, label_org.tolist()))


# --- config and lr rule ----------------------------------------------------------------------------
def test_config_defaults_and_overrides():
    c = StarGANConfig()
    assert (c.c_dim, c.image_size, c.g_conv_dim, c.d_conv_dim, c.g_repeat_num, c.d_repeat_num) == (5, 128, 64, 64, 6, 6)
    assert (c.lambda_cls, c.lambda_rec, c.lambda_gp, c.batch_size, c.n_critic) == (1.0, 10.0, 10.0, 16, 5)
    assert (c.num_iters, c.num_iters_decay, c.g_lr, c.d_lr, c.betas) == (200000, 100000, 1e-4, 1e-4, (0.5, 0.999))
    assert c.selected_attrs == ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young") and c.dataset == "CelebA"
    d = c.override(["selected_attrs=Male, Young", "c_dim=2", "lambda_gp=5"])
    assert d.selected_attrs == ("Male", "Young") and d.c_dim == 2 and d.lambda_gp == 5.0
    assert StarGANConfig.from_dict({"selected_attrs": ["Male"], "c_dim": 1}).selected_attrs == ("Male",)
    with pytest.raises(ValueError, match="selected_attrs"):
        StarGANConfig(c_dim=4)
    with pytest.raises(ValueError, match="unknown StarGAN setting"):
        c.override({"lr": 1})
    with pytest.raises(ValueError, match="multiple of"):
        StarGANConfig(image_size=100)


def official_lrs(c: StarGANConfig, iterations: int):
    """Rates used in each iteration of solver.py Solver.train (the decay block at its loop's end)."""
    g_lr, d_lr, out = c.g_lr, c.d_lr, []
    for i in range(iterations):
        out.append((g_lr, d_lr))
        if (i + 1) % c.lr_update_step == 0 and (i + 1) > (c.num_iters - c.num_iters_decay):
            g_lr -= c.g_lr / float(c.num_iters_decay)
            d_lr -= c.d_lr / float(c.num_iters_decay)
    return out


def test_lr_at_follows_the_official_solver():
    c = StarGANConfig(d_lr=3e-4)
    rates = official_lrs(c, c.num_iters)
    for i in [0, 999, 1000, 99999, 100000, 100999, 101000, 101001, 150500, 199999]:
        assert lr_at(i, c) == pytest.approx(rates[i], rel=1e-12), i
    assert lr_at(100999, c) == (1e-4, 3e-4) and lr_at(101000, c)[0] == pytest.approx(1e-4 - 1e-9, rel=1e-12)
    assert lr_at(199999, c)[0] == pytest.approx(1e-4 * (1 - 99 / 100000), rel=1e-12)  # never near 0
    small = StarGANConfig(num_iters=10, num_iters_decay=6, lr_update_step=2, g_lr=0.6, d_lr=0.3)
    assert [round(lr_at(i, small)[0], 12) for i in range(11)] == [0.6] * 6 + [0.5] * 2 + [0.4] * 2 + [0.3]
    for ours, official in zip([lr_at(i, small) for i in range(10)], official_lrs(small, 10)):
        assert ours == pytest.approx(official, rel=1e-12)
