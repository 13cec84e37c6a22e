"""Real bitstreams for the learned codecs of :mod:`gankit.models.compression`.

    gankit compress photo.png photo.gkc --checkpoint runs/compression/checkpoints/last.pt
    gankit decompress photo.gkc photo_decoded.png --checkpoint runs/compression/checkpoints/last.pt

A file is a 40-byte header (magic, format version, model kind, the model's fingerprint, image
size, rate point, escape count, Gaussian range, payload length, CRC-32 of the latents) followed by one ANS stream
(``constriction``) of 32-bit words and the raw values of the rare latents that fell outside the
probability tables. The hyperprior's side information z is decoded first; its values give the
scales of y through ``h_s``.

Encoder and decoder must use bit-identical probabilities, so every table is quantized here, not
taken from floats the network happens to produce: the factorized densities become integer counts
(2^16 in total per channel) over a per-channel symbol range found by bisection of the cumulative,
plus an escape symbol; the Gaussian scales are snapped to a fixed table of 64 log-spaced values.
Coding runs on the CPU (the hyperprior's scales in float64), so a file decodes on any machine with
the same checkpoint. An
ANS stream has no redundancy: a damaged payload (or, in rare boundary cases, a machine whose float
arithmetic picks a neighbouring scale index) decodes to garbage silently, so the header carries a
CRC-32 of the latents and the decoder checks it and that every word was consumed.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gankit.models.compression import (SCALE_MIN, CompressionConfig, FactorizedDensity, FactorizedPriorCodec,
                                       ScaleHyperpriorCodec, bits_from_likelihoods, build_codec)

MAGIC = b"GKIC"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sBB8sIIfIHII")  # magic, version, kind, model id, H, W, lambda, escapes, R, words, crc
HEADER_BYTES = _HEADER.size
_KINDS = {FactorizedPriorCodec: 0, ScaleHyperpriorCodec: 1}
_KIND_NAMES = ("factorized", "hyperprior")
TABLE_PRECISION = 16              # factorized tables: integer counts summing to about 2^16
TAIL_MASS = 1e-9                  # probability left outside each channel's table (coded as an escape)
MAX_TABLE_WIDTH = 4096
SCALE_TABLE = np.exp(np.linspace(math.log(SCALE_MIN), math.log(256.0), 64))  # the scales y is coded with


class CodecError(ValueError):
    """A file or image the codec cannot use; the message names it and says what to do."""


def model_fingerprint(model: torch.nn.Module) -> bytes:
    """8 bytes of SHA-256 over the model's state (names, shapes, values): which weights wrote a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()[:8]


