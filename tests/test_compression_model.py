"""The maths of gankit/models/compression.py against closed forms and torch's own distributions."""
from __future__ import annotations

import math

import pytest
import torch

from gankit.models.compression import (GDN, LAMBDA_LADDER, CompressionConfig, ConditionalPatchDiscriminator,
                                       FactorizedDensity, FactorizedPriorCodec, ScaleHyperpriorCodec,
                                       bits_from_likelihoods, bits_per_pixel, discriminator_loss,
                                       gaussian_likelihood, generative_codec_loss, lower_bound, quantize,
                                       rate_distortion_loss)


def _set_gdn(gdn: GDN, beta: torch.Tensor, gamma: torch.Tensor) -> None:
    with torch.no_grad():  # the module stores square roots (plus a tiny pedestal)
        gdn.beta.copy_(torch.sqrt(beta + gdn.pedestal))
        gdn.gamma.copy_(torch.sqrt(gamma + gdn.pedestal))


def test_gdn_matches_a_hand_computed_value():
    gdn = GDN(2)
    _set_gdn(gdn, torch.tensor([1.0, 4.0]), torch.tensor([[1.0, 0.5], [0.0, 2.0]]))
    x = torch.tensor([3.0, 2.0]).view(1, 2, 1, 1)
    # channel 0: 3 / sqrt(1 + 1*9 + 0.5*4) = 3 / sqrt(12); channel 1: 2 / sqrt(4 + 0*9 + 2*4) = 2 / sqrt(12)
    expected = torch.tensor([3 / math.sqrt(12), 2 / math.sqrt(12)]).view(1, 2, 1, 1)
    torch.testing.assert_close(gdn(x), expected)
    igdn = GDN(2, inverse=True)
    _set_gdn(igdn, torch.tensor([1.0, 4.0]), torch.tensor([[1.0, 0.5], [0.0, 2.0]]))
    torch.testing.assert_close(igdn(x), torch.tensor([3 * math.sqrt(12), 2 * math.sqrt(12)]).view(1, 2, 1, 1))


def test_gdn_at_initialisation_is_x_over_sqrt_1_plus_a_tenth_x_squared():
    x = torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(GDN(5)(x), x / torch.sqrt(1 + 0.1 * x * x))


def test_lower_bound_passes_only_gradients_that_push_back_above_the_bound():
    x = torch.tensor([0.5, 2.0], requires_grad=True)
    y = lower_bound(x, 1.0)
    assert y.tolist() == [1.0, 2.0]
    (y * torch.tensor([1.0, 1.0])).sum().backward()  # descent would push x[0] further down: blocked
    assert x.grad.tolist() == [0.0, 1.0]
    x.grad = None
    (lower_bound(x, 1.0) * torch.tensor([-1.0, 1.0])).sum().backward()  # descent pushes x[0] up: allowed
    assert x.grad.tolist() == [-1.0, 1.0]


def test_quantizer_modes_and_their_gradients():
    x = (torch.randn(10_000) * 5).requires_grad_()
    noisy = quantize(x, "noise")
    assert (noisy - x).abs().max() <= 0.5 and (noisy - x).std() > 0.25  # U(-1/2, 1/2): std 0.289
    assert torch.equal(quantize(x, "round"), torch.round(x))
    ste = quantize(x, "ste")
    assert torch.equal(ste, torch.round(x))
    ste.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    with pytest.raises(ValueError, match="noise"):
        quantize(x, "floor")


def test_gaussian_likelihood_is_the_normal_mass_of_each_unit_bin():
    y = torch.tensor([-3.0, 0.0, 1.0, 7.0])
    s = torch.tensor([0.5, 1.0, 2.0, 3.0])
    normal = torch.distributions.Normal(0.0, s.double())
    expected = normal.cdf(y.double() + 0.5) - normal.cdf(y.double() - 0.5)
    torch.testing.assert_close(gaussian_likelihood(y, s).double(), expected, rtol=1e-5, atol=1e-9)
    integers = torch.arange(-60.0, 61.0)
    assert gaussian_likelihood(integers, torch.full_like(integers, 4.0)).sum().item() == pytest.approx(1.0, abs=1e-5)
    # scales below 0.11 are raised to it; probabilities never reach 0
    assert gaussian_likelihood(torch.tensor([0.0]), torch.tensor([1e-4])).item() == pytest.approx(
        math.erf(0.5 / (0.11 * math.sqrt(2))), rel=1e-5)
    assert gaussian_likelihood(torch.tensor([1e4]), torch.tensor([1.0])).item() == pytest.approx(1e-9)


def test_factorized_density_is_a_probability_over_the_integers_and_learns_a_gaussian():
    torch.manual_seed(0)
    density = FactorizedDensity(2)
    k = torch.arange(-300.0, 301.0).view(1, 1, 1, -1).expand(1, 2, 1, -1)
    assert density(k).sum(dim=-1).flatten().tolist() == pytest.approx([1.0, 1.0], abs=1e-4)
    # Fit channel 0 to N(0, 3^2) and channel 1 to N(5, 1) with the noise proxy; the cross-entropy of
    # the rounded samples must approach their true discrete entropy (the best any model can do).
    samples = torch.stack([torch.randn(4000) * 3, torch.randn(4000) + 5]).view(1, 2, 1, -1)
    optimizer = torch.optim.Adam(density.parameters(), lr=0.05)
    for _ in range(300):
        loss = bits_from_likelihoods({"y": density(quantize(samples, "noise"))}).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rounded = torch.round(samples)
    cross_entropy = -torch.log2(density(rounded)).mean(dim=(0, 2, 3))
    for c, sigma in enumerate((3.0, 1.0)):
        values, counts = torch.unique(rounded[0, c], return_counts=True)
        p = counts.double() / counts.sum()
        entropy = -(p * torch.log2(p)).sum().item()
        assert cross_entropy[c].item() == pytest.approx(entropy, abs=0.1)


