"""gankit.metrics: the Fréchet distance against closed forms, the local-only weights loader, and
the FID Inception path run end to end with random weights (the real file is never needed)."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from gankit import metrics
from gankit.metrics import (INCEPTION_SHA256, INCEPTION_URL, InceptionFeatures, WeightsError,
                            feature_statistics, fid, fid_from_features, frechet_distance,
                            inception_statistics, resolve_weights, save_statistics, to_uint8)


def random_spd(d, rng, scale=1.0):
    a = rng.normal(size=(d, d)) * scale
    return a @ a.T + 0.1 * np.eye(d)


def sym_sqrt(m):
    """Square root of a symmetric PSD matrix through its eigendecomposition (no scipy.sqrtm)."""
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# ------------------------------------------------------------------------------ the distance
def test_one_dimensional_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + 1.0, rel=1e-9)


def test_diagonal_covariances_match_the_elementwise_formula():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_commuting_covariances_share_eigenvectors():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.2, 2, 5), rng.uniform(0.2, 2, 5)
    sigma1, sigma2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu = rng.normal(size=5)
    expected = np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu, sigma1, mu, sigma2) == pytest.approx(expected, rel=1e-8)


def test_non_commuting_covariances_against_two_independent_routes():
    rng = np.random.default_rng(2)
    sigma1, sigma2 = random_spd(8, rng), random_spd(8, rng, scale=0.5)
    assert not np.allclose(sigma1 @ sigma2, sigma2 @ sigma1)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), a symmetric root computed with eigh only
    root1 = sym_sqrt(sigma1)
    tr_eigh = np.trace(sym_sqrt(root1 @ sigma2 @ root1))
    tr_scipy = np.trace(linalg.sqrtm(sigma1 @ sigma2)).real
    base = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
    got = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert got == pytest.approx(base - 2 * tr_eigh, rel=1e-8)
    assert got == pytest.approx(base - 2 * tr_scipy, rel=1e-8)
    assert got == pytest.approx(frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-8), "symmetric"


def test_feature_statistics_and_fid_of_samples():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 3)) * [1.0, 2.0, 0.5] + [1.0, 0.0, -1.0]
    y = rng.normal(size=(4000, 3)) * [1.5, 2.0, 0.5]
    mu, sigma = feature_statistics(torch.from_numpy(x).float())
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (3, 3)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(x.T), rtol=1e-5, atol=1e-6)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-9)
    assert fid_from_features(x, y) == pytest.approx(fid_from_features(y, x), rel=1e-9)
    truth = (1 + 0 + 1) + (1.0 - 1.5) ** 2  # means differ by (1, 0, -1); one std by 0.5
    assert fid_from_features(x, y) == pytest.approx(truth, abs=0.1)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 3)))


def test_singular_product_takes_the_eps_route(monkeypatch):
    calls = []
    real_sqrtm = linalg.sqrtm

    def flaky_sqrtm(m):
        calls.append(m.copy())
        return np.full_like(m, np.inf) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(linalg, "sqrtm", flaky_sqrtm)
    sigma = np.diag([1.0, 0.0])
    got = frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma, eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (sigma + 1e-6 * np.eye(2)) @ (sigma + 1e-6 * np.eye(2)))
    assert got == pytest.approx(0.0, abs=1e-5)


def test_large_imaginary_part_and_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="mean vectors"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# ------------------------------------------------------------------------------ the weights
def test_missing_weights_say_where_and_what(tmp_path, monkeypatch):
    monkeypatch.delenv("GANKIT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "cache"))
    expected = tmp_path / "cache" / "weights" / metrics.INCEPTION_FILENAME
    assert metrics.default_weights_path() == expected
    with pytest.raises(WeightsError) as err:
        InceptionFeatures(device="cpu")
    message = str(err.value)
    for needed in (str(expected), INCEPTION_URL, INCEPTION_SHA256, "GANKIT_INCEPTION_WEIGHTS"):
        assert needed in message
    elsewhere = tmp_path / "mine.pth"
    monkeypatch.setenv("GANKIT_INCEPTION_WEIGHTS", str(elsewhere))
    with pytest.raises(WeightsError, match=str(elsewhere)):
        resolve_weights()


def test_a_wrong_file_is_refused_before_loading(tmp_path):
    short = tmp_path / "partial.pth"
    short.write_bytes(b"\x00" * 1000)
    with pytest.raises(WeightsError, match="1000 bytes") as err:
        resolve_weights(short)
    assert INCEPTION_SHA256 in str(err.value) and INCEPTION_URL in str(err.value)
    same_size = tmp_path / "other.pth"
    with open(same_size, "wb") as handle:
        handle.truncate(metrics.INCEPTION_SIZE)  # sparse: right size, wrong bytes
    with pytest.raises(WeightsError, match="sha256 "):
        resolve_weights(same_size)
    assert resolve_weights(short, check_hash=False) == short


def test_importing_metrics_loads_neither_library():
    code = ("import sys, gankit.metrics; "
            "assert not any(m.startswith(('torch_fidelity', 'scipy')) for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith(('torch_fidelity', 'scipy')))")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------ the network
@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A random state dict for the FID Inception, saved as a file, built without any download."""
    mp = pytest.MonkeyPatch()
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    try:
        mp.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict",
                   lambda self, state, strict=True: None)
        torch.manual_seed(0)
        net = tf_inception.FeatureExtractorInceptionV3("random", ["2048"])
    finally:
        mp.undo()
    for module in net.modules():  # PyTorch's default init makes the 2048 features ~1e-8: rescale
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("weights") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def extractor(random_weights):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    mp = pytest.MonkeyPatch()
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    try:
        mp.setattr(tf_inception, "load_state_dict_from_url", no_download)
        mp.setattr(torch.hub, "load_state_dict_from_url", no_download)
        return InceptionFeatures(random_weights, device="cpu", batch_size=2, check_hash=False)
    finally:
        mp.undo()


