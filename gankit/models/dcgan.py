"""DCGAN (Radford, Metz, Chintala, ICLR 2016) trained with the GAN losses of Goodfellow et al. (2014).

The DCGAN rules (section 3 of the paper): strided (transposed) convolutions instead of pooling,
batch normalisation in both networks except the generator's output layer and the discriminator's
input layer, ReLU in the generator with Tanh at the output, LeakyReLU(0.2) in the discriminator,
no fully connected hidden layers, weights from N(0, 0.02), Adam(lr=2e-4, betas=(0.5, 0.999)).

The networks are built exactly like the week-1 assignment's (``self.net`` is one
``nn.Sequential``), so a checkpoint of ``gankit train dcgan`` loads into a student's model.
The discriminator returns **logits**; the losses take logits and use ``softplus``, which is
stable where ``log(sigmoid(x))`` under- or overflows.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import override_fields
from gankit.training import PRECISIONS, MixedPrecision, Trainer

LOSSES = ("non_saturating", "minimax")


@dataclass
class DCGANConfig:
    """Hyper-parameters of the DCGAN recipe; the defaults are the paper's (64x64 colour images).

    Build variants with ``DCGANConfig(image_size=32)``, ``DCGANConfig.from_dict(d)`` or
    ``config.override(["lr=1e-4", "betas=0.5,0.99"])`` (what ``--set key=value`` does).
    """

    z_dim: int = 100
    ngf: int = 64                     # generator width: channels of the last hidden layer
    ndf: int = 64                     # discriminator width: channels of the first layer
    image_size: int = 64              # a power of two >= 16; 32 for MNIST
    channels: int = 3                 # train_dcgan takes it from the data (MNIST: 1)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 128
    epochs: int = 25                  # the paper fixes none; the PyTorch example uses 25
    loss: str = "non_saturating"      # or "minimax", the game as written in Goodfellow et al.
    init_std: float = 0.02            # conv weights ~ N(0, std); BatchNorm gamma ~ N(1, std)
    seed: int = 0
    precision: str = "auto"           # see gankit.training.resolve_precision
    max_steps: int = 0                # 0: no limit besides epochs
    num_workers: int = 2
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_last: int = 3

    def __post_init__(self) -> None:
        _blocks(self.image_size)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if min(self.z_dim, self.ngf, self.ndf, self.channels, self.batch_size) < 1:
            raise ValueError("z_dim, ngf, ndf, channels and batch_size must be positive")
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.betas = tuple(float(b) for b in self.betas)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DCGANConfig":
        """Build from a mapping (e.g. a loaded config.json); unknown keys are an error."""
        return cls().override(values)

    def override(self, changes: Mapping[str, Any] | Iterable[str]) -> "DCGANConfig":
        """A copy with fields replaced; strings (``"key=value"`` items or values) are parsed to the field's type."""
        return override_fields(self, changes, "DCGAN")


def _blocks(image_size: int) -> int:
    """Number of stride-2 hidden blocks: 4x4 -> image_size/2, e.g. 2 for 32x32 and 3 for 64x64."""
    if image_size < 16 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return int(math.log2(image_size)) - 3


def generator_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """(B, in, H, W) -> (B, out, 2H, 2W): ConvTranspose2d(4, 2, 1, bias=False), BatchNorm2d, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),  # no bias: BN adds one
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def discriminator_block(in_channels: int, out_channels: int, batch_norm: bool = True) -> nn.Sequential:
    """(B, in, H, W) -> (B, out, H/2, W/2): Conv2d(4, 2, 1, bias=False), [BatchNorm2d], LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def weights_init(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN init, for ``model.apply(weights_init)``: conv weights ~ N(0, std), BN gamma ~ N(1, std), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, std)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (B, z_dim) or (B, z_dim, 1, 1) -> images (B, channels, image_size, image_size) in [-1, 1].

    Widths halve as the size doubles: for 64x64, ``z -> 8ngf@4x4 -> 4ngf@8 -> 2ngf@16 -> ngf@32 ->
    channels@64``; for 32x32 the first layer has 4ngf. ``output_bias=False`` drops the output
    layer's bias, as the PyTorch DCGAN example does. ``init_std=None`` keeps PyTorch's default init.
    """

    def __init__(self, z_dim: int = 100, ngf: int = 64, channels: int = 3, image_size: int = 64, *,
                 output_bias: bool = True, init_std: float | None = 0.02) -> None:
        super().__init__()
        self.z_dim = z_dim
        n = _blocks(image_size)
        width = ngf * 2**n
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False),  # (B, z_dim, 1, 1) -> (B, width, 4, 4)
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for i in range(n):  # (B, width/2^i, s, s) -> (B, width/2^(i+1), 2s, 2s)
            layers.append(generator_block(width // 2**i, width // 2 ** (i + 1)))
        layers += [
            nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=output_bias),  # -> (B, C, size, size)
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)
        if init_std is not None:
            self.apply(functools.partial(weights_init, std=init_std))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    """images (B, channels, image_size, image_size) in [-1, 1] -> logits (B,) (no sigmoid).

    Mirror of :class:`Generator`: ``ndf@size/2`` (no BN) then doubling widths down to 4x4, then a
    4x4 convolution to one logit. ``output_bias=False`` matches the PyTorch DCGAN example.
    """

    def __init__(self, ndf: int = 64, channels: int = 3, image_size: int = 64, *,
                 output_bias: bool = True, init_std: float | None = 0.02) -> None:
        super().__init__()
        n = _blocks(image_size)
        layers: list[nn.Module] = [discriminator_block(channels, ndf, batch_norm=False)]  # (B, ndf, size/2, size/2)
        for i in range(n):  # (B, ndf*2^i, s, s) -> (B, ndf*2^(i+1), s/2, s/2)
            layers.append(discriminator_block(ndf * 2**i, ndf * 2 ** (i + 1)))
        layers.append(nn.Conv2d(ndf * 2**n, 1, 4, 1, 0, bias=output_bias))  # (B, 8ndf, 4, 4) -> (B, 1, 1, 1) at 64x64
        self.net = nn.Sequential(*layers)
        if init_std is not None:
            self.apply(functools.partial(weights_init, std=init_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(x)] - E[log(1 - D(G(z)))] from logits (B,); a scalar. ``-log sigmoid(l) = softplus(-l)``."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """E[log(1 - D(G(z)))] from logits (B,), which G minimises; saturates when D rejects fakes."""
    return -F.softplus(fake_logits).mean()


def generator_loss_non_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(G(z))] from logits (B,); same fixed point, strong gradient early in training."""
    return F.softplus(-fake_logits).mean()


