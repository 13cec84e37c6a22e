"""Learned image compression: Ballé et al. (ICLR 2017, 2018), made generative as in HiFiC (2020).

``FactorizedPriorCodec`` is the end-to-end optimized codec: an analysis transform ``g_a`` with GDN
maps an image to latents ``y`` (16x smaller on each side), which are rounded and entropy coded
with a learned per-channel density; ``g_s`` with inverse GDN maps them back. Training replaces
rounding with additive uniform noise so the rate ``-sum log2 p(y)`` is differentiable.
``ScaleHyperpriorCodec`` adds side information ``z = h_a(|y|)`` (coded with the factorized
density) from which ``h_s`` predicts a Gaussian scale per latent. Images are (B, 3, H, W) in
[0, 1]; the loss is ``lmbda * 255^2 * MSE + bpp``. The generative codec adds a PatchGAN
discriminator conditioned on the latents and a non-saturating GAN term weighted ``beta``.
Bitstreams: :mod:`gankit.codec`. Training: :mod:`gankit.recipes.compression`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import override_fields

# CompressAI's MSE rate points (qualities 1..8): the lambda ladder for lmbda * 255^2 * MSE + bpp.
LAMBDA_LADDER = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
SCALE_MIN = 0.11                  # smallest Gaussian scale (Ballé 2018 / CompressAI's bound)
LIKELIHOOD_MIN = 1e-9             # keeps -log2 p finite for a latent far in the tails


@dataclass
class CompressionConfig:
    """The training recipe; defaults follow Ballé 2018 as CompressAI trains it, GAN stage as HiFiC."""

    model: str = "hyperprior"     # "factorized" (Ballé 2017) or "hyperprior" (Ballé 2018)
    N: int = 128                  # channels inside the transforms
    M: int = 192                  # latent channels
    lmbda: float = 0.0130         # rate point: one of LAMBDA_LADDER, or any positive value
    lr: float = 1e-4
    batch_size: int = 8
    crop_size: int = 256          # random crops of the training photos; a multiple of 64
    steps: int = 300_000
    clip_grad_norm: float = 1.0
    stage: str = "rd"             # "rd": rate-distortion; "gan": generative, warm-started from an rd run
    warm_start: str = ""          # a codec checkpoint to start from (stage "gan": the rd run's last.pt)
    beta: float = 0.15            # weight of the generator's adversarial term (HiFiC's beta)
    lr_D: float = 1e-4
    perceptual_weight: float = 0.0  # > 0 adds a VGG feature loss; its weights load from perceptual_weights
    perceptual_weights: str = ""

    def __post_init__(self) -> None:
        if self.model not in ("factorized", "hyperprior"):
            raise ValueError(f"model must be 'factorized' or 'hyperprior', got {self.model!r}")
        if self.stage not in ("rd", "gan"):
            raise ValueError(f"stage must be 'rd' or 'gan', got {self.stage!r}")
        if self.crop_size % 64 or min(self.N, self.M, self.batch_size, self.steps) < 1 or self.lmbda <= 0:
            raise ValueError("crop_size must be a multiple of 64; N, M, batch_size, steps and lmbda positive")
        if self.perceptual_weight > 0 and not self.perceptual_weights:
            raise ValueError("perceptual_weight > 0 needs perceptual_weights=PATH (VGG16 weights, never downloaded)")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "CompressionConfig":
        return cls().override(values)

    def override(self, changes: Mapping[str, Any] | Iterable[str]) -> "CompressionConfig":
        return override_fields(self, changes, "compression")


class _LowerBound(torch.autograd.Function):
    """max(x, bound), letting gradients through where they would push x back above the bound."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.bound) | (grad < 0)).to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    return _LowerBound.apply(x, bound)


class GDN(nn.Module):
    """Generalized divisive normalization: ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``.

    ``inverse=True`` multiplies instead (IGDN, used in the synthesis transform). beta and gamma
    are stored as square roots bounded from below (Ballé's reparametrization), so they stay
    positive and gradients near zero stay well scaled. Shape (B, C, H, W) in and out.
    """

    pedestal = 2.0 ** -36

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_bound = math.sqrt(beta_min + self.pedestal)
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self.pedestal))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = lower_bound(self.beta, self.beta_bound) ** 2 - self.pedestal     # (C,)
        gamma = lower_bound(self.gamma, math.sqrt(self.pedestal)) ** 2 - self.pedestal  # (C, C)
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)  # beta_i + sum_j gamma_ij x_j^2
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


def analysis_transform(N: int, M: int) -> nn.Sequential:
    """g_a: (B, 3, H, W) -> (B, M, H/16, W/16); four stride-2 5x5 convolutions with GDN between."""
    return nn.Sequential(_down(3, N), GDN(N), _down(N, N), GDN(N), _down(N, N), GDN(N), _down(N, M))


def synthesis_transform(N: int, M: int) -> nn.Sequential:
    """g_s: (B, M, h, w) -> (B, 3, 16h, 16w); the mirror of g_a with inverse GDN."""
    return nn.Sequential(_up(M, N), GDN(N, inverse=True), _up(N, N), GDN(N, inverse=True),
                         _up(N, N), GDN(N, inverse=True), _up(N, 3))