def _images(seed, n=3, size=16):
    """(n, 3, size, size) in [-1, 1], smooth enough that different sets differ in features."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)


def test_the_local_file_is_what_runs(extractor, random_weights):
    saved = torch.load(random_weights, weights_only=True)
    loaded = extractor.net.state_dict()
    assert saved.keys() == loaded.keys() and len(saved) == 566  # the official file has 566 entries too
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    with pytest.raises(WeightsError, match=INCEPTION_SHA256):
        InceptionFeatures(random_weights, device="cpu")  # check_hash=True: not the official file


def test_features_and_fid_through_the_network(extractor, tmp_path, monkeypatch):
    from torchvision.utils import save_image

    a = _images(1)
    features = extractor(a)
    assert features.shape == (3, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all() and not torch.allclose(features[0], features[1])
    folder = tmp_path / "a"
    folder.mkdir()
    for i, image in enumerate(a):  # the way Trainer.save_samples writes PNGs
        save_image((image.clamp(-1, 1) + 1) / 2, folder / f"{i}.png")
    # A 2048-d matrix square root takes tens of seconds on a small CI machine; the distance is
    # tested above, here only what reaches it.
    seen = []
    monkeypatch.setattr(metrics, "frechet_distance", lambda *stats: seen.append(stats) or 1.25)
    assert fid(folder, a, extractor=extractor) == 1.25
    mu, sigma = feature_statistics(features)
    (mu1, sigma1, mu2, sigma2), = seen
    for got_mu, got_sigma in ((mu1, sigma1), (mu2, sigma2)):  # folder re-read == tensor: same bytes
        np.testing.assert_allclose(got_mu, mu, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got_sigma, sigma, rtol=1e-4, atol=1e-9)


def test_saved_statistics_need_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    rng = np.random.default_rng(4)
    first = save_statistics(tmp_path / "one.npz", *feature_statistics(rng.normal(size=(50, 4))))
    second = save_statistics(tmp_path / "two.npz", *feature_statistics(rng.normal(size=(50, 4)) + 1))
    mu, sigma = inception_statistics(first)
    assert mu.shape == (4,) and sigma.shape == (4, 4)
    assert fid(first, second) == pytest.approx(frechet_distance(mu, sigma, *inception_statistics(second)))
    with pytest.raises(WeightsError, match="absent.pth"):
        fid(first, torch.zeros(2, 3, 8, 8))


def test_to_uint8_rounds_like_a_saved_png():
    from torchvision.utils import save_image

    x = torch.linspace(-1.2, 1.2, 3 * 8 * 8).reshape(1, 3, 8, 8)
    buffer = io.BytesIO()
    save_image((x.clamp(-1, 1) + 1) / 2, buffer, format="png")
    png = torch.from_numpy(np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    assert torch.equal(to_uint8(x)[0], png.permute(2, 0, 1))
    gray = to_uint8(x[:, :1])
    assert gray.shape == (1, 3, 8, 8) and torch.equal(gray[:, 0], gray[:, 2])
    with pytest.raises(ValueError, match="uint8"):
        to_uint8(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
