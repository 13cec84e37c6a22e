"""StarGAN (Choi, Choi, Kim, Ha, Kim, Choo, CVPR 2018), faithful to yunjey/stargan (model.py, solver.py).

One generator G(x, c) translates an image x (B, 3, H, W) in [-1, 1] to the domain given by a label
vector c (B, c_dim); one discriminator D(x) returns a WGAN-GP critic patch map and domain logits.
Adversarial (WGAN-GP), domain classification and L1 reconstruction losses, one G step per 5 D steps,
Adam(1e-4, (0.5, 0.999)), batch 16 (solver.py ``Solver.train``). The module trees give exactly the official
``state_dict`` keys, so the released CelebA checkpoints (``200000-G.ckpt``, ``200000-D.ckpt``) load
with :func:`load_official_state_dict`. No custom weight init: the official code keeps PyTorch's.
Only single-dataset training (CelebA or RaFD) is covered, not the paper's mask-vector 'Both' mode.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import override_fields
from gankit.training import _unwrap

DATASETS = ("CelebA", "RaFD")
CELEBA_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")  # main.py --selected_attrs
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")      # solver.create_labels


@dataclass
class StarGANConfig:
    """Hyper-parameters of the official recipe (main.py defaults; the 128x128 CelebA model).

    Build variants with ``StarGANConfig(image_size=256)``, ``StarGANConfig.from_dict(d)`` or
    ``config.override(["dataset=RaFD", "c_dim=8"])``; ``selected_attrs`` parses "A,B,C" or "A B C".
    """

    c_dim: int = 5                    # domain label length: len(selected_attrs) for CelebA, 8 expressions for RaFD
    image_size: int = 128             # D's classification kernel is image_size / 2**d_repeat_num
    g_conv_dim: int = 64              # G width: channels after the 7x7 stem
    d_conv_dim: int = 64              # D width: channels of the first layer
    g_repeat_num: int = 6             # residual blocks in G
    d_repeat_num: int = 6             # stride-2 convolutions in D
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0
    dataset: str = "CelebA"           # or "RaFD" (single-label: softmax cross-entropy)
    batch_size: int = 16
    num_iters: int = 200000           # D iterations; G steps every n_critic of them
    num_iters_decay: int = 100000     # decay happens in the last num_iters_decay iterations
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    n_critic: int = 5
    beta1: float = 0.5
    beta2: float = 0.999
    lr_update_step: int = 1000        # the rates change every lr_update_step iterations (see lr_at)
    crop_size: int = 178              # data_loader: center crop (CelebA 178, RaFD 256), then resize to image_size
    selected_attrs: tuple[str, ...] = CELEBA_ATTRS

    def __post_init__(self) -> None:
        self.selected_attrs = tuple(str(a) for a in self.selected_attrs)
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if min(self.c_dim, self.g_conv_dim, self.d_conv_dim, self.d_repeat_num, self.batch_size, self.n_critic,
               self.lr_update_step, self.num_iters_decay, self.crop_size) < 1 or min(
                self.g_repeat_num, self.num_iters, self.lambda_cls, self.lambda_rec, self.lambda_gp) < 0:
            raise ValueError("sizes, counts and steps must be positive; g_repeat_num, num_iters, lambdas >= 0")
        if self.image_size % 2**self.d_repeat_num:  # else D's conv2 does not reduce the map to 1x1
            raise ValueError(f"image_size must be a multiple of 2**d_repeat_num, got {self.image_size}")
        if self.dataset == "CelebA" and len(self.selected_attrs) != self.c_dim:
            raise ValueError(f"c_dim={self.c_dim} but {len(self.selected_attrs)} selected_attrs {self.selected_attrs}")

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "StarGANConfig":
        """Build from a mapping (e.g. a loaded config.json); unknown keys are an error."""
        return cls().override(values)

    def override(self, changes: Mapping[str, Any] | Iterable[str]) -> "StarGANConfig":
        """A copy with fields replaced; strings (``"key=value"`` items or values) are parsed to the field's type."""
        return override_fields(self, changes, "StarGAN")


def _norm(channels: int) -> nn.InstanceNorm2d:
    # As the official: affine and running statistics, so each norm has weight, bias, running_mean,
    # running_var and num_batches_tracked entries; the convs before it need no bias (bias=False).
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=True)