GENERATOR_LOSSES = {"non_saturating": generator_loss_non_saturating, "minimax": generator_loss_minimax}


def train_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
               real: torch.Tensor, z: torch.Tensor, *, loss: str = "non_saturating",
               amp: Any = None) -> dict[str, float]:
    """One D update then one G update (Algorithm 1 of Goodfellow et al. with k = 1).

    Parameters
    ----------
    real : Tensor (B, C, H, W) in [-1, 1]
    z : Tensor (B, z_dim) or (B, z_dim, 1, 1)
    loss : {"non_saturating", "minimax"}
        The generator's loss.
    amp : Trainer or MixedPrecision, optional
        Supplies ``autocast()`` and ``backward(loss, optimizer)``; None means plain fp32.

    Returns
    -------
    dict
        ``{"d_loss": float, "g_loss": float}``; d_loss is taken before D's step, g_loss with the updated D.
    """
    if amp is None:
        amp = MixedPrecision(real.device, "fp32")
    generator_loss = GENERATOR_LOSSES[loss]
    with amp.autocast():
        fake = G(z)  # (B, C, H, W)
        real_logits, fake_logits = D(real), D(fake.detach())  # detached: no gradient reaches G here
    d_loss = discriminator_loss(real_logits.float(), fake_logits.float())
    amp.backward(d_loss, opt_d)  # zero D's grads, backward, step D
    with amp.autocast():
        fake_logits = D(fake)  # the updated D scores the same fakes
    g_loss = generator_loss(fake_logits.float())
    amp.backward(g_loss, opt_g)  # zero G's grads (D's stale ones are cleared before its next step)
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


def train_dcgan(config: DCGANConfig | Mapping[str, Any] | None, data_root: str | Path,
                run_dir: str | Path, device: str | torch.device = "auto", smoke: bool = False,
                resume: bool = True, progress: bool = True) -> Trainer:
    """Train DCGAN on MNIST (``gankit.data.MNISTIdx``) with :class:`gankit.training.Trainer`.

    ``smoke=True`` shrinks everything (32x32, ngf = ndf = 16, batch 16, 8 steps, no workers) so
    the whole recipe runs in seconds on a CPU. Returns the Trainer: ``trainer.models["G"]`` is
    the generator, ``trainer.result`` the :class:`~gankit.training.FitResult`.
    """
    from gankit.data import MNISTIdx  # imported here: the model code must not need the data package
    from gankit.device import pick_device
    from gankit.seeding import seed_everything

    config = config if isinstance(config, DCGANConfig) else DCGANConfig.from_dict(config or {})
    if smoke:
        config = replace(config, image_size=32, ngf=min(config.ngf, 16), ndf=min(config.ndf, 16),
                         batch_size=min(config.batch_size, 16), max_steps=config.max_steps or 8,
                         num_workers=0, sample_every=4, checkpoint_every=4)
    device = pick_device(device)
    seed_everything(config.seed)
    dataset = MNISTIdx(data_root, split="train", image_size=config.image_size)
    channels = dataset[0][0].shape[0]  # the data decides: MNIST is grey
    if channels != config.channels:
        config = replace(config, channels=channels)
    G = Generator(config.z_dim, config.ngf, config.channels, config.image_size, init_std=config.init_std).to(device)
    D = Discriminator(config.ndf, config.channels, config.image_size, init_std=config.init_std).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr, betas=config.betas)
    trainer = Trainer(run_dir, {"G": G, "D": D}, {"G": opt_g, "D": opt_d}, device=device,
                      precision=config.precision, config=asdict(config), keep_last=config.keep_last,
                      progress=progress)
    fixed_z = torch.randn(64, config.z_dim, generator=torch.Generator().manual_seed(config.seed)).to(device)

    def sample_fn() -> torch.Tensor:
        G.eval()  # BatchNorm with running statistics
        try:
            return G(fixed_z)
        finally:
            G.train()

    def step(batch: Any) -> dict[str, float]:
        real = batch[0]  # (B, 1, H, W) in [-1, 1]; labels unused
        z = torch.randn(real.shape[0], config.z_dim, device=device)
        return train_step(G, D, opt_g, opt_d, real, z, loss=config.loss, amp=trainer)

    trainer.fit(dataset, step, batch_size=config.batch_size, epochs=config.epochs,
                max_steps=config.max_steps or None, num_workers=config.num_workers, seed=config.seed,
                resume=resume, sample_fn=sample_fn, sample_every=config.sample_every,
                checkpoint_every=config.checkpoint_every)
    return trainer
