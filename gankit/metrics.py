"""Fréchet Inception Distance (FID) with the standard Inception weights, loaded from a local file.

The network is torch-fidelity's ``FeatureExtractorInceptionV3``: the port of the TensorFlow FID
Inception graph (``pt_inception-2015-12-05``) that torchmetrics also uses, including the
TensorFlow-1.x bilinear resize to 299 x 299, so numbers compare with published FIDs. The distance
itself is the formula of the reference implementation (TTUR ``fid.py``, as in pytorch-fid)::

    FID = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

Nothing is downloaded, ever: the weights are read from ``weights_path``, else
``$GANKIT_INCEPTION_WEIGHTS``, else ``<gankit cache>/weights/`` + :data:`INCEPTION_FILENAME`
(the cache root of :func:`gankit.data.default_root`). A missing or altered file raises
:class:`WeightsError` saying where to get the file, its SHA-256, and where to put it.

Typical use::

    from gankit.metrics import InceptionFeatures, fid
    inception = InceptionFeatures(device=DEVICE)        # load once (about a second)
    score = fid(fake_images, "data/horse2zebra/testB", extractor=inception)

Images are (N, 3, H, W) float tensors in [-1, 1] (what the generators output) or uint8 in
[0, 255]; FID is defined on 8-bit images, so floats are quantised exactly as
``Trainer.save_samples`` quantises them for the PNGs, and the FID of a batch equals the FID of
its saved files. Use at least a few thousand images per side for numbers worth comparing: with
fewer than 2048 the covariance is singular and the estimate is strongly biased upwards.

``import gankit.metrics`` imports neither torch-fidelity nor scipy; they load on first use.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
import torch

from gankit.data.registry import DataError

#: The FID Inception weights, converted from TensorFlow's 2015-12-05 Inception graph. URL as in
#: torch-fidelity 0.4.0 (feature_extractor_inceptionv3.URL_INCEPTION_V3); pytorch-fid serves the
#: same file under another name. SHA-256 and size as recorded for that file in several public
#: evaluation logs (its first 8 hex digits are the ``6726825d`` torch.hub puts in the name).
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_MIRRORS = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                     "pt_inception-2015-12-05-6726825d.pth",)
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_SIZE = 95_628_359
WEIGHTS_ENV = "GANKIT_INCEPTION_WEIGHTS"
FEATURE_DIM = 2048

ImageSource = Union[torch.Tensor, np.ndarray, str, os.PathLike, Iterable[Any]]


class WeightsError(DataError):
    """The Inception weights file is missing or is not the expected file; the message says how to fix it."""


# ------------------------------------------------------------------------------ the distance
def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a set of feature vectors.

    Parameters
    ----------
    features : (N, D) tensor or array
        One row per image, N >= 2.

    Returns
    -------
    mu : (D,) float64 ndarray
    sigma : (D, D) float64 ndarray
        Unbiased (N - 1) covariance, as ``np.cov``, like the reference implementation.
    """
    if torch.is_tensor(features):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 @ sigma2))`` in float64, computed as
    the reference implementation does: when the product is (numerically) singular, ``eps`` is
    added to both diagonals and the square root retaken; a negligible imaginary part left by
    rounding is dropped, a large one is an error.

    Parameters
    ----------
    mu1, mu2 : (D,) array
    sigma1, sigma2 : (D, D) symmetric positive semi-definite arrays
    eps : float
        Diagonal offset used only when the product has no finite square root.

    Returns
    -------
    float
        Non-negative up to rounding (tiny negatives from rounding are returned as they are).

    Notes
    -----
    Cubic in D: for D = 2048 a few seconds on a laptop CPU (tens on a 2-core VM).
    """
    from scipy import linalg  # scipy imports slowly: only when a distance is computed

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"covariances must both be {(mu1.size, mu1.size)}, got {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is handled below, as the reference does
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # sigma1 @ sigma2 is similar to a PSD matrix, so its root is real; rounding may leave a
        # small imaginary part (the reference tolerates 1e-3 on the diagonal).
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm(sigma1 @ sigma2): "
                             "are the covariances symmetric positive semi-definite?")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(features1: torch.Tensor | np.ndarray, features2: torch.Tensor | np.ndarray) -> float:
    """FID between two sets of features, (N1, D) and (N2, D): the distance of their Gaussian fits."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# ------------------------------------------------------------------------------ the weights
