"""StarGAN v2's ideas as small runnable components (Choi, Uh, Yoo, Ha, CVPR 2020).

Written from the paper (https://arxiv.org/abs/1912.01865) and the facts of the official
clovaai/stargan-v2 code (``core/model.py``, ``core/solver.py``); not the full model, just the pieces
the week-6 notebook uses to explain how StarGAN v2 goes beyond one label vector per domain:

* :class:`AdaIN`: adaptive instance normalisation, ``(1 + gamma(s)) * IN(x) + beta(s)``; the
  generator injects a *style code* ``s`` into every decoder block this way.
* :class:`MappingNetwork`: a latent ``z`` and a domain ``y`` -> a style code, through a shared MLP
  and one output head per domain (many styles per domain, not one label per domain).
* :class:`StyleEncoder`: a reference image and its domain -> that image's style code (shared convs,
  one linear head per domain).
* :func:`r1_regularization`: the zero-centred gradient penalty on real images (Mescheder et al. 2018)
  that replaces StarGAN's WGAN-GP.
* :func:`diversity_loss`: the diversity-sensitive term ``E |G(x, s1) - G(x, s2)|`` that the
  generator *maximises* (it is subtracted from G's loss).

Official defaults: latent_dim 16, style_dim 64, hidden 512, lambda_r1 = lambda_sty = lambda_cyc = 1,
lambda_ds = 1 linearly decayed to 0 over the first 100k iterations (CelebA-HQ: lambda_ds 1, 2 domains).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AdaIN", "MappingNetwork", "StyleEncoder", "r1_regularization", "diversity_loss", "select_domain", "he_init"]


def he_init(module: nn.Module) -> None:
    """The official initialisation (``utils.he_init``, applied to every network): He-normal weights
    (fan_in, ReLU gain) and zero biases for Conv2d and Linear layers; use as ``net.apply(he_init)``.

    PyTorch's default init would shrink activations at each ReLU layer: through the mapping
    network's eight layers, different latents would give almost the same style.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def select_domain(per_domain: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row b of ``per_domain`` (B, num_domains, D) at domain ``y[b]`` -> (B, D); y: (B,) int indices.

    The official ``out[idx, y]`` with ``idx = range(B)``: each sample gets the head of its own domain.
    """
    if y.dim() != 1 or y.shape[0] != per_domain.shape[0]:
        raise ValueError(f"y must be (B,) = ({per_domain.shape[0]},) domain indices, got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= per_domain.shape[1]):
        raise ValueError(f"domain indices must lie in [0, {per_domain.shape[1]}), got {y.tolist()}")
    return per_domain[torch.arange(y.shape[0], device=y.device), y.long()]


class AdaIN(nn.Module):
    """Adaptive instance normalisation: (x (B, C, H, W), s (B, style_dim)) -> (B, C, H, W).

    ``h = fc(s)`` (B, 2C) is split into gamma, beta (B, C, 1, 1) and the output is
    ``(1 + gamma) * IN(x) + beta``, IN without affine parameters (eps 1e-5, biased variance). The
    ``1 +`` (as the official) makes a zero style map, or a zero-initialised fc, plain instance norm.
    All three modules here start from :func:`he_init`, as the official networks.
    The feature statistics of each channel are thus set by the style: IN erases the input's, the
    style writes its own.
    """

    def __init__(self, style_dim: int, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, 2 * num_features)
        self.apply(he_init)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"x must be (B, {self.num_features}, H, W), got {tuple(x.shape)}")
        h = self.fc(s).view(s.shape[0], 2 * self.num_features, 1, 1)
        gamma, beta = h.chunk(2, dim=1)  # (B, C, 1, 1) each
        return (1 + gamma) * self.norm(x) + beta


class MappingNetwork(nn.Module):
    """(z (B, latent_dim), y (B,) domain indices) -> style codes s (B, style_dim).

    As the official: a shared MLP (latent_dim -> hidden, then 3 x hidden -> hidden, ReLU after each)
    and, per domain, an unshared head (3 x hidden -> hidden with ReLU, then hidden -> style_dim).
    Every head runs on every sample; each sample keeps its own domain's output (``select_domain``).
    ``forward_all`` returns all heads, (B, num_domains, style_dim).
    """

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2, hidden: int = 512) -> None:
        super().__init__()
        self.latent_dim, self.style_dim, self.num_domains = latent_dim, style_dim, num_domains
        layers: list[nn.Module] = [nn.Linear(latent_dim, hidden), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, style_dim))
            for _ in range(num_domains))
        self.apply(he_init)

    def forward_all(self, z: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)                                          # (B, hidden)
        return torch.stack([head(h) for head in self.unshared], 1)  # (B, num_domains, style_dim)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        return select_domain(self.forward_all(z), y)


class _ResBlk(nn.Module):
    """The official pre-activation residual block without normalisation, halving H and W:
    (B, dim_in, H, W) -> (B, dim_out, H/2, W/2), (shortcut + residual) / sqrt(2)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None
        self.actv = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = F.avg_pool2d(self.conv1x1(x) if self.conv1x1 is not None else x, 2)
        h = F.avg_pool2d(self.conv1(self.actv(x)), 2)
        return (shortcut + self.conv2(self.actv(h))) / math.sqrt(2)  # unit variance, as the official