class ResidualBlock(nn.Module):
    """(B, dim, H, W) -> x + main(x), same shape: conv3x3-IN-ReLU-conv3x3-IN, no ReLU after the sum.

    Zero padding throughout G: the official code notes that tiled-label conditioning does not work
    with reflection padding (InstanceNorm removes the constant shift the label channels add).
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, 3, 1, 1, bias=False), _norm(dim_out), nn.ReLU(inplace=True),
            nn.Conv2d(dim_out, dim_out, 3, 1, 1, bias=False), _norm(dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    """(images (B, 3, H, W) in [-1, 1], labels c (B, c_dim)) -> images (B, 3, H, W) in [-1, 1]; H, W multiples of 4.

    c is tiled to (B, c_dim, H, W) and concatenated to the image. Keep G in train mode, as the official
    solver always does (it never calls ``.eval()``): with ``track_running_stats=True``, ``eval()`` would
    normalise with running averages instead of each image's statistics and spoil the translations
    (yunjey/stargan issues #102, #140). Use ``torch.no_grad()`` for inference as the official ``test``.
    """

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        self.c_dim = c_dim
        layers: list[nn.Module] = [  # (B, 3 + c_dim, H, W) -> (B, conv_dim, H, W)
            nn.Conv2d(3 + c_dim, conv_dim, 7, 1, 3, bias=False), _norm(conv_dim), nn.ReLU(inplace=True)]
        dim = conv_dim
        for _ in range(2):  # (B, dim, h, w) -> (B, 2 dim, h/2, w/2)
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), _norm(dim * 2), nn.ReLU(inplace=True)]
            dim *= 2
        layers += [ResidualBlock(dim, dim) for _ in range(repeat_num)]  # (B, 4 conv_dim, H/4, W/4)
        for _ in range(2):  # (B, dim, h, w) -> (B, dim/2, 2h, 2w)
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False), _norm(dim // 2), nn.ReLU(inplace=True)]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]  # (B, 3, H, W)
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 4 or x.shape[-1] % 4:  # otherwise the output silently has another size
            raise ValueError(f"height and width must be multiples of 4, got {tuple(x.shape[-2:])}")
        if c.shape != (x.shape[0], self.c_dim):
            raise ValueError(f"labels must be (B, c_dim) = {(x.shape[0], self.c_dim)}, got {tuple(c.shape)}")
        c = c.to(x.dtype).view(c.shape[0], c.shape[1], 1, 1).expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, c], dim=1))


class Discriminator(nn.Module):
    """images (B, 3, S, S), S = image_size -> (out_src (B, 1, S/2**r, S/2**r), out_cls (B, c_dim)), r = repeat_num.

    out_src: raw WGAN critic scores, one per patch (2x2 for 128x128); out_cls: domain logits. Six
    stride-2 4x4 convs (with bias) and LeakyReLU(0.01), no normalisation (it would break the GP).
    """

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01)]  # (B, conv_dim, S/2, S/2)
        dim = conv_dim
        for _ in range(1, repeat_num):  # (B, dim, s, s) -> (B, 2 dim, s/2, s/2)
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.01)]
            dim *= 2
        kernel = image_size // 2**repeat_num
        if kernel < 1:
            raise ValueError(f"image_size {image_size} is smaller than 2**repeat_num = {2**repeat_num}")
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)    # (B, 1, s, s)
        self.conv2 = nn.Conv2d(dim, c_dim, kernel, bias=False)  # (B, c_dim, 1, 1) when s == kernel

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        out_cls = self.conv2(h)
        return self.conv1(h), out_cls.view(out_cls.size(0), out_cls.size(1))


def build_models(config: StarGANConfig | None = None) -> dict[str, nn.Module]:
    """``{"G": Generator, "D": Discriminator}`` as ``Solver.build_model`` makes them (PyTorch's default init)."""
    c = config or StarGANConfig()
    return {"G": Generator(c.g_conv_dim, c.c_dim, c.g_repeat_num),
            "D": Discriminator(c.image_size, c.d_conv_dim, c.c_dim, c.d_repeat_num)}


def load_official_state_dict(net: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                             map_location: str | torch.device = "cpu") -> nn.Module:
    """Load an official checkpoint (``200000-G.ckpt``, ``200000-D.ckpt``) strictly into ``net``; returns ``net``.

    A ``module.`` prefix (DataParallel / DDP saves) is stripped, and a missing InstanceNorm
    ``num_batches_tracked`` (saves from PyTorch < 0.4.1) is filled with 0, as PyTorch itself does.
    Raises ValueError naming the file and the first mismatching keys.
    """
    source = "the given state dict"
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = os.fspath(path_or_state_dict)
        path_or_state_dict = torch.load(source, map_location=map_location, weights_only=True)
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in path_or_state_dict.items()}
    target = _unwrap(net)
    expected = target.state_dict()
    for key, value in expected.items():  # saves from PyTorch < 0.4.1 lack it; PyTorch itself fills in 0
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise ValueError(f"{source} does not fit {type(target).__name__}: {shown}. The architecture must match the "
                         "checkpoint's: c_dim (main.0 / conv2), image_size (D's conv2 kernel is image_size/64), "
                         "repeat_num (G residual blocks, D layers), conv_dim; the released CelebA models use "
                         "c_dim=5, repeat_num=6, image_size 128 or 256")
    target.load_state_dict(state, strict=True)
    return net


def gradient_penalty(critic: Callable[[torch.Tensor], Any], real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017) as ``Solver.gradient_penalty``: E[(||grad_x^ D_src(x^)||_2 - 1)^2].

    x^ = a * real + (1 - a) * fake with a ~ U(0, 1) per sample (drawn from ``generator``, else from
    the global CPU RNG like the official code); real and fake are detached. The norm is over each
    sample's flattened gradient. ``critic`` may return a tensor or D's (out_src, out_cls) tuple.
    Returns a 0-dim fp32 tensor with a graph to the critic's parameters (create_graph=True).

    It runs in fp32 even inside autocast: autocast is disabled for this block and the inputs are cast
    to float, because a second-order term in bf16/fp16 is too coarse. The double backward this needs
    is not supported by torch.compile, so a recipe may compile only the generator.
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        real, fake = real.detach().float(), fake.detach().float()
        shape = (real.size(0),) + (1,) * (real.dim() - 1)  # (B, 1, 1, 1)
        alpha = torch.rand(shape, generator=generator,
                           device=generator.device if generator is not None else "cpu").to(real.device)
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        out = critic(x_hat)
        out = (out[0] if isinstance(out, (tuple, list)) else out).float()
        grad, = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out), create_graph=True)
        norm = grad.flatten(1).pow(2).sum(1).sqrt()  # (B,)
        return ((norm - 1) ** 2).mean()


