"""Real bitstreams: exact round trips, file size against the model's rate, and clear errors on bad input."""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.cli import main as gankit_main
from gankit.codec import (HEADER_BYTES, MAGIC, Codec, CodecError, _decode, _encode, compress_file,
                          decompress_file, factorized_tables, load_codec, model_fingerprint, read_rgb_image)
from gankit.models.compression import (CompressionConfig, FactorizedPriorCodec, ScaleHyperpriorCodec,
                                       rate_distortion_loss)


def _photo(h: int, w: int) -> torch.Tensor:
    from skimage.data import astronaut

    return torch.from_numpy(astronaut()[:h, 100:100 + w].copy()).permute(2, 0, 1).float() / 255  # (3, h, w)


@functools.lru_cache(maxsize=None)
def _trained(cls, seed: int = 0) -> torch.nn.Module:
    """A tiny codec after 40 steps on crops of one photo: latents and densities are no longer random."""
    torch.manual_seed(seed)
    model = cls(16, 24)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    photo = _photo(256, 256)
    for step in range(40):
        top, left = (step * 37) % 128, (step * 53) % 128
        x = photo[:, top:top + 128, left:left + 128][None]
        loss, _ = rate_distortion_loss(x, model(x), lmbda=0.01)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module", params=[FactorizedPriorCodec, ScaleHyperpriorCodec], ids=["factorized", "hyperprior"])
def codec(request) -> Codec:
    return Codec(copy.deepcopy(_trained(request.param)), lmbda=0.01, name=request.param.__name__)


def _checkpoint(codec: Codec, path) -> str:
    config = CompressionConfig(model="factorized" if isinstance(codec.model, FactorizedPriorCodec) else "hyperprior",
                               N=16, M=24, lmbda=0.01)
    from dataclasses import asdict
    torch.save({"models": {"codec": codec.model.state_dict()}, "config": asdict(config)}, path)
    return str(path)


@pytest.mark.parametrize("size", [(256, 256), (200, 300)], ids=["square", "padded"])
def test_round_trip_recovers_the_latents_exactly_and_the_size_matches_the_rate(codec, size):
    image = _photo(*size)
    data = codec.compress(image)
    assert data[:4] == MAGIC
    decoded, hw = codec.decode_latents(data)
    encoded = codec.latents(image)
    assert hw == size and decoded.keys() == encoded.keys()
    for key in encoded:
        assert torch.equal(decoded[key], encoded[key]), key
    payload_bits = 8 * (len(data) - HEADER_BYTES)
    assert payload_bits == pytest.approx(codec.estimate_bits(image), rel=0.05)
    # the decoded image is exactly the model's own reconstruction from rounded latents, cropped
    with torch.no_grad():
        expected = codec.model(codec._pad(image), quantizer="round")["x_hat"][0, :, :size[0], :size[1]].clamp(0, 1)
    torch.testing.assert_close(codec.decompress(data), expected)


def test_latents_outside_the_tables_are_escaped_and_come_back(codec):
    latents = codec.latents(_photo(128, 128))
    key = "y" if codec.kind == 0 else "z"
    latents[key][0, 0, 0, 0] = 5000
    latents[key][0, 1, 1, 1] = -7000
    words, escapes, R = _encode(codec, latents)
    assert sorted(escapes) == [-7000, 5000]
    decoded = _decode(codec, words, escapes, R, tuple(latents["y"].shape))
    for name in latents:
        assert torch.equal(decoded[name], latents[name])


def test_tables_are_deterministic_and_the_fingerprint_follows_the_weights():
    model = copy.deepcopy(_trained(FactorizedPriorCodec))
    first, second = factorized_tables(model.entropy_y), factorized_tables(model.entropy_y)
    assert np.array_equal(first[0], second[0]) and all(np.array_equal(a, b) for a, b in zip(first[1], second[1]))
    assert all(t.min() >= 1 and abs(t.sum() - 2 ** 16) < 0.01 * 2 ** 16 for t in first[1])
    fingerprint = model_fingerprint(model)
    with torch.no_grad():
        model.g_s[0].bias[0] += 1e-3
    assert model_fingerprint(model) != fingerprint


def test_a_codec_leaves_the_callers_model_alone():
    model = FactorizedPriorCodec(8, 8).train()
    codec = Codec(model)
    assert model.training and not codec.model.training and codec.model is not model