def test_likelihoods_stay_fp32_under_bf16_autocast():
    codec = ScaleHyperpriorCodec(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = codec(torch.rand(1, 3, 64, 64))
    assert out["likelihoods"]["y"].dtype == torch.float32 and out["likelihoods"]["z"].dtype == torch.float32


def _conv(cin, cout, k=5):
    return cin * cout * k * k + cout


def _gdn(c):
    return c + c * c


@pytest.mark.parametrize("N,M", [(128, 192), (16, 24)])
def test_parameter_counts_follow_the_architecture(N, M):
    transforms = (_conv(3, N) + 2 * _conv(N, N) + _conv(N, M) + 3 * _gdn(N)
                  + _conv(M, N) + 2 * _conv(N, N) + _conv(N, 3) + 3 * _gdn(N))
    density = lambda c: c * (1 * 3 + 3 * 3 + 3 * 3 + 3 * 1) + c * 10 + c * 9  # matrices, biases, factors
    factorized = FactorizedPriorCodec(N, M)
    assert sum(p.numel() for p in factorized.parameters()) == transforms + density(M)
    hyper = _conv(M, N, 3) + 2 * _conv(N, N) + 2 * _conv(N, N) + _conv(N, M, 3)
    hyperprior = ScaleHyperpriorCodec(N, M)
    assert sum(p.numel() for p in hyperprior.parameters()) == transforms + hyper + density(N)


def test_shapes_and_eval_mode_rounding():
    x = torch.rand(2, 3, 128, 64)
    codec = ScaleHyperpriorCodec(8, 12).eval()
    out = codec(x)
    assert out["x_hat"].shape == x.shape and out["y_hat"].shape == (2, 12, 8, 4)
    assert out["likelihoods"]["z"].shape == (2, 8, 2, 1)
    assert torch.equal(out["y_hat"], torch.round(out["y_hat"]))
    train = FactorizedPriorCodec(8, 12).train()(x)
    assert not torch.equal(train["y_hat"], torch.round(train["y_hat"]))  # noise while training


def test_bits_and_rate_distortion_loss_against_hand_computed_values():
    likelihoods = {"y": torch.tensor([[0.5, 0.25], [0.125, 1.0]]).view(2, 2, 1, 1),
                   "z": torch.tensor([[0.5], [0.5]]).view(2, 1, 1, 1)}
    assert bits_from_likelihoods(likelihoods).tolist() == [4.0, 4.0]  # 1 + 2 + 1 and 3 + 0 + 1
    assert bits_per_pixel(likelihoods, 2, 4).tolist() == [0.5, 0.5]
    x = torch.zeros(2, 3, 2, 4)
    x_hat = torch.full_like(x, 0.1)
    loss, parts = rate_distortion_loss(x, {"x_hat": x_hat, "likelihoods": likelihoods}, lmbda=0.01)
    assert loss.item() == pytest.approx(0.01 * 255 ** 2 * 0.01 + 0.5, rel=1e-6)
    assert parts["psnr"] == pytest.approx(20.0) and parts["bpp"] == pytest.approx(0.5)


def test_generative_loss_wiring_with_prime_mocks():
    x = torch.full((1, 3, 2, 2), 0.2)
    x_hat = (x * 3).requires_grad_()          # a "decoder" off by a factor of 3
    likelihoods = {"y": torch.full((1, 1, 1, 1), 0.25, requires_grad=True)}
    logits = (5 * x_hat).mean().view(1, 1, 1, 1)  # a "discriminator" that is 5 times the mean
    loss, parts = generative_codec_loss(x, {"x_hat": x_hat, "likelihoods": likelihoods}, logits, lmbda=0.07, beta=0.11)
    mse, bpp, logit = 0.4 ** 2, 2 / 4, 5 * 0.6
    adversarial = math.log1p(math.exp(-logit))  # -log sigmoid(logit)
    assert loss.item() == pytest.approx(0.07 * 255 ** 2 * mse + bpp + 0.11 * adversarial, rel=1e-6)
    assert parts["adversarial"] == pytest.approx(adversarial, rel=1e-6)
    loss.backward()
    assert x_hat.grad is not None and likelihoods["y"].grad is not None
    with_perceptual, _ = generative_codec_loss(x, {"x_hat": x_hat, "likelihoods": likelihoods}, logits, 0.07, 0.11,
                                               perceptual=torch.tensor(13.0), perceptual_weight=0.5)
    assert with_perceptual.item() == pytest.approx(loss.item() + 6.5, rel=1e-6)
    d = discriminator_loss(torch.tensor([2.0]), torch.tensor([-3.0]))
    assert d.item() == pytest.approx(math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-3.0)))


def test_conditional_discriminator_sees_the_latents():
    torch.manual_seed(0)
    D = ConditionalPatchDiscriminator(M=12, ndf=8)
    x = torch.rand(2, 3, 64, 64)
    y = torch.randn(2, 12, 4, 4)
    logits = D(x, y)
    assert logits.shape == (2, 1, 8, 8)
    assert not torch.allclose(logits, D(x, y + 3))


def test_config_validates_and_overrides():
    assert CompressionConfig().lmbda in LAMBDA_LADDER
    assert CompressionConfig().override(["model=factorized", "lmbda=0.0067"]).model == "factorized"
    for bad in (["model=jpeg"], ["crop_size=100"], ["stage=diffusion"], ["perceptual_weight=1"]):
        with pytest.raises(ValueError):
            CompressionConfig().override(bad)