def classification_loss(logits: torch.Tensor, target: torch.Tensor, dataset: str = "CelebA") -> torch.Tensor:
    """Domain classification loss of ``Solver.classification_loss``.

    CelebA (multi-label): sum over the c_dim attributes of BCE-with-logits, averaged over the batch,
    i.e. -(1/B) sum_b sum_i [t log s(l) + (1 - t) log(1 - s(l))]; target (B, c_dim) in {0, 1}.
    RaFD (single-label): mean softmax cross-entropy; target (B,) class indices.
    """
    if dataset == "CelebA":
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="sum") / logits.size(0)
    if dataset == "RaFD":
        return F.cross_entropy(logits, target.long())
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def discriminator_loss(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, label_org: torch.Tensor,
                       config: StarGANConfig | None = None, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official D objective: -mean(D_src(x)) + mean(D_src(fake)) + lambda_cls cls(D_cls(x), label_org) + lambda_gp GP.

    ``fake`` = G(x, c_trg) is detached here. ``label_org``: (B, c_dim) attributes (CelebA) or (B,)
    indices (RaFD). Returns (total, parts); parts "real", "fake", "cls", "gp" are unweighted, as the
    official log shows them (D/loss_real, ...). ``generator`` feeds the GP's random mixing weights.
    """
    c = config or StarGANConfig()
    out_src, out_cls = D(real)
    parts = {"real": -out_src.mean(), "cls": classification_loss(out_cls, label_org, c.dataset)}
    parts["fake"] = D(fake.detach())[0].mean()
    parts["gp"] = gradient_penalty(D, real, fake, generator)
    total = parts["real"] + parts["fake"] + c.lambda_cls * parts["cls"] + c.lambda_gp * parts["gp"]
    return total, parts


def generator_loss(G: nn.Module, D: nn.Module, real: torch.Tensor, c_org: torch.Tensor, c_trg: torch.Tensor,
                   config: StarGANConfig | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The official G objective: -mean(D_src(G(x, c_trg))) + lambda_cls cls(D_cls(G(x, c_trg)), c_trg)
    + lambda_rec mean|x - G(G(x, c_trg), c_org)|.

    c_org, c_trg: (B, c_dim) label vectors (one-hot for RaFD; its cls target is c_trg.argmax(1), the
    official label_trg). Returns (total, parts, fake): parts "fake", "cls", "rec" unweighted as the
    official log; fake = G(x, c_trg), not detached. D receives gradients too: zero both nets' grads
    before each step, as the official ``reset_grad``.
    """
    c = config or StarGANConfig()
    fake = G(real, c_trg)                   # (B, 3, H, W): original -> target domain
    out_src, out_cls = D(fake)
    reconstructed = G(fake, c_org)          # target -> original domain
    target = c_trg if c.dataset == "CelebA" else c_trg.argmax(1)
    parts = {"fake": -out_src.mean(), "cls": classification_loss(out_cls, target, c.dataset),
             "rec": (real - reconstructed).abs().mean()}
    total = parts["fake"] + c.lambda_rec * parts["rec"] + c.lambda_cls * parts["cls"]
    return total, parts, fake


def label2onehot(labels: torch.Tensor, dim: int) -> torch.Tensor:
    """Class indices (B,) -> one-hot float (B, dim), on the labels' device (the official ``label2onehot``)."""
    return F.one_hot(labels.long(), dim).float()


def random_target_labels(label_org: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The official target labels: the batch's own labels in a random order, ``label_org[randperm(B)]``.

    Targets are thus distributed like the data; the permutation comes from ``generator`` (else the global CPU RNG).
    """
    device = generator.device if generator is not None else "cpu"
    rand_idx = torch.randperm(label_org.size(0), generator=generator, device=device)
    return label_org[rand_idx.to(label_org.device)]


def create_labels(c_org: torch.Tensor, c_dim: int = 5, dataset: str = "CelebA",
                  selected_attrs: Sequence[str] | None = None) -> list[torch.Tensor]:
    """c_dim target label batches (B, c_dim) for sample grids, as ``Solver.create_labels``.

    CelebA, for attribute i: a hair colour is set to 1 and the other hair colours among selected_attrs
    (default: the official five) to 0; any other attribute is flipped; the rest of each row is c_org's.
    RaFD: every row is the one-hot of class i.
    """
    if dataset == "RaFD":
        return [label2onehot(torch.full((c_org.size(0),), i, device=c_org.device), c_dim) for i in range(c_dim)]
    if dataset != "CelebA":
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    attrs = tuple(selected_attrs) if selected_attrs is not None else CELEBA_ATTRS
    hair = [i for i, name in enumerate(attrs) if name in HAIR_COLOURS]
    targets = []
    for i in range(c_dim):
        c_trg = c_org.clone()
        if i in hair:
            c_trg[:, hair] = 0
            c_trg[:, i] = 1
        else:
            c_trg[:, i] = (c_trg[:, i] == 0).to(c_trg.dtype)
        targets.append(c_trg)
    return targets


def lr_at(iteration: int, config: StarGANConfig | None = None) -> tuple[float, float]:
    """(g_lr, d_lr) that the official loop uses in iteration ``iteration`` (0-based, as its ``i``).

    solver.py, end of each iteration i: if (i+1) % lr_update_step == 0 and i+1 > num_iters -
    num_iters_decay, then lr -= initial_lr / num_iters_decay. So after n such steps lr = lr0 (1 -
    n / num_iters_decay). With the defaults that is 100 steps of 1e-9: the official rate only falls to
    0.999 lr0, not to 0 (that would need lr_update_step=1); this function follows the code.
    """
    c = config or StarGANConfig()
    start = max(c.num_iters - c.num_iters_decay, 0)
    steps = max(0, iteration // c.lr_update_step - start // c.lr_update_step)  # decays in (start, iteration]
    return c.g_lr - steps * (c.g_lr / c.num_iters_decay), c.d_lr - steps * (c.d_lr / c.num_iters_decay)