def quantize(x: torch.Tensor, mode: str) -> torch.Tensor:
    """The quantizer and its training proxies.

    ``"noise"``: x + U(-0.5, 0.5), the differentiable stand-in for rounding (same density, up to
    the box convolution); ``"round"``: torch.round (test time); ``"ste"``: rounded values with an
    identity gradient (straight-through), for a decoder that must see real integers.
    """
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    if mode == "round":
        return torch.round(x)
    if mode == "ste":
        return x + (torch.round(x) - x).detach()
    raise ValueError(f"quantize mode must be 'noise', 'round' or 'ste', got {mode!r}")


class FactorizedDensity(nn.Module):
    """A learned univariate density per channel (Ballé 2018, appendix 6.1): the entropy model of y or z.

    The cumulative ``c(x)`` is a small monotone network per channel (softplus'd matrices, tanh
    gates, widths 1-3-3-3-1); ``p(round value k) = c(k + 1/2) - c(k - 1/2)`` evaluated in fp32.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        widths = (1, *filters, 1)
        scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i in range(len(widths) - 1):
            init = math.log(math.expm1(1 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, widths[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """(C, 1, K) points per channel -> (C, 1, K) logits of the cumulative at those points."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(matrix), x) + bias  # (C, width, K)
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Likelihoods (B, C, H, W) of quantized (or noisy) latents y (B, C, H, W), at least 1e-9."""
        B, C, H, W = y.shape
        points = y.to(self.matrices[0].dtype).permute(1, 0, 2, 3).reshape(C, 1, -1)  # (C, 1, B*H*W)
        with torch.autocast(y.device.type, enabled=False):  # rates in fp32 even inside a bf16 step
            lower, upper = self.logits_cumulative(points - 0.5), self.logits_cumulative(points + 0.5)
            # Subtract in whichever tail is smaller: 1 - sigmoid loses precision far to the right.
            sign = -torch.sign(lower + upper).detach()
            likelihood = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        likelihood = likelihood.reshape(C, B, H, W).permute(1, 0, 2, 3)
        return lower_bound(likelihood, LIKELIHOOD_MIN)


def gaussian_likelihood(y: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """p(y) of N(0, scale^2) integrated over [y - 1/2, y + 1/2]; (B, C, H, W) each, in fp32.

    Written with the left tail of the normal CDF (0.5 * erfc) on ``-|y|``, which is accurate where
    1 - CDF would round to 0.
    """
    with torch.autocast(y.device.type, enabled=False):
        scales = lower_bound(scales.float(), SCALE_MIN)
        v = y.float().abs()
        upper = 0.5 * torch.erfc(-(0.5 - v) / (scales * math.sqrt(2)))
        lower = 0.5 * torch.erfc(-(-0.5 - v) / (scales * math.sqrt(2)))
        return lower_bound(upper - lower, LIKELIHOOD_MIN)


class FactorizedPriorCodec(nn.Module):
    """Ballé et al. 2017: g_a, g_s and a factorized density on y. Images (B, 3, H, W), H and W multiples of 16."""

    downsampling = 16

    def __init__(self, N: int = 128, M: int = 192):
        super().__init__()
        self.N, self.M = N, M
        self.g_a, self.g_s = analysis_transform(N, M), synthesis_transform(N, M)
        self.entropy_y = FactorizedDensity(M)

    def forward(self, x: torch.Tensor, quantizer: str | None = None, decoder_quantizer: str | None = None) -> dict:
        """``x_hat`` (B, 3, H, W), ``y_hat`` (B, M, H/16, W/16) and ``likelihoods`` {"y": ...}.

        Training defaults to noise for the rate and the decoder; eval mode rounds.
        """
        quantizer = quantizer or ("noise" if self.training else "round")
        y = self.g_a(x)                                  # (B, M, H/16, W/16)
        y_tilde = quantize(y, quantizer)
        y_dec = y_tilde if decoder_quantizer is None else quantize(y, decoder_quantizer)
        return {"x_hat": self.g_s(y_dec), "y_hat": y_dec, "likelihoods": {"y": self.entropy_y(y_tilde)}}


class ScaleHyperpriorCodec(nn.Module):
    """Ballé et al. 2018: z = h_a(|y|) coded with a factorized density; h_s(z_hat) gives y's scales.

    H and W must be multiples of 64 (16 for y, 4 more for z).
    """

    downsampling = 64

    def __init__(self, N: int = 128, M: int = 192):
        super().__init__()
        self.N, self.M = N, M
        self.g_a, self.g_s = analysis_transform(N, M), synthesis_transform(N, M)
        self.h_a = nn.Sequential(nn.Conv2d(M, N, 3, padding=1), nn.ReLU(inplace=True),
                                 _down(N, N), nn.ReLU(inplace=True), _down(N, N))
        self.h_s = nn.Sequential(_up(N, N), nn.ReLU(inplace=True), _up(N, N), nn.ReLU(inplace=True),
                                 nn.Conv2d(N, M, 3, padding=1), nn.ReLU(inplace=True))
        self.entropy_z = FactorizedDensity(N)

    def forward(self, x: torch.Tensor, quantizer: str | None = None, decoder_quantizer: str | None = None) -> dict:
        """``x_hat``, ``y_hat``, ``scales`` (B, M, H/16, W/16) and ``likelihoods`` {"y", "z"}."""
        quantizer = quantizer or ("noise" if self.training else "round")
        y = self.g_a(x)                                  # (B, M, H/16, W/16)
        z_tilde = quantize(self.h_a(torch.abs(y)), quantizer)  # (B, N, H/64, W/64)
        scales = self.h_s(z_tilde)                        # (B, M, H/16, W/16)
        y_tilde = quantize(y, quantizer)
        y_dec = y_tilde if decoder_quantizer is None else quantize(y, decoder_quantizer)
        return {"x_hat": self.g_s(y_dec), "y_hat": y_dec, "scales": scales,
                "likelihoods": {"y": gaussian_likelihood(y_tilde, scales), "z": self.entropy_z(z_tilde)}}


def build_codec(config: CompressionConfig) -> nn.Module:
    cls = FactorizedPriorCodec if config.model == "factorized" else ScaleHyperpriorCodec
    return cls(config.N, config.M)


class ConditionalPatchDiscriminator(nn.Module):
    """HiFiC's discriminator: a PatchGAN on the image, conditioned on the quantized latents.

    y_hat (B, M, H/16, W/16) goes through a 3x3 conv to 12 channels and is upsampled 16x (nearest)
    to sit beside the image; then spectrally normalized 4x4 convolutions 64-128-256 (stride 2) and
    512 (stride 1), LeakyReLU 0.2, and a 1x1 conv to one logit per patch: (B, 1, H/8, W/8).
    """

    def __init__(self, M: int = 192, context_channels: int = 12, ndf: int = 64):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.context = nn.Sequential(nn.Conv2d(M, context_channels, 3, padding=1), nn.LeakyReLU(0.2),
                                     nn.Upsample(scale_factor=16, mode="nearest"))
        layers, cin = [], 3 + context_channels
        for i, cout in enumerate((ndf, ndf * 2, ndf * 4, ndf * 8)):
            stride = 2 if i < 3 else 1
            pad = [] if stride == 2 else [nn.ZeroPad2d((1, 2, 1, 2))]  # "same" for an even kernel
            layers += [*pad, sn(nn.Conv2d(cin, cout, 4, stride, padding=1 if stride == 2 else 0)), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(sn(nn.Conv2d(cin, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) and latents (B, M, H/16, W/16) -> patch logits (B, 1, H/8, W/8)."""
        return self.net(torch.cat([x, self.context(y_hat)], dim=1))


