"""A VGG16 feature distance (Johnson et al. 2016) for the generative codec's optional perceptual term.

The weights are torchvision's ImageNet VGG16 (``vgg16-397923af.pth``, the file torchvision's own
download stores under ``~/.cache/torch/hub/checkpoints``), read from a local path only: nothing is
ever downloaded here. Only the ``features.*`` tensors up to relu4_3 are used (a file holding just
those works too). The distance is the mean squared difference of channel-normalized features
at relu1_2, relu2_2, relu3_3 and relu4_3, averaged over the four layers.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

LAYERS = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 22: "relu4_3"}  # indices into vgg16().features
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGPerceptualLoss(nn.Module):
    """``forward(x, y)``: a scalar distance between images (B, 3, H, W) in [0, 1]; frozen weights."""

    def __init__(self, weights_path: str | os.PathLike) -> None:
        super().__init__()
        from torchvision.models import vgg16

        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VGG16 weights {path} not found; copy torchvision's vgg16-397923af.pth "
                                    "there (e.g. from ~/.cache/torch/hub/checkpoints on a machine with network)")
        with torch.device("meta"):  # no memory for the 100M-parameter classifier this never uses
            features = vgg16(weights=None).features[: max(LAYERS) + 1]
        state = torch.load(path, map_location="cpu", weights_only=True)
        wanted = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        wanted = {k: v for k, v in wanted.items() if int(k.split(".")[0]) <= max(LAYERS)}
        try:
            features.load_state_dict(wanted, assign=True)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a torchvision VGG16 state dict: {err}") from None
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        super().train(mode)
        self.features.eval()  # no dropout / batch statistics to change: the features stay fixed
        return self

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x.float() - self.mean) / self.std, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in LAYERS:
                out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))  # unit length per position
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pairs = zip(self._features(x), self._features(y))
        return torch.stack([(a - b).pow(2).sum(dim=1).mean() for a, b in pairs]).mean()