def default_weights_path() -> Path:
    """``$GANKIT_INCEPTION_WEIGHTS`` if set, else ``<gankit cache root>/weights/<INCEPTION_FILENAME>``."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    from gankit.data.fetch import default_root

    return default_root() / "weights" / INCEPTION_FILENAME


def _how_to_get(path: Path) -> str:
    mirrors = "".join(f"\n     (the same file: {url})" for url in INCEPTION_MIRRORS)
    return (f"gankit never downloads at run time; place the file by hand:\n"
            f"  1. download {INCEPTION_URL}{mirrors}\n"
            f"  2. check it: sha256 {INCEPTION_SHA256}, {INCEPTION_SIZE} bytes "
            f"(`sha256sum {INCEPTION_FILENAME}`)\n"
            f"  3. put it at {path}\n"
            f"     or keep it anywhere and set {WEIGHTS_ENV}=/path/to/it (or pass weights_path=)")


def resolve_weights(weights_path: str | os.PathLike | None = None, *, check_hash: bool = True) -> Path:
    """The weights file to load, checked.

    Parameters
    ----------
    weights_path : path, optional
        Default :func:`default_weights_path`.
    check_hash : bool
        Require the official file (size and SHA-256, about 0.2 s). Turn off only for your own
        conversions or for tests with random weights.

    Raises
    ------
    WeightsError
        If the file is missing, or ``check_hash`` and its size or SHA-256 differ; the message
        names the path, the official URL and SHA-256, and how to place the file.
    """
    path = Path(weights_path).expanduser() if weights_path is not None else default_weights_path()
    if not path.is_file():
        raise WeightsError(f"FID Inception weights not found at {path}.\n{_how_to_get(path)}")
    if check_hash:
        size = path.stat().st_size
        digest = hashlib.sha256()
        if size == INCEPTION_SIZE:  # a wrong size is reported without reading 95 MB
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        if size != INCEPTION_SIZE or digest.hexdigest() != INCEPTION_SHA256:
            found = f"sha256 {digest.hexdigest()}" if size == INCEPTION_SIZE else f"{size} bytes"
            raise WeightsError(f"{path} is not the FID Inception weights file (it has {found}; expected "
                               f"sha256 {INCEPTION_SHA256}, {INCEPTION_SIZE} bytes): a partial download "
                               f"or another file.\n{_how_to_get(path)}")
    return path


# ------------------------------------------------------------------------------ the network
def to_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Images as (N, 3, H, W) uint8, the input the FID Inception expects.

    Parameters
    ----------
    images : (N, C, H, W) tensor or array, C in {1, 3}
        uint8 in [0, 255] is kept; floats are taken to be in [-1, 1], clamped and rounded as
        ``torchvision.utils.save_image`` rounds ``(x + 1) / 2`` when writing a PNG. One channel is
        repeated to three.
    """
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise ValueError(f"images must be uint8 in [0, 255] or float in [-1, 1], got {images.dtype}")
        images = ((images.detach().float().clamp(-1, 1) + 1) / 2).mul(255).add_(0.5).clamp_(0, 255)
        images = images.to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class InceptionFeatures:
    """The FID Inception network: images in, 2048-d pool features out.

    Parameters
    ----------
    weights_path : path, optional
        The weights file; see :func:`resolve_weights` for the default and the checks.
    device : str or torch.device, optional
        Where the network runs; default ``gankit.pick_device("auto")``.
    batch_size : int
        Images per forward pass (memory: about 0.1 GB per 50 images on a GPU).
    check_hash : bool
        Require the official weights file (see :func:`resolve_weights`).

    Calling it on (N, C, H, W) images (see :func:`to_uint8`; any H, W: the network resizes to
    299 x 299 itself) returns (N, 2048) float32 features on the CPU.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
                 *, batch_size: int = 50, check_hash: bool = True) -> None:
        from gankit.device import pick_device

        self.weights_path = resolve_weights(weights_path, check_hash=check_hash)
        self.device = pick_device(device if device is not None else "auto")
        self.batch_size = int(batch_size)
        if not check_hash:
            # torch-fidelity unpickles with weights_only=False; a file that is not the verified
            # official one must first pass the safe loader, which refuses pickled code.
            try:
                torch.load(self.weights_path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise WeightsError(f"{self.weights_path} is not a plain state dict ({err})") from err
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as err:
            raise ImportError("FID needs torch-fidelity (`make setup` installs it; or "
                              "`pip install torch-fidelity==0.4.0`)") from err

        try:
            net = FeatureExtractorInceptionV3("inception-v3-compat", [str(FEATURE_DIM)],
                                              feature_extractor_weights_path=str(self.weights_path))
        except RuntimeError as err:  # load_state_dict: missing or unexpected keys, wrong shapes
            raise WeightsError(f"{self.weights_path} does not fit the FID Inception network: {err}") from err
        self.net = net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        images = to_uint8(images)
        chunks = [self.net(images[i:i + self.batch_size].to(self.device))[0].float().cpu()
                  for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, FEATURE_DIM)

    def __repr__(self) -> str:
        return f"InceptionFeatures({str(self.weights_path)!r}, device={str(self.device)!r})"


# ------------------------------------------------------------------------------ sources -> FID
def _image_batches(source: ImageSource, batch_size: int) -> Iterable[torch.Tensor]:
    """(B, C, H, W) batches from a tensor/array, a folder of image files, or an iterable of batches."""
    if torch.is_tensor(source) or isinstance(source, np.ndarray):
        source = torch.as_tensor(source)
        for i in range(0, source.shape[0], batch_size):
            yield source[i:i + batch_size]
    elif isinstance(source, (str, os.PathLike)):
        from gankit.data.unaligned import list_images, load_rgb  # recursive, sorted, RGB

        pending: list[torch.Tensor] = []
        for path in list_images(source):
            image = torch.from_numpy(np.array(load_rgb(path), np.uint8)).permute(2, 0, 1)
            if pending and (len(pending) == batch_size or image.shape != pending[0].shape):
                yield torch.stack(pending)  # only equal sizes stack; the network resizes each batch
                pending = []
            pending.append(image)
        if pending:
            yield torch.stack(pending)
    else:
        for batch in source:  # e.g. a DataLoader: take the images out of (images, labels) pairs
            if isinstance(batch, (list, tuple)):
                batch = batch[0]
            elif isinstance(batch, dict):
                raise ValueError("batches are dicts; pass a generator that yields the image tensors")
            yield batch


def inception_statistics(source: ImageSource, *, extractor: InceptionFeatures | None = None,
                         weights_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
                         batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Mean (2048,) and covariance (2048, 2048) of the Inception features of a set of images.

    Parameters
    ----------
    source : tensor, array, path or iterable
        (N, C, H, W) images (see :func:`to_uint8`); a folder of image files (searched
        recursively); a ``.npz`` file with ``mu`` and ``sigma`` (from :func:`save_statistics`,
        or pytorch-fid's reference statistics); or an iterable of image batches.
    extractor : InceptionFeatures, optional
        Reuse a loaded network; otherwise one is built from ``weights_path`` and ``device``.
    """
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".npz"):
        with np.load(source) as stats:
            return stats["mu"].astype(np.float64), stats["sigma"].astype(np.float64)
    extractor = extractor or InceptionFeatures(weights_path, device, batch_size=batch_size)
    features = [extractor(batch) for batch in _image_batches(source, batch_size)]
    if not features:
        raise ValueError("no images to compute FID statistics from")
    return feature_statistics(torch.cat(features))


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Write ``mu`` and ``sigma`` to an ``.npz`` that :func:`fid` accepts in place of images."""
    from gankit.io import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, mu=mu, sigma=sigma)
    return path


def fid(source1: ImageSource, source2: ImageSource, *, extractor: InceptionFeatures | None = None,
        weights_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
        batch_size: int = 50) -> float:
    """FID between two sets of images: generated samples, a folder, or saved statistics.

    Parameters
    ----------
    source1, source2 : tensor, array, path or iterable
        See :func:`inception_statistics`.
    extractor : InceptionFeatures, optional
        A loaded network to reuse across calls; otherwise one is loaded (once for both sides)
        from ``weights_path`` (default: see :func:`resolve_weights`) onto ``device``.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    float
        The FID (0 for identical sets, larger is worse).
    """
    needs_network = not all(isinstance(s, (str, os.PathLike)) and str(s).endswith(".npz")
                            for s in (source1, source2))
    if extractor is None and needs_network:
        extractor = InceptionFeatures(weights_path, device, batch_size=batch_size)
    stats1 = inception_statistics(source1, extractor=extractor, batch_size=batch_size)
    stats2 = inception_statistics(source2, extractor=extractor, batch_size=batch_size)
    return frechet_distance(*stats1, *stats2)