def factorized_tables(density: FactorizedDensity) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per channel: the first symbol of its table and integer counts for each symbol plus an escape.

    The range covers all but ``TAIL_MASS`` of the density (bisection of the cumulative in float64);
    counts are ``round(p * 2^16)``, at least 1, and the last entry is the escape symbol's.
    """
    density = copy.deepcopy(density).double().cpu()
    channels = density.matrices[0].shape[0]
    with torch.no_grad():
        quantiles = []
        for target in (math.log(TAIL_MASS / (1 - TAIL_MASS)), math.log((1 - TAIL_MASS) / TAIL_MASS)):
            lo = torch.full((channels, 1, 1), -1e4, dtype=torch.float64)
            hi = torch.full((channels, 1, 1), 1e4, dtype=torch.float64)
            for _ in range(64):  # the cumulative is monotone: bisection converges to 1e4 / 2^64
                mid = (lo + hi) / 2
                below = density.logits_cumulative(mid) < target
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            quantiles.append(hi.flatten())
        first = torch.floor(quantiles[0])
        width = (torch.ceil(quantiles[1]) - first + 1).clamp(1, MAX_TABLE_WIDTH).long()
        points = first[:, None] + torch.arange(int(width.max()), dtype=torch.float64)  # (C, K)
        pmf = density(points[None, :, :, None])[0, :, :, 0]  # (C, K)
    offsets, tables = first.long().numpy(), []
    for c in range(channels):
        p = pmf[c, : width[c]].numpy()
        p = np.append(p, max(1.0 - p.sum(), TAIL_MASS))  # the escape symbol
        tables.append(np.maximum(np.round(p * 2 ** TABLE_PRECISION), 1.0))
    return offsets, tables


def scale_indices(scales: torch.Tensor) -> np.ndarray:
    """Index into ``SCALE_TABLE`` nearest (in log space) to each predicted scale."""
    logs = np.log(np.maximum(scales.detach().cpu().double().numpy(), SCALE_MIN))
    step = (math.log(SCALE_TABLE[-1]) - math.log(SCALE_TABLE[0])) / (len(SCALE_TABLE) - 1)
    return np.clip(np.rint((logs - math.log(SCALE_TABLE[0])) / step), 0, len(SCALE_TABLE) - 1).astype(np.int64)


class Codec:
    """A trained model plus everything needed to write and read its files.

    ``compress(image)`` -> bytes and ``decompress(bytes)`` -> image, images (3, H, W) float in
    [0, 1]; ``latents`` / ``decode_latents`` expose the integer latents for exactness checks.
    """

    def __init__(self, model: torch.nn.Module, *, lmbda: float = 0.0, name: str = "codec") -> None:
        if type(model) not in _KINDS:
            raise TypeError(f"expected a FactorizedPriorCodec or ScaleHyperpriorCodec, got {type(model).__name__}")
        model = copy.deepcopy(model).cpu().eval()  # the caller's model keeps training where it was
        self.model = model
        self.kind, self.lmbda, self.name = _KINDS[type(model)], float(lmbda), name
        self.config: CompressionConfig | None = None  # the training recipe, when loaded from a checkpoint
        self.model_id = model_fingerprint(model)
        density = model.entropy_y if self.kind == 0 else model.entropy_z
        self.offsets, self.tables = factorized_tables(density)
        # The decoder recomputes y's scales from z: in float64 a different CPU's kernels move them by
        # ~1e-16, far less than the float32 differences that could flip a scale index at a boundary.
        self._h_s64 = copy.deepcopy(model.h_s).double() if self.kind == 1 else None

    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) -> (1, 3, H', W'), padded by edge replication to multiples of the downsampling."""
        _check_image(image)
        d = self.model.downsampling
        H, W = image.shape[1:]
        return F.pad(image[None].float(), (0, -W % d, 0, -H % d), mode="replicate")

    @torch.no_grad()
    def latents(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Integer latents ``y`` (and ``z``) of an image, (1, C, h, w) int64 each."""
        y = self.model.g_a(self._pad(image))
        out = {"y": torch.round(y).long()}
        if self.kind == 1:
            out["z"] = torch.round(self.model.h_a(torch.abs(y))).long()
        return out

    @torch.no_grad()
    def estimate_bits(self, image: torch.Tensor) -> float:
        """The model's own rate for this image, ``-sum log2 p`` with rounded latents (what training minimizes)."""
        return float(bits_from_likelihoods(self.model(self._pad(image), quantizer="round")["likelihoods"]))

    @torch.no_grad()
    def _scales(self, z: torch.Tensor) -> torch.Tensor:
        return self._h_s64(z.double())

    def compress(self, image: torch.Tensor) -> bytes:
        """Encode an image (3, H, W) in [0, 1] into the file format described in the module docstring."""
        latents = self.latents(image)  # checks the image first
        H, W = image.shape[1:]
        words, escapes, R = _encode(self, latents)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, self.kind, self.model_id, H, W, self.lmbda,
                              len(escapes), R, len(words), _crc(latents))
        return header + words.astype("<u4").tobytes() + np.asarray(escapes, dtype="<i4").tobytes()

    def decode_latents(self, data: bytes, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        """The integer latents stored in ``data`` and the image size (H, W); checks the header first."""
        if len(data) < HEADER_BYTES or data[:4] != MAGIC:
            what = "shorter than a header" if len(data) < HEADER_BYTES else f"starts with {data[:4]!r}, not {MAGIC!r}"
            raise CodecError(f"{source}: not a gankit compressed image ({what}); "
                             "make it with `gankit compress IMAGE OUT --checkpoint ...`")
        magic, version, kind, model_id, H, W, _, n_escapes, R, n_words, crc = _HEADER.unpack_from(data)
        if version != FORMAT_VERSION:
            raise CodecError(f"{source}: format version {version}, this gankit reads version {FORMAT_VERSION}; "
                             "decompress it with the gankit version that wrote it")
        if kind != self.kind or model_id != self.model_id:
            writer = _KIND_NAMES[kind] if kind < len(_KIND_NAMES) else f"kind {kind}"
            raise CodecError(f"{source}: written by the {writer} model {model_id.hex()}, but the checkpoint given "
                             f"is the {_KIND_NAMES[self.kind]} model {self.model_id.hex()}; decompress with the "
                             "checkpoint that compressed it")
        expected = HEADER_BYTES + 4 * n_words + 4 * n_escapes
        if len(data) != expected:
            problem = "truncated" if len(data) < expected else "followed by extra bytes"
            raise CodecError(f"{source}: {problem}: the header says {expected} bytes, the file has {len(data)}; "
                             "copy the file again or re-run gankit compress")
        words = np.frombuffer(data, dtype="<u4", count=n_words, offset=HEADER_BYTES).astype(np.uint32)
        escapes = np.frombuffer(data, dtype="<i4", count=n_escapes, offset=HEADER_BYTES + 4 * n_words)
        d = self.model.downsampling
        shape_y = (1, self.model.M, -(-H // d) * d // 16, -(-W // d) * d // 16)
        try:
            latents = _decode(self, words, escapes.tolist(), R, shape_y)
        except (ValueError, RuntimeError, IndexError, StopIteration) as err:  # a corrupted payload
            raise CodecError(f"{source}: the coded data is corrupted ({err}); re-run gankit compress") from None
        if _crc(latents) != crc:
            raise CodecError(f"{source}: the decoded latents fail the file's CRC-32: the file is damaged, or this "
                             "machine computes the hyperprior's scales differently from the one that wrote it; "
                             "decode on the CPU of the same kind of machine, or re-run gankit compress")
        return latents, (H, W)

    @torch.no_grad()
    def decompress(self, data: bytes, source: str = "<bytes>") -> torch.Tensor:
        """Decode a file's bytes into an image (3, H, W) in [0, 1]."""
        latents, (H, W) = self.decode_latents(data, source)
        x_hat = self.model.g_s(latents["y"].float())  # (1, 3, H', W')
        return x_hat[0, :, :H, :W].clamp(0, 1)


def _encode(codec: Codec, latents: dict[str, torch.Tensor]) -> tuple[np.ndarray, list[int], int]:
    import constriction

    coder, escapes = constriction.stream.stack.AnsCoder(), []
    y = latents["y"].numpy()
    R = 0
    if codec.kind == 1:  # y given z: zero-mean Gaussians, coded first so that z is decoded first
        R = int(max(1, np.abs(y).max()))
        if R > 65535:
            raise CodecError(f"a latent of magnitude {R} cannot be coded; is this checkpoint trained?")
        stds = SCALE_TABLE[scale_indices(codec._scales(latents["z"]))].ravel()
        family = constriction.stream.model.QuantizedGaussian(-R, R)
        coder.encode_reverse(y.ravel().astype(np.int32), family, np.zeros_like(stds), stds)
    factorized = latents["z"].numpy() if codec.kind == 1 else y
    symbols = []
    for c in range(factorized.shape[1]):
        values = factorized[:, c].ravel() - codec.offsets[c]
        n = len(codec.tables[c]) - 1  # the escape symbol's index
        outside = (values < 0) | (values >= n)
        escapes += (values[outside] + codec.offsets[c]).tolist()
        symbols.append(np.where(outside, n, values).astype(np.int32))
    for c in reversed(range(len(symbols))):  # a stack: encode the last channel first
        coder.encode_reverse(symbols[c], constriction.stream.model.Categorical(codec.tables[c], perfect=False))
    return coder.get_compressed(), escapes, R


def _decode(codec: Codec, words: np.ndarray, escapes: list[int], R: int, shape_y: tuple) -> dict[str, torch.Tensor]:
    import constriction

    coder = constriction.stream.stack.AnsCoder(words)
    shape = shape_y if codec.kind == 0 else (1, codec.model.N, shape_y[2] // 4, shape_y[3] // 4)
    count = shape[2] * shape[3]
    channels, escapes = [], iter(escapes)
    for c in range(shape[1]):
        values = coder.decode(constriction.stream.model.Categorical(codec.tables[c], perfect=False), count)
        values = values.astype(np.int64) + codec.offsets[c]
        n = len(codec.tables[c]) - 1
        for i in np.flatnonzero(values == n + codec.offsets[c]):
            values[i] = next(escapes)
        channels.append(values.reshape(shape[2], shape[3]))
    factorized = torch.from_numpy(np.stack(channels)[None])
    if codec.kind == 0:
        _check_consumed(coder)
        return {"y": factorized}
    stds = SCALE_TABLE[scale_indices(codec._scales(factorized))].ravel()
    family = constriction.stream.model.QuantizedGaussian(-R, R)
    y = coder.decode(family, np.zeros_like(stds), stds).astype(np.int64).reshape(shape_y)
    _check_consumed(coder)
    return {"y": torch.from_numpy(y), "z": factorized}


def _check_consumed(coder) -> None:
    if not coder.is_empty():
        raise ValueError("coded words are left over after the last latent")


def _crc(latents: dict[str, torch.Tensor]) -> int:
    """CRC-32 of the integer latents (y, then z), as little-endian int32."""
    crc = 0
    for key in ("y", "z"):
        if key in latents:
            crc = zlib.crc32(latents[key].numpy().astype("<i4").tobytes(), crc)
    return crc


def _check_image(image) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise CodecError(f"expected an RGB image tensor of shape (3, H, W), got {shape}; "
                         "gankit.codec.read_rgb_image(path) reads a file in that form")
    if image.numel() and (image.min() < 0 or image.max() > 1):
        raise CodecError(f"image values must lie in [0, 1], got [{image.min():.3g}, {image.max():.3g}]; "
                         "divide 8-bit values by 255")


# --- files -----------------------------------------------------------------------------------------
def load_codec(checkpoint: str | os.PathLike) -> Codec:
    """A :class:`Codec` from a ``gankit train compression`` checkpoint (``last.pt``)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CodecError(f"{path}: no such checkpoint; train one with `gankit train compression` "
                         "or pass the run's checkpoints/last.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, a pickle weights_only refuses
        raise CodecError(f"{path}: cannot be read as a torch checkpoint ({type(err).__name__}: {err}); "
                         "copy it again from the run's checkpoints/ folder") from None
    models = state.get("models", {}) if isinstance(state, dict) else {}
    if "codec" not in models:
        raise CodecError(f"{path}: not a compression checkpoint (it holds {sorted(models)}); "
                         "pass a checkpoint written by `gankit train compression`")
    try:
        config = CompressionConfig.from_dict(state.get("config") or {})
        model = build_codec(config)
        model.load_state_dict(models["codec"])
    except (ValueError, TypeError, RuntimeError, KeyError, AttributeError) as err:  # unknown keys, other shapes
        raise CodecError(f"{path}: its codec does not load with this gankit ({err})") from None
    stage = " GAN" if config.stage == "gan" else ""
    codec = Codec(model, lmbda=config.lmbda, name=f"{config.model}{stage} lambda={config.lmbda:g}")
    codec.config = config
    return codec


def read_rgb_image(path: str | os.PathLike) -> torch.Tensor:
    """An 8-bit RGB image file as a (3, H, W) tensor in [0, 1]; other modes are a clear error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode, array = image.mode, np.asarray(image) if image.mode == "RGB" else None
    except FileNotFoundError:
        raise CodecError(f"{path}: no such image") from None
    except (UnidentifiedImageError, OSError) as err:
        raise CodecError(f"{path}: not an image Pillow can read ({err})") from None
    if mode != "RGB":
        raise CodecError(f"{path}: image mode {mode!r}; the codec takes 8-bit RGB images. Convert it first, "
                         f"e.g. python -c \"from PIL import Image; Image.open('{path}').convert('RGB').save('rgb.png')\"")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def compress_file(codec: Codec, image_path: str | os.PathLike, out_path: str | os.PathLike) -> int:
    """Compress an image file; the output is written atomically. Returns its size in bytes."""
    from gankit.io import atomic_write

    data = codec.compress(read_rgb_image(image_path))
    with atomic_write(out_path) as handle:
        handle.write(data)
    return len(data)


def decompress_file(codec: Codec, in_path: str | os.PathLike, image_path: str | os.PathLike) -> tuple[int, int]:
    """Decode a compressed file to an image file (PNG unless the suffix says otherwise); returns (H, W)."""
    from PIL import Image

    from gankit.io import atomic_write

    try:
        data = Path(in_path).read_bytes()
    except FileNotFoundError:
        raise CodecError(f"{in_path}: no such file") from None
    image = codec.decompress(data, source=str(in_path))
    array = (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)  # (H, W, 3)
    suffix = Path(image_path).suffix.lstrip(".").lower() or "png"
    with atomic_write(image_path) as handle:
        Image.fromarray(array).save(handle, format={"jpg": "jpeg", "tif": "tiff"}.get(suffix, suffix))
    return tuple(image.shape[1:])
