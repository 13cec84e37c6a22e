"""CycleGAN's unaligned two-domain dataset, and a plain image folder for test-time translation.

Behaves like ``data/unaligned_dataset.py`` and ``base_dataset.get_transform`` of the official
CycleGAN code (junyanz/pytorch-CycleGAN-and-pix2pix, default ``--preprocess resize_and_crop``):

* train: resize to ``load_size`` x ``load_size`` (bicubic), random ``crop_size`` crop, random
  horizontal flip, to [-1, 1]. Defaults 286 / 256 as in the official ``base_options.py``.
* test: the official ``test_options.py`` sets ``load_size`` to ``crop_size`` ("to avoid
  cropping") and ``test.py`` sets ``no_flip`` and ``serial_batches``; so a test image is resized
  straight to ``crop_size`` x ``crop_size``, never cropped or flipped, and B is taken in order.
  ``UnalignedImageFolders(root, "test")`` does exactly that unless told otherwise.

An epoch visits every A image once (``index % len(A)``) and pairs it with a random B image, so
that pairs are not fixed; its length is ``max(len(A), len(B))``.

Randomness (which B, crop position, flip) comes from one generator per dataset:

* ``seed=None``: Python's global ``random``, as in the official code. ``seed_everything`` seeds it
  in the main process, the DataLoader seeds it in each worker, and ``gankit.training.Trainer``
  checkpoints it, so with ``num_workers=0`` a resumed run draws exactly the same pairs.
* ``seed=int``: a private ``random.Random(seed)``. In a DataLoader worker it is re-seeded once
  from ``(seed, worker seed)``: otherwise every worker would hold a copy of the same generator
  and draw the same "random" B images.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from gankit.data.registry import DataError

# The official make_dataset's list (jpg, jpeg, png, ppm, bmp, tif, tiff) compared case-blind,
# plus webp, which Pillow reads as well.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")

SPLIT_HINT = ("expected the CycleGAN layout <root>/trainA, trainB, testA, testB; get one with "
              "gankit.data.prepare('horse2zebra', smoke=True) or `gankit data fetch horse2zebra`")


class WorkerRandom:
    """``rng = WorkerRandom(seed)()``: the generator a dataset draws from in this process.

    ``seed=None``: Python's global ``random``. ``seed=int``: a private ``random.Random(seed)``,
    re-seeded once per DataLoader worker from ``(seed, worker seed)`` (see the module docstring).
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._rng = random.Random(seed) if seed is not None else None
        self._owner: tuple[int, int] | None = None  # (worker id, worker seed) it was seeded for

    def __call__(self) -> random.Random | Any:
        if self._rng is None:
            return random
        worker = get_worker_info()
        if worker is not None and self._owner != (worker.id, worker.seed):
            # Each worker holds a pickled copy of the same generator; give it its own stream,
            # still a function of `seed` and the DataLoader's generator, hence reproducible.
            self._rng.seed(f"{self.seed}/{worker.seed}")
            self._owner = (worker.id, worker.seed)
        return self._rng


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` and its subfolders, sorted; like the official ``make_dataset``.

    Hidden files (names starting with ``.``, e.g. macOS ``._x.jpg`` forks left by some zip tools)
    are skipped: they are not images even though their names end like one.

    Raises
    ------
    DataError
        If ``folder`` is not a directory or holds no image; the message names it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; {SPLIT_HINT}")
    paths = [os.path.join(dirpath, name)
             for dirpath, dirnames, names in os.walk(folder)
             for name in names
             if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)]
    if not paths:
        raise DataError(f"image folder {folder} holds no image ({', '.join(IMG_EXTENSIONS)}); "
                        f"{SPLIT_HINT}")
    return sorted(paths)


def load_rgb(path: str) -> Image.Image:
    """Open an image as 8-bit RGB (grayscale, palette and RGBA images are converted)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def to_unit_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [-1, 1]: ToTensor then Normalize(0.5, 0.5)."""
    from torchvision.transforms import functional as TF  # torchvision imports slowly: only when used

    return TF.to_tensor(img).sub_(0.5).div_(0.5)


def resize_crop_flip(img: Image.Image, load_size: int, crop_size: int, flip: bool,
                     rng: random.Random | Any) -> torch.Tensor:
    """The official ``resize_and_crop`` transform with its random numbers drawn from ``rng``.

    Parameters
    ----------
    img : PIL.Image.Image
        RGB image of any size.
    load_size, crop_size : int
        Resize to ``load_size`` x ``load_size`` (bicubic, aspect ratio not kept, as upstream), then
        crop a ``crop_size`` square at a uniformly random position (no crop when equal).
    flip : bool
        Flip left-right with probability 1/2.
    rng : random.Random or the ``random`` module
        Source of the crop position and the flip.

    Returns
    -------
    torch.Tensor
        (3, crop_size, crop_size) float32 in [-1, 1].
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    img = TF.resize(img, [load_size, load_size], InterpolationMode.BICUBIC)
    if crop_size < load_size:
        top, left = rng.randint(0, load_size - crop_size), rng.randint(0, load_size - crop_size)
        img = TF.crop(img, top, left, crop_size, crop_size)
    if flip and rng.random() < 0.5:
        img = TF.hflip(img)
    return to_unit_tensor(img)


def _find_split_root(root: Path, split: str) -> Path:
    """``root`` itself, or its only subfolder holding ``<split>A``.

    ``prepare("horse2zebra")`` returns ``<cache>/horse2zebra`` while the archive unpacks into
    ``<cache>/horse2zebra/horse2zebra/trainA``; accepting either saves students a confusing error.
    """
    if (root / f"{split}A").is_dir() or not root.is_dir():
        return root
    inner = [d for d in root.iterdir() if d.is_dir() and (d / f"{split}A").is_dir()]
    return inner[0] if len(inner) == 1 else root


class UnalignedImageFolders(Dataset):
    """Unpaired images of two domains, ``<root>/<split>A`` and ``<root>/<split>B``.

    Parameters
    ----------
    root : path
        Dataset folder with ``trainA``, ``trainB``, ``testA``, ``testB`` (or a folder whose only
        subfolder has them, as ``gankit.data.prepare`` returns).
    split : str
        Folder prefix: ``"train"``, ``"test"`` (or ``"val"`` where a set has it).
    load_size : int, optional
        Side the images are resized to before cropping. Default: 286 for ``"train"``, else
        ``crop_size`` (the official test setting: no crop).
    crop_size : int
        Side of the returned images (official 256).
    flip : bool, optional
        Random horizontal flips. Default: True for ``"train"``, else False (as ``test.py``).
    serial : bool, optional
        Pair A[i] with B[i % len(B)] instead of a random B (official ``--serial_batches``).
        Default: False for ``"train"``, else True (as ``test.py``).
    seed : int, optional
        Seed of a private generator for B choice, crops and flips; None uses Python's global
        ``random`` (see the module docstring for the reproducibility of each).

    Items are dicts ``{"A": (3, crop_size, crop_size) float32 in [-1, 1], "B": same, "A_path":
    str, "B_path": str}``; the DataLoader's default collate stacks them into (N, 3, H, W) batches
    and lists of paths. Grayscale and RGBA files come out as RGB.

    Raises
    ------
    DataError
        If ``<split>A`` or ``<split>B`` is missing or holds no image; the message names it.
    ValueError
        If ``crop_size > load_size``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", load_size: int | None = None,
                 crop_size: int = 256, flip: bool | None = None, serial: bool | None = None,
                 seed: int | None = None) -> None:
        train = split == "train"
        self.load_size = int(load_size if load_size is not None else (286 if train else crop_size))
        self.crop_size = int(crop_size)
        if not 0 < self.crop_size <= self.load_size:
            raise ValueError(f"need 0 < crop_size <= load_size, got crop_size={crop_size}, "
                             f"load_size={self.load_size}")
        self.flip = train if flip is None else bool(flip)
        self.serial = (not train) if serial is None else bool(serial)
        self.root = _find_split_root(Path(root), split)
        self.split, self.seed = split, seed
        self.dir_A, self.dir_B = self.root / f"{split}A", self.root / f"{split}B"
        self.A_paths, self.B_paths = list_images(self.dir_A), list_images(self.dir_B)
        self._random = WorkerRandom(seed)

    def __len__(self) -> int:
        return max(len(self.A_paths), len(self.B_paths))

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self._random()
        a_path = self.A_paths[index % len(self.A_paths)]
        if self.serial:
            b_path = self.B_paths[index % len(self.B_paths)]
        else:  # a random B for every A, so that pairs differ between epochs
            b_path = self.B_paths[rng.randint(0, len(self.B_paths) - 1)]
        a = resize_crop_flip(load_rgb(a_path), self.load_size, self.crop_size, self.flip, rng)
        b = resize_crop_flip(load_rgb(b_path), self.load_size, self.crop_size, self.flip, rng)
        return {"A": a, "B": b, "A_path": a_path, "B_path": b_path}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.root)!r}, split={self.split!r}, "
                f"A={len(self.A_paths)}, B={len(self.B_paths)}, load_size={self.load_size}, "
                f"crop_size={self.crop_size}, flip={self.flip}, serial={self.serial})")


class SingleImageFolder(Dataset):
    """Every image under one folder, resized for test-time translation (official ``single`` mode).

    Parameters
    ----------
    path : path
        Folder, searched recursively like ``UnalignedImageFolders`` (e.g. ``<root>/testA``).
    size : int
        Images are resized to ``size`` x ``size`` (bicubic), as the official test options do
        (``load_size = crop_size``, no crop, no flip).

    Items are tuples ``(image, path)``: image (3, size, size) float32 in [-1, 1], path a str.

    Raises
    ------
    DataError
        If ``path`` is missing or holds no image.
    """

    def __init__(self, path: str | os.PathLike, size: int = 256) -> None:
        if int(size) <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.root, self.size = Path(path), int(size)
        self.paths = list_images(self.root)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.paths[index]
        # crop_size == load_size: a deterministic resize, no random number is drawn
        return resize_crop_flip(load_rgb(path), self.size, self.size, False, random), path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, n={len(self.paths)}, size={self.size})"
