"""CycleGAN (Zhu, Park, Isola, Efros, ICCV 2017), faithful to junyanz/pytorch-CycleGAN-and-pix2pix.

Generators ``G_A: A -> B`` and ``G_B: B -> A`` (the paper's G and F); PatchGAN discriminators
``D_A`` judging domain B and ``D_B`` judging domain A (the code's naming: D_A is the paper's D_Y).
LSGAN losses, L1 cycle losses weighted 10 each way, an optional identity loss, a pool of 50 old
fakes, Adam(2e-4, (0.5, 0.999)), 100 epochs then 100 of linear decay; images (B, C, H, W) in [-1, 1].
The module trees give exactly the official ``state_dict`` keys and shapes, so released checkpoints
(``horse2zebra.pth``, ``latest_net_G_A.pth``) load with :func:`load_official_state_dict`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import override_fields
from gankit.training import _unwrap


@dataclass
class CycleGANConfig:
    """Hyper-parameters of the official CycleGAN recipe (train_options.py, cycle_gan_model.py).

    Build variants with ``CycleGANConfig(n_blocks=6)``, ``CycleGANConfig.from_dict(d)`` or
    ``config.override(["lambda_identity=0", "lr=1e-4"])`` (what ``--set key=value`` does).
    """

    input_nc: int = 3                 # channels of domain A
    output_nc: int = 3                # channels of domain B
    ngf: int = 64                     # generator width: channels after the 7x7 stem
    ndf: int = 64                     # discriminator width: channels of the first layer
    n_blocks: int = 9                 # resnet_9blocks for 256x256; the code offers 6 for 128x128
    n_layers_D: int = 3               # 3: the 70x70 PatchGAN
    use_dropout: bool = False         # CycleGAN sets --no_dropout by default
    lambda_A: float = 10.0            # weight of the cycle loss A -> B -> A
    lambda_B: float = 10.0            # weight of the cycle loss B -> A -> B
    lambda_identity: float = 0.5      # identity weight, relative to lambda_A / lambda_B; 0 turns it off
    pool_size: int = 50               # fakes remembered for the discriminators; 0: no pool
    lr: float = 2e-4
    beta1: float = 0.5                # Adam betas are (beta1, 0.999)
    n_epochs: int = 100               # epochs at the initial rate
    n_epochs_decay: int = 100         # epochs of linear decay to zero
    epoch_count: int = 1              # the official starting epoch (used by the lr rule)
    batch_size: int = 1
    load_size: int = 286              # resize to this, then random-crop crop_size
    crop_size: int = 256
    no_flip: bool = False             # False: random horizontal flips
    gan_mode: str = "lsgan"           # the only objective implemented here
    init_gain: float = 0.02           # conv weights ~ N(0, init_gain), biases 0

    def __post_init__(self) -> None:
        if self.gan_mode != "lsgan":
            raise ValueError(f"gan_mode must be 'lsgan' (the paper's), got {self.gan_mode!r}")
        if min(self.input_nc, self.output_nc, self.ngf, self.ndf, self.n_layers_D, self.batch_size) < 1:
            raise ValueError("input_nc, output_nc, ngf, ndf, n_layers_D and batch_size must be positive")
        if min(self.n_blocks, self.pool_size, self.n_epochs, self.n_epochs_decay, self.lambda_A,
               self.lambda_B, self.lambda_identity) < 0:
            raise ValueError("n_blocks, pool_size, n_epochs, n_epochs_decay and the lambdas must be >= 0")
        if self.crop_size % 4 or self.load_size < self.crop_size:
            raise ValueError(f"crop_size must be a multiple of 4 and <= load_size, got "
                             f"crop_size={self.crop_size}, load_size={self.load_size}")
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:  # G_A(B) must make sense
            raise ValueError("the identity loss needs input_nc == output_nc; set lambda_identity=0")

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, 0.999)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "CycleGANConfig":
        """Build from a mapping (e.g. a loaded config.json); unknown keys are an error."""
        return cls().override(values)

    def override(self, changes: Mapping[str, Any] | Iterable[str]) -> "CycleGANConfig":
        """A copy with fields replaced; strings (``"key=value"`` items or values) are parsed to the field's type."""
        return override_fields(self, changes, "CycleGAN")


