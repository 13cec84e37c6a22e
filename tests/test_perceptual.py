"""The VGG feature distance loads weights from a local file only and behaves as a distance."""
from __future__ import annotations

import pytest
import torch

from gankit.perceptual import LAYERS, VGGPerceptualLoss


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from torchvision.models import vgg16

    torch.manual_seed(0)
    features = vgg16(weights=None).features  # random weights, saved under torchvision's key names
    path = tmp_path_factory.mktemp("vgg") / "vgg16_features.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def test_distance_is_zero_for_equal_images_and_grows_with_the_difference(weights):
    loss = VGGPerceptualLoss(weights)
    assert len(loss._features(torch.rand(1, 3, 32, 32))) == len(LAYERS)
    x = torch.rand(2, 3, 32, 32)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    near, far = loss(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1)), loss(x, torch.rand_like(x))
    assert 0 < near.item() < far.item()
    y = x.clone().requires_grad_()
    loss(x, y.clamp(0, 1) * 0.9).backward()
    assert y.grad.abs().sum() > 0 and not any(p.requires_grad for p in loss.parameters())


def test_missing_or_wrong_weights_name_the_file(tmp_path, weights):
    with pytest.raises(FileNotFoundError, match="nothing.pth not found; copy torchvision's vgg16-397923af.pth"):
        VGGPerceptualLoss(tmp_path / "nothing.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth is not a torchvision VGG16 state dict"):
        VGGPerceptualLoss(tmp_path / "bad.pth")