def test_bad_files_give_clear_errors(codec):
    data = codec.compress(_photo(128, 128))
    with pytest.raises(CodecError, match="truncated"):
        codec.decompress(data[:-5], source="cut.gkc")
    with pytest.raises(CodecError, match="extra bytes"):
        codec.decompress(data + b"\0", source="long.gkc")
    with pytest.raises(CodecError, match="not a gankit compressed image.*make it with"):
        codec.decompress(b"\x89PNG" + data[4:], source="photo.png")
    with pytest.raises(CodecError, match="shorter than a header"):
        codec.decompress(data[:10])
    with pytest.raises(CodecError, match="format version 9"):
        codec.decompress(data[:4] + b"\x09" + data[5:])
    damaged = bytearray(data)
    damaged[HEADER_BYTES + (len(data) - HEADER_BYTES) // 2] ^= 0x5A  # one flipped byte in the middle of the payload
    with pytest.raises(CodecError, match="damaged.gkc: (the decoded latents fail the file's CRC-32|the coded data is corrupted)"):
        codec.decompress(bytes(damaged), source="damaged.gkc")
    for bad, message in ((torch.rand(1, 3, 8, 8), r"shape \(3, H, W\)"), (torch.rand(3, 8, 8) * 255, r"\[0, 1\]")):
        with pytest.raises(CodecError, match=message):
            codec.compress(bad)
    other = Codec(type(codec.model)(16, 24))
    with pytest.raises(CodecError, match=f"written by the .* model {codec.model_id.hex()}.*checkpoint that compressed it"):
        other.decompress(data, source="x.gkc")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_images_that_are_not_8_bit_rgb_are_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / f"image_{mode.replace(';', '')}.png"
    Image.new(mode, (32, 32)).save(path)
    with pytest.raises(CodecError, match=f"{path}.*mode '{mode}'.*convert"):
        read_rgb_image(path)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(CodecError, match="notes.png: not an image"):
        read_rgb_image(tmp_path / "notes.png")


def test_cli_compress_then_decompress(codec, tmp_path, capsys):
    checkpoint = _checkpoint(codec, tmp_path / "last.pt")
    array = (_photo(128, 192).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "in.png")
    assert gankit_main(["compress", str(tmp_path / "in.png"), str(tmp_path / "in.gkc"), "--checkpoint", checkpoint]) == 0
    assert "bpp" in capsys.readouterr().out
    assert gankit_main(["decompress", str(tmp_path / "in.gkc"), str(tmp_path / "out.png"), "--checkpoint", checkpoint]) == 0
    loaded = load_codec(checkpoint)
    expected = loaded.decompress((tmp_path / "in.gkc").read_bytes())
    decoded = np.asarray(Image.open(tmp_path / "out.png"))
    assert decoded.shape == (128, 192, 3)
    assert np.abs(decoded.astype(int) - (expected.permute(1, 2, 0).numpy() * 255 + 0.5).astype(int)).max() == 0
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave nothing behind
    # a missing or wrong checkpoint and a corrupt file exit 2 with the reason
    assert gankit_main(["decompress", str(tmp_path / "in.gkc"), str(tmp_path / "o.png"),
                        "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: no such checkpoint" in capsys.readouterr().err
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert gankit_main(["compress", str(tmp_path / "in.png"), str(tmp_path / "x.gkc"), "--checkpoint",
                        str(tmp_path / "broken.pt")]) == 2
    assert "broken.pt: cannot be read as a torch checkpoint" in capsys.readouterr().err
    torch.save({"models": {"G": {}}}, tmp_path / "gan.pt")
    assert gankit_main(["compress", str(tmp_path / "in.png"), str(tmp_path / "x.gkc"), "--checkpoint",
                        str(tmp_path / "gan.pt")]) == 2
    assert "not a compression checkpoint" in capsys.readouterr().err
    (tmp_path / "cut.gkc").write_bytes((tmp_path / "in.gkc").read_bytes()[:-3])
    assert gankit_main(["decompress", str(tmp_path / "cut.gkc"), str(tmp_path / "o.png"), "--checkpoint", checkpoint]) == 2
    assert "cut.gkc: truncated" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_compress_file_and_decompress_file_write_atomically(codec, tmp_path):
    array = (_photo(64, 64).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    size = compress_file(codec, tmp_path / "a.png", tmp_path / "a.gkc")
    assert size == (tmp_path / "a.gkc").stat().st_size
    assert decompress_file(codec, tmp_path / "a.gkc", tmp_path / "b.png") == (64, 64)
    with pytest.raises(CodecError, match="nothing.gkc: no such file"):
        decompress_file(codec, tmp_path / "nothing.gkc", tmp_path / "c.png")
