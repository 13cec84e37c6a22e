"""Torch datasets that read the official on-disk layouts, real or synthetic alike.

``MNISTIdx`` reads the four gzipped IDX files of MNIST / Fashion-MNIST, ``CIFAR10Batches`` the
python pickle batches of CIFAR-10. Both load the whole split into memory once (60k x 28 x 28
bytes is 47 MB) and hand out images scaled to [-1, 1], the range of a tanh generator.

``prepare`` is what the notebooks call: the synthetic copy in smoke mode, the real download
otherwise.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gankit.data.fetch import default_root, fetch
from gankit.data.registry import DataError, get_spec
from gankit.data.synthetic import (CIFAR_LABEL_NAMES, FASHION_CLASSES, synthetic_is_current,
                                   synthetic_params, write_synthetic)

IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dimension
MNIST_CLASSES = tuple(str(d) for d in range(10))


def _fix_hint(dataset: str | None) -> str:
    if dataset is None:
        return "replace the file with a good copy"
    return (f"run `gankit data verify {dataset}` to check the download, then delete the file "
            f"and run `gankit data fetch {dataset}` (or rebuild a synthetic copy with "
            f"`gankit data synthetic {dataset} DEST`)")


def read_idx(path: str | os.PathLike, expected_magic: int | None = None, *,
             dataset: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped if the name ends in ``.gz``) strictly.

    Parameters
    ----------
    path : path
        The file.
    expected_magic : int, optional
        ``IDX_IMAGES_MAGIC`` or ``IDX_LABELS_MAGIC``; anything else in the header is an error.
    dataset : str, optional
        Dataset name, only used to tell the student how to fix a bad file.

    Returns
    -------
    np.ndarray of uint8, shape given by the header (e.g. (N, 28, 28) or (N,))

    Raises
    ------
    DataError
        Unreadable gzip, bad magic number, unsupported element type, truncated or overlong body.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} cannot be read ({type(err).__name__}: {err}); "
                        f"{_fix_hint(dataset)}") from err
    if len(raw) < 4:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, no IDX header); "
                        f"{_fix_hint(dataset)}")
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = raw[3]
    if raw[:2] != b"\0\0" or raw[2] != 0x08 or (expected_magic is not None
                                                 and magic != expected_magic):
        wanted = f"0x{expected_magic:08x}" if expected_magic is not None else "0x000008XX"
        raise DataError(f"{path} has IDX magic number 0x{magic:08x}, expected {wanted}: it is "
                        f"damaged or not the right file; {_fix_hint(dataset)}")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path} is truncated inside its IDX header; {_fix_hint(dataset)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - header_len
    if body != expected:
        kind = "truncated" if body < expected else "longer than its header says"
        raise DataError(f"{path} is {kind}: header {dims} needs {expected} bytes of data, "
                        f"found {body}; {_fix_hint(dataset)}")
    return np.frombuffer(raw, np.uint8, offset=header_len).reshape(dims)


def _to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) uint8 once at load time (bilinear, antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        resized = F.interpolate(chunk.to(torch.float32), size=(size, size), mode="bilinear",
                                align_corners=False, antialias=size < chunk.shape[-1])
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


class _LabelledImages(Dataset):
    """uint8 images held in memory, served as float32 in [-1, 1] with an int label."""

    images: torch.Tensor
    labels: torch.Tensor
    transform = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = _to_unit_range(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class MNISTIdx(_LabelledImages):
    """MNIST or Fashion-MNIST from the four official ``*-idx?-ubyte.gz`` files.

    Parameters
    ----------
    root_dir : path
        The dataset directory holding the ``.gz`` files (what ``fetch`` / ``prepare`` return).
    split : {"train", "test"}
    image_size : int
        Side of the returned images; 28 is native, 32 (bilinear upsampling) suits DCGANs.
    flavour : {"mnist", "fashion_mnist"}
        Only changes ``classes`` and the hints in error messages.
    transform : callable, optional
        Applied to each float image after scaling.

    Items are ``(image, label)``: image float32 of shape (1, image_size, image_size) in [-1, 1],
    label an int in 0..9. ``images`` (uint8, (N, 1, S, S)) and ``labels`` (int64, (N,)) hold the
    whole split for fast full-batch use.
    """

    def __init__(self, root_dir: str | os.PathLike, split: str = "train", image_size: int = 28,
                 flavour: str = "mnist", transform: Callable | None = None) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if flavour not in ("mnist", "fashion_mnist"):
            raise ValueError(f"flavour must be 'mnist' or 'fashion_mnist', got {flavour!r}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
        self.root_dir = Path(root_dir)
        self.split, self.flavour, self.transform = split, flavour, transform
        self.classes = MNIST_CLASSES if flavour == "mnist" else FASHION_CLASSES
        prefix = "train" if split == "train" else "t10k"
        image_path = self.root_dir / f"{prefix}-images-idx3-ubyte.gz"
        label_path = self.root_dir / f"{prefix}-labels-idx1-ubyte.gz"
        for p in (image_path, label_path):
            if not p.is_file():
                raise DataError(f"{p} not found: is {self.root_dir} a {flavour} directory? "
                                f"Use the path returned by gankit.data.prepare('{flavour}', ...)")
        images = read_idx(image_path, IDX_IMAGES_MAGIC, dataset=flavour)
        labels = read_idx(label_path, IDX_LABELS_MAGIC, dataset=flavour)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{image_path} holds images of shape {images.shape[1:]}, expected "
                            f"(28, 28); {_fix_hint(flavour)}")
        if len(images) != len(labels):
            raise DataError(f"{image_path} has {len(images)} images but {label_path} has "
                            f"{len(labels)} labels; {_fix_hint(flavour)}")
        if labels.size and labels.max() > 9:
            raise DataError(f"{label_path} has label {labels.max()}, expected 0..9; "
                            f"{_fix_hint(flavour)}")
        self.images = _resize_uint8(torch.from_numpy(images.copy()).unsqueeze(1), image_size)
        self.labels = torch.from_numpy(labels.astype(np.int64))


def _unpickle(path: Path) -> dict:
    # The batches are pickles; this is safe only because fetch() checked the archive's sha256
    # (or the file is our own synthetic copy). Keys become str whichever way they were written.
    try:
        with open(path, "rb") as handle:
            obj = pickle.load(handle, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise DataError(f"{path} cannot be unpickled ({type(err).__name__}: {err}); "
                        f"{_fix_hint('cifar10')}") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (a {type(obj).__name__}, not a dict); "
                        f"{_fix_hint('cifar10')}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


class CIFAR10Batches(_LabelledImages):
    """CIFAR-10 from the python pickle batches (``cifar-10-batches-py/``).

    Parameters
    ----------
    root_dir : path
        The dataset directory (containing ``cifar-10-batches-py/``) or that folder itself.
    split : {"train", "test"}
        ``data_batch_1`` .. ``data_batch_5`` or ``test_batch``.
    transform : callable, optional
        Applied to each float image after scaling.

    Items are ``(image, label)``: image float32 of shape (3, 32, 32) in [-1, 1], label an int in
    0..9. ``images`` (uint8, (N, 3, 32, 32)) and ``labels`` (int64, (N,)) hold the whole split.
    """

    def __init__(self, root_dir: str | os.PathLike, split: str = "train",
                 transform: Callable | None = None) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = Path(root_dir)
        folder = root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"
        if not folder.is_dir():
            raise DataError(f"{folder} not found: use the path returned by "
                            "gankit.data.prepare('cifar10', ...)")
        self.root_dir, self.split, self.transform = root, split, transform
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        datas, labels = [], []
        for name in names:
            path = folder / name
            if not path.is_file():
                raise DataError(f"{path} not found; {_fix_hint('cifar10')}")
            batch = _unpickle(path)
            data = np.asarray(batch.get("data"))
            batch_labels = np.asarray(batch.get("labels", []), dtype=np.int64)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 "
                                f"(N, 3072); {_fix_hint('cifar10')}")
            if len(batch_labels) != len(data):
                raise DataError(f"{path}: {len(data)} images but {len(batch_labels)} labels; "
                                f"{_fix_hint('cifar10')}")
            datas.append(data)
            labels.append(batch_labels)
        all_labels = np.concatenate(labels)
        if all_labels.size and (all_labels.min() < 0 or all_labels.max() > 9):
            raise DataError(f"{folder}: labels outside 0..9; {_fix_hint('cifar10')}")
        meta_path = folder / "batches.meta"
        meta = _unpickle(meta_path) if meta_path.is_file() else {}
        names_raw = meta.get("label_names", CIFAR_LABEL_NAMES)
        self.classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names_raw)
        self.images = torch.from_numpy(np.concatenate(datas).reshape(-1, 3, 32, 32).copy())
        self.labels = torch.from_numpy(all_labels)


def _synthetic_root(data_dir: str | os.PathLike | None, params: dict) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser() / "synthetic"
    cached = default_root() / "synthetic"
    if synthetic_is_current(cached / params["dataset"], params):
        return cached
    try:  # a shared read-only cache cannot hold it: fall back to a per-user temp folder
        cached.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cached):
            pass
        return cached
    except OSError:
        user = getattr(os, "getuid", lambda: "user")()
        return Path(tempfile.gettempdir()) / f"gankit-{user}" / "synthetic"


def prepare(name: str, data_dir: str | os.PathLike | None = None, *, smoke: bool = False,
            seed: int = 0) -> Path:
    """Return a ready dataset directory for the notebooks.

    Parameters
    ----------
    name : str
        Registry name (``mnist``, ``fashion_mnist``, ``cifar10``, ``horse2zebra``, ...).
    data_dir : path, optional
        Cache root. Real data: ``<data_dir>/<name>``; smoke mode:
        ``<data_dir>/synthetic/<name>``. Default: the gankit cache (``$GANKIT_DATA`` etc.).
    smoke : bool
        Use a small synthetic copy, built offline if missing (well under a second or two).
    seed : int
        Seed of the synthetic copy.

    Returns
    -------
    pathlib.Path
        A directory in the official layout, ready for ``MNISTIdx`` / ``CIFAR10Batches``.
    """
    get_spec(name)  # unknown names fail the same way in both modes
    if not smoke:
        return fetch(name, data_dir)
    params = synthetic_params(name, seed)
    root = _synthetic_root(data_dir, params)
    path = root / name
    if synthetic_is_current(path, params):
        return path
    return write_synthetic(name, root, seed=seed)