class StyleEncoder(nn.Module):
    """(images (B, 3, img_size, img_size), y (B,) domain indices) -> style codes (B, style_dim).

    Shared: conv3x3 to ``dim_in`` channels (official: 2**14 // img_size), then residual blocks that
    halve the size down to 4x4 doubling the channels up to ``max_conv_dim``, LeakyReLU(0.2), a 4x4
    valid conv to 1x1, LeakyReLU; then one linear head per domain. The official uses
    max_conv_dim=512 at 256 px; small values (and a small ``dim_in``) give a toy-sized encoder.
    """

    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2, max_conv_dim: int = 512,
                 dim_in: int | None = None) -> None:
        super().__init__()
        if img_size < 8 or img_size & (img_size - 1):
            raise ValueError(f"img_size must be a power of two >= 8, got {img_size}")
        self.img_size, self.style_dim, self.num_domains = img_size, style_dim, num_domains
        dim = min(dim_in if dim_in is not None else 2**14 // img_size, max_conv_dim)
        blocks: list[nn.Module] = [nn.Conv2d(3, dim, 3, 1, 1)]
        for _ in range(int(math.log2(img_size)) - 2):  # img_size -> 4
            dim_out = min(dim * 2, max_conv_dim)
            blocks.append(_ResBlk(dim, dim_out))
            dim = dim_out
        blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim, dim, 4, 1, 0), nn.LeakyReLU(0.2)]  # (B, dim, 1, 1)
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList(nn.Linear(dim, style_dim) for _ in range(num_domains))
        self.apply(he_init)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.img_size, self.img_size):
            raise ValueError(f"images must be (B, 3, {self.img_size}, {self.img_size}), got {tuple(x.shape)}")
        h = self.shared(x).flatten(1)                               # (B, dim)
        return torch.stack([head(h) for head in self.unshared], 1)  # (B, num_domains, style_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return select_domain(self.forward_all(x), y)


def r1_regularization(d_out_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1 penalty 0.5 * E_x ||grad_x D(x)||^2 on real images (the official ``r1_reg``); 0-dim tensor.

    ``x_real`` (B, ...) must have had ``requires_grad_()`` before ``d_out_real = D(x_real)`` (any
    shape with B rows; its sum is differentiated, so each sample's gradient is that of its own
    outputs). Per sample the squared gradient is summed over all its entries, then averaged over
    the batch. ``create_graph=True``: the penalty can be backpropagated to D's parameters. Unlike
    WGAN-GP it is zero-centred and taken on real data only: it pushes D to be flat on the data
    manifold, which makes the GAN game locally convergent (Mescheder, Geiger, Nowozin 2018).
    """
    if not x_real.requires_grad:
        raise ValueError("x_real must require grad before D is applied: x_real.requires_grad_() then D(x_real)")
    grad, = torch.autograd.grad(d_out_real.sum(), x_real, create_graph=True, retain_graph=True)
    return 0.5 * grad.pow(2).reshape(x_real.shape[0], -1).sum(1).mean(0)


def diversity_loss(fake1: torch.Tensor, fake2: torch.Tensor, detach_second: bool = True) -> torch.Tensor:
    """Diversity-sensitive loss mean |fake1 - fake2| over all entries: G(x, s1), G(x, s2), same x, two styles.

    The generator *maximises* it (the official G loss is ``... - lambda_ds * loss_ds``), so two
    style codes must give different images. As the official, the second image is detached by
    default (``x_fake2.detach()``). The term is unbounded, hence lambda_ds decays linearly to 0.
    """
    if fake1.shape != fake2.shape:
        raise ValueError(f"the two fakes differ in shape: {tuple(fake1.shape)} vs {tuple(fake2.shape)}")
    return (fake1 - (fake2.detach() if detach_second else fake2)).abs().mean()