def _norm(channels: int) -> nn.InstanceNorm2d:
    # The official 'instance' norm: no affine parameters, no running statistics, hence no
    # state_dict entries; so every conv before it keeps its bias (use_bias=True in the code).
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """(B, dim, H, W) -> x + conv_block(x), same shape; two reflect-padded 3x3 convs with InstanceNorm."""

    def __init__(self, dim: int, use_dropout: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim), nn.ReLU(True)]
        if use_dropout:  # shifts the second conv from conv_block.5 to conv_block.6, as in the official code
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim)]  # no ReLU after the sum
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """images (B, input_nc, H, W) -> images (B, output_nc, H, W) in [-1, 1]; H and W multiples of 4.

    Johnson et al.'s transformer: c7s1-ngf, d2ngf, d4ngf, n_blocks x R4ngf, u2ngf, ungf, c7s1-out.
    ``self.model`` is one ``nn.Sequential`` so the keys are the official ``model.<i>.*``.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 use_dropout: bool = False) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        self.input_nc, self.output_nc, self.ngf, self.n_blocks = input_nc, output_nc, ngf, n_blocks
        layers: list[nn.Module] = [  # (B, in, H, W) -> (B, ngf, H, W)
            nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), _norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):  # (B, ngf*mult, h, w) -> (B, 2*ngf*mult, h/2, w/2)
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                       _norm(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, use_dropout) for _ in range(n_blocks)]  # (B, 4ngf, H/4, W/4)
        for mult in (4, 2):  # (B, ngf*mult, h, w) -> (B, ngf*mult/2, 2h, 2w); output_padding restores even sizes
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]  # (B, out, H, W)
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 4 or x.shape[-1] % 4:  # otherwise the output silently has another size
            raise ValueError(f"height and width must be multiples of 4, got {tuple(x.shape[-2:])}")
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """images (B, input_nc, H, W) -> raw LSGAN scores (B, 1, H/8 - 2, W/8 - 2); no sigmoid.

    The official NLayerDiscriminator: with n_layers=3 each score sees a 70x70 patch (C64-C128-C256-C512,
    4x4 kernels, LeakyReLU(0.2), no norm on the first layer); 256x256 gives a 30x30 map.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):  # stride 2: (B, ndf*prev, h, w) -> (B, ndf*mult, h/2, w/2)
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1), _norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1), _norm(ndf * mult), nn.LeakyReLU(0.2, True),  # h -> h-1
                   nn.Conv2d(ndf * mult, 1, 4, 1, 1)]  # (B, 1, h-2, w-2)
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The official 'normal' init, in place: conv/linear weights ~ N(0, gain), biases 0 (BatchNorm: N(1, gain))."""
    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):  # unused by CycleGAN; affine-free InstanceNorm has no weights
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net.apply(init)  # apply's order draws the random numbers in the official order


def build_models(config: CycleGANConfig | None = None) -> dict[str, nn.Module]:
    """``{"G_A": A->B, "G_B": B->A, "D_A": judges B, "D_B": judges A}``, initialised with ``config.init_gain``."""
    c = config or CycleGANConfig()
    models = {
        "G_A": ResnetGenerator(c.input_nc, c.output_nc, c.ngf, c.n_blocks, c.use_dropout),
        "G_B": ResnetGenerator(c.output_nc, c.input_nc, c.ngf, c.n_blocks, c.use_dropout),
        "D_A": PatchDiscriminator(c.output_nc, c.ndf, c.n_layers_D),
        "D_B": PatchDiscriminator(c.input_nc, c.ndf, c.n_layers_D),
    }
    for net in models.values():
        init_weights(net, c.init_gain)
    return models


def load_official_state_dict(net: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                             map_location: str | torch.device = "cpu") -> nn.Module:
    """Load an official checkpoint (e.g. ``horse2zebra.pth``, ``latest_net_G_A.pth``) strictly into ``net``.

    Like ``BaseModel.load_networks``: InstanceNorm ``running_mean``/``running_var`` entries that the
    layer does not have, and any InstanceNorm ``num_batches_tracked``, are dropped first (checkpoints
    from PyTorch < 0.4 carry them); a ``module.`` prefix (DataParallel / DDP saves) is stripped.
    Raises ValueError naming the file and the first mismatching keys. Returns ``net``.
    """
    source = "the given state dict"
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = os.fspath(path_or_state_dict)
        path_or_state_dict = torch.load(source, map_location=map_location, weights_only=True)
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in path_or_state_dict.items()}
    target = _unwrap(net)
    for key in list(state):
        owner, _, leaf = key.rpartition(".")
        try:
            module = target.get_submodule(owner)
        except AttributeError:
            continue  # reported below as unexpected
        stale = leaf == "num_batches_tracked" or (leaf in ("running_mean", "running_var")
                                                  and getattr(module, leaf, 0) is None)
        if isinstance(module, nn.modules.instancenorm._InstanceNorm) and stale:
            del state[key]
    expected = target.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise ValueError(f"{source} does not fit {type(target).__name__}: {shown}. The architecture must match the "
                         "checkpoint's: n_blocks, ngf/ndf, n_layers_D, channels, dropout (the official 256px "
                         "models use n_blocks=9, the 128px ones n_blocks=6)")
    target.load_state_dict(state, strict=True)
    return net


def set_requires_grad(nets: nn.Module | Iterable[nn.Module], requires_grad: bool) -> None:
    """Freeze or unfreeze parameters; the official step freezes D_A, D_B while updating the generators."""
    for net in [nets] if isinstance(nets, nn.Module) else nets:
        for p in net.parameters():
            p.requires_grad_(requires_grad)


def lsgan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """mean((prediction - t)^2) over the whole patch map (B, 1, h, w), t = 1 if target_is_real else 0."""
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


def discriminator_loss(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (lsgan(D(real), 1) + lsgan(D(fake.detach()), 0)); the official halving slows D relative to G."""
    return (lsgan_loss(D(real), True) + lsgan_loss(D(fake.detach()), False)) * 0.5


