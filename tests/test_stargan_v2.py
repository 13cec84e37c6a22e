"""Week 6 components: gankit.models.stargan_v2 (StarGAN v2) and gankit.editor (StarGAN's attribute editor).

StarGAN v2 facts from clovaai/stargan-v2 core/model.py (AdaIN, MappingNetwork, StyleEncoder) and
core/solver.py (r1_reg, the ds term); the expected values are computed by hand, independently of gankit.
The editor's update logic is tested without a browser: its plain methods, and the ipywidgets it wires,
driven by setting their values as a click would.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gankit.editor import AttributeEditor, attribute_editor
from gankit.models.stargan import CELEBA_ATTRS, Generator, StarGANConfig
from gankit.models.stargan_v2 import (AdaIN, MappingNetwork, StyleEncoder, diversity_loss, he_init,
                                      r1_regularization, select_domain)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# ----------------------------------------------------------------------------- AdaIN
def test_adain_matches_the_closed_form():
    torch.manual_seed(0)
    ada = AdaIN(style_dim=3, num_features=2)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [2.0, 6.0]]]])  # (1, 2, 2, 2)
    s = torch.tensor([[0.5, -1.0, 2.0]])
    h = s @ ada.fc.weight.T + ada.fc.bias                                     # (1, 4): gamma_0, gamma_1, beta_0, beta_1
    gamma, beta = h[0, :2], h[0, 2:]
    expected = torch.empty_like(x)
    for c in range(2):
        values = x[0, c]
        mean = values.mean()
        var = ((values - mean) ** 2).mean()                                   # biased, as instance norm
        expected[0, c] = (1 + gamma[c]) * (values - mean) / torch.sqrt(var + 1e-5) + beta[c]
    torch.testing.assert_close(ada(x, s), expected)
    # channel 0 by hand: mean 2.5, variance 1.25
    normed = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / (1.25 + 1e-5) ** 0.5
    torch.testing.assert_close(ada(x, s)[0, 0].flatten(), (1 + gamma[0]) * normed + beta[0])


def test_adain_with_zero_gamma_and_beta_is_plain_instance_norm():
    ada = AdaIN(style_dim=4, num_features=3)
    nn.init.zeros_(ada.fc.weight)
    nn.init.zeros_(ada.fc.bias)
    x = torch.randn(2, 3, 5, 5) * 3 + 1
    out = ada(x, torch.randn(2, 4))
    torch.testing.assert_close(out, nn.functional.instance_norm(x))
    torch.testing.assert_close(out.mean((2, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var((2, 3), unbiased=False), torch.ones(2, 3), atol=1e-4, rtol=0)


def test_adain_sets_the_channel_statistics_from_the_style():
    ada = AdaIN(style_dim=2, num_features=1)
    with torch.no_grad():
        ada.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))   # gamma = s_0, beta = s_1
        ada.fc.bias.zero_()
    out = ada(torch.randn(1, 1, 8, 8), torch.tensor([[2.0, -3.0]]))
    assert abs(out.mean().item() + 3) < 1e-4                          # the mean is beta
    assert abs(out.std(unbiased=False).item() - 3) < 1e-3             # the std is 1 + gamma
    with pytest.raises(ValueError):
        ada(torch.randn(1, 2, 4, 4), torch.randn(1, 2))


# ----------------------------------------------------------------------------- mapping network
def test_mapping_network_shapes_and_official_size():
    net = MappingNetwork()                                             # latent 16, style 64, 2 domains, hidden 512
    s = net(torch.randn(5, 16), torch.tensor([0, 1, 1, 0, 1]))
    assert s.shape == (5, 64)
    shared = linear(16, 512) + 3 * linear(512, 512)
    head = 3 * linear(512, 512) + linear(512, 64)
    assert count(net) == shared + 2 * head == 2_438_272
    assert len(net.unshared) == 2 and net.forward_all(torch.randn(3, 16)).shape == (3, 2, 64)


def test_mapping_network_selects_each_samples_head():
    torch.manual_seed(0)
    net = MappingNetwork(latent_dim=4, style_dim=3, num_domains=3, hidden=8)
    z = torch.randn(4, 4)
    y = torch.tensor([2, 0, 1, 2])
    out = net(z, y)
    h = net.shared(z)
    for b in range(4):
        torch.testing.assert_close(out[b], net.unshared[int(y[b])](h[b:b + 1])[0])
    torch.testing.assert_close(out, select_domain(net.forward_all(z), y))


def test_mapping_network_gives_different_styles_for_different_domains():
    torch.manual_seed(0)
    net = MappingNetwork(latent_dim=4, style_dim=6, num_domains=3, hidden=16)
    z = torch.randn(1, 4).expand(3, 4)                                   # the same z three times
    s = net(z, torch.tensor([0, 1, 2]))
    for i in range(3):
        for j in range(i + 1, 3):
            assert (s[i] - s[j]).abs().max() > 1e-4
    same = net(z, torch.tensor([1, 1, 1]))                               # same z, same domain: same style
    torch.testing.assert_close(same[0], same[2])
    with pytest.raises(ValueError):
        net(z, torch.tensor([0, 1, 3]))                                  # no domain 3
    with pytest.raises(ValueError):
        net(torch.randn(3, 5), torch.tensor([0, 1, 2]))


def test_he_init_as_the_official_keeps_styles_apart():
    torch.manual_seed(0)
    net = MappingNetwork()
    for layer in [m for m in net.modules() if isinstance(m, nn.Linear)]:
        assert layer.bias.abs().max() == 0
        expected_std = (2 / layer.in_features) ** 0.5                 # He normal, fan_in, ReLU gain
        assert abs(layer.weight.std().item() / expected_std - 1) < 0.1 + 3 / layer.weight.numel() ** 0.5
    z = torch.randn(2, 16)
    with torch.no_grad():
        s = net(z, torch.tensor([0, 0]))
    assert (s[0] - s[1]).abs().mean() > 0.1 * s.abs().mean()            # two latents: two clearly different styles
    conv = nn.Conv2d(4, 4, 3)
    he_init(conv)
    assert conv.bias.abs().max() == 0


# ----------------------------------------------------------------------------- style encoder
def test_style_encoder_shapes_heads_and_size():
    torch.manual_seed(0)
    enc = StyleEncoder(img_size=16, style_dim=5, num_domains=3, max_conv_dim=16, dim_in=4)
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([1, 2, 0, 1])
    s = enc(x, y)
    assert s.shape == (4, 5)
    h = enc.shared(x).flatten(1)
    assert h.shape == (4, 16)                                            # 4 -> 8 -> 16 channels, 16 -> 4 -> 1 px
    for b in range(4):
        torch.testing.assert_close(s[b], enc.unshared[int(y[b])](h[b]))
    assert enc.forward_all(x).shape == (4, 3, 5)
    # the official at 256 px: dim_in = 2**14 // 256 = 64, six blocks up to 512 channels
    official = StyleEncoder(img_size=256, style_dim=64, num_domains=2, max_conv_dim=512)
    assert official.shared[0].out_channels == 64 and len(official.shared) == 1 + 6 + 3
    assert official.unshared[0].in_features == 512
    with pytest.raises(ValueError):
        enc(torch.randn(1, 3, 32, 32), torch.tensor([0]))


# ----------------------------------------------------------------------------- R1 and diversity
def test_r1_of_a_linear_critic_is_half_the_squared_norm():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    x = torch.randn(6, 3, 4, 4).requires_grad_()
    d_out = (x * w).sum((1, 2, 3))                                       # D(x) = <w, x>, (B,)
    r1 = r1_regularization(d_out, x)
    torch.testing.assert_close(r1, 0.5 * w.pow(2).sum())
    # a (B, 1) output and a critic with a parameter: the penalty has a graph to it
    v = nn.Parameter(torch.tensor(2.0))
    r1_v = r1_regularization((v * x.sum((1, 2, 3))).unsqueeze(1), x)
    torch.testing.assert_close(r1_v, 0.5 * 4.0 * x[0].numel() * torch.ones(()))   # 0.5 * v^2 * n
    (grad_v,) = torch.autograd.grad(r1_v, v)
    torch.testing.assert_close(grad_v, torch.tensor(float(x[0].numel()) * 2.0))   # d/dv 0.5 v^2 n = v n
    with pytest.raises(ValueError):
        r1_regularization(d_out.detach(), torch.randn(6, 3))


def test_r1_of_a_quadratic_critic_averages_per_sample_norms():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]]).requires_grad_()
    d_out = 0.5 * (x ** 2).sum(1)                                        # grad = x
    expected = 0.5 * ((1 + 4) + (9 + 0)) / 2
    assert abs(r1_regularization(d_out, x).item() - expected) < 1e-6


def test_diversity_loss_is_the_mean_absolute_difference():
    a = torch.tensor([[1.0, -2.0], [0.5, 4.0]], requires_grad=True)
    b = torch.tensor([[0.0, 1.0], [0.5, 1.0]], requires_grad=True)
    loss = diversity_loss(a, b)
    assert abs(loss.item() - (1 + 3 + 0 + 3) / 4) < 1e-7
    loss.backward()
    assert b.grad is None                                               # detached second fake, as the official
    assert a.grad is not None
    both = diversity_loss(a, b, detach_second=False)
    both.backward()
    assert b.grad is not None
    assert diversity_loss(a, a).item() == 0
    with pytest.raises(ValueError):
        diversity_loss(a, b[:1])


# ----------------------------------------------------------------------------- the attribute editor
@pytest.fixture
def editor_parts():
    torch.manual_seed(0)
    G = Generator(conv_dim=8, c_dim=5, repeat_num=1)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    labels = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 1]], dtype=torch.float32)
    return G, images, labels


def expected_render(G, image, c, scale):
    with torch.no_grad():
        out = G(image[None], c[None].float())[0]
    to_uint8 = lambda t: np.rint((t.clamp(-1, 1).numpy().transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)
    left, right = (to_uint8(t).repeat(scale, 0).repeat(scale, 1) for t in (image, out))
    return np.concatenate([left, np.full((left.shape[0], 4, 3), 255, np.uint8), right], axis=1)


def test_editor_render_is_input_beside_the_translation(editor_parts):
    G, images, labels = editor_parts
    editor = AttributeEditor(G, images, labels, CELEBA_ATTRS, display_size=64)
    assert editor.scale == 4 and len(editor) == 3
    values = {"Blond_Hair": True, "Young": True}                     # missing names are off
    picture = editor.render(1, values)
    assert picture.dtype == np.uint8 and picture.shape == (64, 2 * 64 + 4, 3)
    c = torch.tensor([0.0, 1, 0, 0, 1])
    np.testing.assert_array_equal(picture, expected_render(G, images[1], c, 4))
    np.testing.assert_array_equal(editor.render(1, c), picture)      # a vector in attr_names order works too
    np.testing.assert_array_equal(editor.render(1, [0, 1, 0, 0, 1]), picture)
    other = editor.render(1, {"Black_Hair": True, "Male": True})
    assert not np.array_equal(other[:, 68:], picture[:, 68:])        # other labels, another translation
    np.testing.assert_array_equal(other[:, :64], picture[:, :64])    # the same input
    assert editor.png(1, values)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        editor.render(0, {"Blue_Hair": True})
    with pytest.raises(IndexError):
        editor.render(3, values)


def test_editor_labels_and_mutually_exclusive_hair(editor_parts):
    G, images, labels = editor_parts
    editor = AttributeEditor(G, images, labels, CELEBA_ATTRS)
    start = editor.values_of(0)
    assert start == {"Black_Hair": True, "Blond_Hair": False, "Brown_Hair": False, "Male": True, "Young": False}
    blond = editor.toggle(start, "Blond_Hair", True)                  # one hair colour on: the others off
    assert blond == {"Black_Hair": False, "Blond_Hair": True, "Brown_Hair": False, "Male": True, "Young": False}
    assert editor.toggle(blond, "Young", True) == {**blond, "Young": True}     # not a hair colour: only itself
    assert editor.toggle(blond, "Male", False) == {**blond, "Male": False}
    assert editor.toggle(blond, "Blond_Hair", False)["Blond_Hair"] is False    # no hair colour at all is allowed
    torch.testing.assert_close(editor.label_vector(blond), torch.tensor([0.0, 1, 0, 1, 0]))
    assert start == editor.values_of(0)                                        # toggle returns a copy
    # with only some hair colours selected, exclusivity applies among those
    two = AttributeEditor(Generator(8, 3, 1), images, labels[:, [0, 2, 3]], ["Black_Hair", "Brown_Hair", "Male"])
    assert two.toggle(two.values_of(0), "Brown_Hair", True) == {"Black_Hair": False, "Brown_Hair": True, "Male": True}
    with pytest.raises(ValueError):
        AttributeEditor(G, images, labels[:, :4], CELEBA_ATTRS[:4])           # G takes 5 attributes


def test_editor_widget_wires_the_logic(editor_parts):
    ipywidgets = pytest.importorskip("ipywidgets")
    G, images, labels = editor_parts
    box = attribute_editor(G, images, labels, CELEBA_ATTRS, names=["a", "b", "c"], display_size=32)
    assert isinstance(box, ipywidgets.Widget)
    editor, boxes = box.editor, box.checkboxes
    assert list(boxes) == list(CELEBA_ATTRS) and all(isinstance(b, ipywidgets.Checkbox) for b in boxes.values())
    state = lambda: {name: b.value for name, b in boxes.items()}
    assert state() == editor.values_of(0)
    assert bytes(box.image.value) == editor.png(0, editor.values_of(0))

    boxes["Brown_Hair"].value = True                                   # a click: Black_Hair goes off
    expected = {"Black_Hair": False, "Blond_Hair": False, "Brown_Hair": True, "Male": True, "Young": False}
    assert state() == expected
    assert bytes(box.image.value) == editor.png(0, expected)
    assert "+Brown_Hair" in box.caption_html.value and "-Black_Hair" in box.caption_html.value

    boxes["Young"].value = True
    assert state() == {**expected, "Young": True}
    assert bytes(box.image.value) == editor.png(0, {**expected, "Young": True})

    box.chooser.value = 1                                              # another image: its own labels
    assert state() == editor.values_of(1)
    assert bytes(box.image.value) == editor.png(1, editor.values_of(1))
    boxes["Male"].value = True
    reset = [c for c in box.children[0].children if isinstance(c, ipywidgets.Button)][0]
    reset.click()
    assert state() == editor.values_of(1)


def test_editor_loads_an_official_style_checkpoint(editor_parts, tmp_path):
    G, images, labels = editor_parts
    path = tmp_path / "200000-G.ckpt"
    torch.save({f"module.{k}": v for k, v in G.state_dict().items()}, path)   # a DataParallel save
    config = StarGANConfig(g_conv_dim=8, g_repeat_num=1)
    G.eval()
    editor = AttributeEditor(path, images, labels, CELEBA_ATTRS, config=config)
    assert editor.G is not G and editor.G.training                     # train mode, as the official solver
    np.testing.assert_array_equal(editor.render(2, editor.values_of(2)),
                                  AttributeEditor(G, images, labels, CELEBA_ATTRS).render(2, editor.values_of(2)))
    assert G.training                                                  # the editor put the given G in train mode