def bits_from_likelihoods(likelihoods: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Total bits per image, ``-sum log2 p``, over every latent tensor: (B,)."""
    return sum(-torch.log2(p.float()).flatten(1).sum(dim=1) for p in likelihoods.values())


def bits_per_pixel(likelihoods: Mapping[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """bpp per image, (B,): bits / (H * W) of the original image."""
    return bits_from_likelihoods(likelihoods) / (height * width)


def rate_distortion_loss(x: torch.Tensor, output: Mapping[str, Any], lmbda: float) -> tuple[torch.Tensor, dict]:
    """``lmbda * 255^2 * MSE + bpp`` averaged over the batch; also returns mse, bpp and psnr (floats).

    x and output["x_hat"] are (B, 3, H, W) in [0, 1] (x_hat is not clamped during training).
    """
    mse = F.mse_loss(output["x_hat"].float(), x.float())
    bpp = bits_per_pixel(output["likelihoods"], x.shape[2], x.shape[3]).mean()
    loss = lmbda * 255 ** 2 * mse + bpp
    return loss, {"mse": mse.item(), "bpp": bpp.item(), "psnr": 10 * math.log10(1 / max(mse.item(), 1e-12))}


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for the codec's decoder: -log D(x_hat) = softplus(-logit)."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(x_hat)), averaged over patches and images."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def generative_codec_loss(x: torch.Tensor, output: Mapping[str, Any], fake_logits: torch.Tensor,
                          lmbda: float, beta: float, perceptual: torch.Tensor | None = None,
                          perceptual_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """``lmbda * 255^2 * MSE + bpp + beta * adversarial (+ perceptual_weight * perceptual)``.

    ``fake_logits`` is D(x_hat, y_hat) with gradients flowing to the codec; ``perceptual`` a
    scalar distance between x and x_hat (e.g. :class:`gankit.perceptual.VGGPerceptualLoss`).
    """
    loss, parts = rate_distortion_loss(x, output, lmbda)
    adversarial = generator_adversarial_loss(fake_logits)
    loss = loss + beta * adversarial
    parts["adversarial"] = adversarial.item()
    if perceptual is not None and perceptual_weight > 0:
        loss = loss + perceptual_weight * perceptual.float()
        parts["perceptual"] = perceptual.item()
    return loss, parts