def generator_adversarial_loss(D: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """lsgan(D(fake), 1): the generator wants its fakes scored as real (gradients flow through D)."""
    return lsgan_loss(D(fake), True)


def cycle_consistency_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """mean(|reconstructed - original|), e.g. ||G_B(G_A(A)) - A||_1 (Eq. 2 of the paper), unweighted."""
    return F.l1_loss(reconstructed, original)


def identity_loss(same: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """mean(|same - original|), e.g. ||G_A(B) - B||_1 (Sec. 5.2 of the paper), unweighted."""
    return F.l1_loss(same, original)


def generator_loss(G_A: nn.Module, G_B: nn.Module, D_A: nn.Module, D_B: nn.Module, real_A: torch.Tensor,
                   real_B: torch.Tensor, config: CycleGANConfig | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The official ``backward_G`` objective, without the backward.

    total = G_A + G_B + cycle_A + cycle_B + idt_A + idt_B, where G_A = lsgan(D_A(G_A(A)), 1),
    G_B = lsgan(D_B(G_B(B)), 1), cycle_A = lambda_A * |G_B(G_A(A)) - A|_1, cycle_B = lambda_B *
    |G_A(G_B(B)) - B|_1, idt_A = lambda_identity * lambda_B * |G_A(B) - B|_1 and idt_B =
    lambda_identity * lambda_A * |G_B(A) - A|_1 (both 0 when lambda_identity is 0).

    Returns (total, parts, fakes): ``parts`` maps those six names to 0-dim tensors; ``fakes`` holds
    ``fake_B, rec_A, fake_A, rec_B`` (+ ``idt_A, idt_B`` with identity on), not detached: ``fake_B``
    goes to D_A's pool, ``fake_A`` to D_B's. Freeze D_A, D_B meanwhile (:func:`set_requires_grad`).
    """
    c = config or CycleGANConfig()
    fake_B = G_A(real_A)  # (B, C_B, H, W)
    rec_A = G_B(fake_B)   # (B, C_A, H, W)
    fake_A = G_B(real_B)
    rec_B = G_A(fake_A)
    fakes = {"fake_B": fake_B, "rec_A": rec_A, "fake_A": fake_A, "rec_B": rec_B}
    idt_A = idt_B = real_A.new_zeros(())
    if c.lambda_identity > 0:  # G_A fed a B image should leave it alone, and G_B an A image
        fakes["idt_A"], fakes["idt_B"] = G_A(real_B), G_B(real_A)
        idt_A = identity_loss(fakes["idt_A"], real_B) * c.lambda_B * c.lambda_identity
        idt_B = identity_loss(fakes["idt_B"], real_A) * c.lambda_A * c.lambda_identity
    parts = {"G_A": generator_adversarial_loss(D_A, fake_B),  # D_A judges domain B
             "G_B": generator_adversarial_loss(D_B, fake_A),
             "cycle_A": cycle_consistency_loss(rec_A, real_A) * c.lambda_A,
             "cycle_B": cycle_consistency_loss(rec_B, real_B) * c.lambda_B, "idt_A": idt_A, "idt_B": idt_B}
    total = parts["G_A"] + parts["G_B"] + parts["cycle_A"] + parts["cycle_B"] + parts["idt_A"] + parts["idt_B"]
    return total, parts, fakes


class ImagePool:
    """The official buffer of past fakes (Shrivastava et al., 2017), so D does not chase the latest G only.

    ``query(images)`` with images (B, C, H, W): pool_size 0 returns ``images`` unchanged. Otherwise,
    image by image, while fewer than pool_size are stored, store a copy and return it; once full,
    with probability 1/2 return a uniformly chosen stored image and store the new one in its place,
    else return the new one. Returns a new (B, C, H, W) tensor, detached; stored images are detached
    clones. Random numbers come from ``generator`` (the global torch RNG if None). Plain Python:
    keep it outside any torch.compile region.
    """

    def __init__(self, pool_size: int = 50, generator: torch.Generator | None = None) -> None:
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.pool_size = pool_size
        self.generator = generator
        self.images: list[torch.Tensor] = []  # each (C, H, W)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        g, chosen = self.generator, []
        device = g.device if g is not None else "cpu"  # where the random numbers are drawn
        for image in images.detach():
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                chosen.append(image)
            elif torch.rand((), generator=g, device=device).item() > 0.5:  # the official coin
                index = int(torch.randint(self.pool_size, (), generator=g, device=device))
                chosen.append(self.images[index])
                self.images[index] = image.clone()
            else:
                chosen.append(image)
        return torch.stack(chosen)  # a fresh tensor: never aliases the pool or the input

    __call__ = query

    def state_dict(self) -> dict:
        """The stored images and the generator's state: a resumed run draws what it would have."""
        return {"images": [img.cpu() for img in self.images],
                "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        device = self.images[0].device if self.images else "cpu"
        self.images = [img.to(device) for img in state["images"]]
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"])


def linear_decay_lambda(n_epochs: int = 100, n_epochs_decay: int = 100, epoch_count: int = 1) -> Callable[[int], float]:
    """The official ``lambda_rule`` (networks.get_scheduler, lr_policy 'linear'), for ``LambdaLR``.

    ``rule(e) = 1 - max(0, e + epoch_count - n_epochs) / (n_epochs_decay + 1)``, where ``e`` is the
    number of ``scheduler.step()`` calls so far: 1.0 up to e = n_epochs - epoch_count, then down by
    1/(n_epochs_decay + 1) per step, reaching 0 at e = n_epochs + n_epochs_decay + 1 - epoch_count.
    """
    if n_epochs_decay < 0:
        raise ValueError(f"n_epochs_decay must be >= 0, got {n_epochs_decay}")

    def rule(epoch: int) -> float:
        return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)
    return rule
