"""Real photos that need no download, and random crops of any folder of photos.

``shipped_photos()`` returns the RGB photographs that scikit-image and matplotlib install with
themselves (nothing is fetched), ``write_shipped_photos(folder)`` saves them as PNGs, and
``PhotoCrops(folder, crop_size)`` serves random square crops of every image under a folder, the
training input of the learned image codecs (``gankit.recipes.compression``)::

    from gankit.data.photos import PhotoCrops, write_shipped_photos
    write_shipped_photos(DATA_DIR / "shipped_photos")
    crops = PhotoCrops(DATA_DIR / "shipped_photos", 256, length=1024)

Randomness (crop position, flip) follows ``gankit.data.unaligned``:

* ``seed=None``: Python's global ``random``. ``seed_everything`` seeds it in the main process,
  the DataLoader seeds it in each worker, and ``gankit.training.Trainer`` checkpoints it, so with
  ``num_workers=0`` a resumed run draws exactly the same crops.
* ``seed=int``: a private ``random.Random(seed)``, the same crops on every run (e.g. a fixed batch
  to show during training). In a DataLoader worker it is re-seeded once from
  ``(seed, worker seed)``, so that workers do not all draw the same "random" crops.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gankit.data.registry import DataError
from gankit.data.unaligned import SPLIT_HINT, WorkerRandom, list_images, load_rgb
from gankit.io import atomic_write

#: Photos in ``shipped_photos()`` decoded from JPEG files: they carry JPEG block and ringing
#: artefacts, which a codec trained or evaluated on them learns or is scored against.
JPEG_DERIVED = ("rocket", "grace_hopper")

PHOTOS_HINT = ("put photos there (any of .jpg .png .ppm .bmp .tif .webp, in subfolders too), e.g. "
               "gankit.data.photos.write_shipped_photos(folder) for the ones scikit-image and "
               "matplotlib install, or the 24 Kodak images: gankit.data.prepare('kodak') "
               "(`gankit data fetch kodak`)")


def _grace_hopper() -> np.ndarray | None:
    """matplotlib's sample ``grace_hopper.jpg`` as (600, 512, 3) uint8, or None if not installed.

    Sample data ships inside matplotlib's package (``mpl-data/sample_data``); a trimmed install
    may lack it, and then the photo is simply left out.
    """
    try:
        from matplotlib import cbook

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (ImportError, OSError, ValueError):
        return None


def shipped_photos() -> dict[str, np.ndarray]:
    """The real RGB photos installed with scikit-image and matplotlib; nothing is downloaded.

    Returns
    -------
    dict of str to np.ndarray
        Name -> (H, W, 3) uint8 array, in this order:

        * ``astronaut`` (512x512, Eileen Collins, NASA), ``chelsea`` (300x451, a cat),
          ``coffee`` (400x600, a cup of coffee), ``motorcycle_left`` (500x741, the left view of
          the Middlebury stereo pair): lossless PNG files of scikit-image.
        * ``rocket`` (427x640, SpaceX Falcon 9 on the pad): scikit-image's ``rocket.jpg``.
        * ``grace_hopper`` (600x512, Rear Admiral Grace Hopper): matplotlib's sample
          ``grace_hopper.jpg``; left out if that matplotlib install has no sample data.

        ``rocket`` and ``grace_hopper`` are decoded JPEGs (see ``JPEG_DERIVED``): they carry
        8x8-block and ringing artefacts that the lossless four do not.
    """
    import skimage.data as skd  # heavy-ish import, only when photos are needed

    photos = {
        "astronaut": skd.astronaut(),
        "chelsea": skd.chelsea(),
        "coffee": skd.coffee(),
        "rocket": skd.rocket(),
        "motorcycle_left": skd.stereo_motorcycle()[0],  # (left, right, disparity)
    }
    hopper = _grace_hopper()
    if hopper is not None:
        photos["grace_hopper"] = hopper
    return {name: np.ascontiguousarray(arr[..., :3], dtype=np.uint8)
            for name, arr in photos.items()}


def write_shipped_photos(folder: str | os.PathLike) -> list[Path]:
    """Save ``shipped_photos()`` as ``<folder>/<name>.png``; returns the paths in that order.

    Idempotent: a file that already holds exactly these PNG bytes is left untouched (no rewrite,
    same modification time), anything else at that path is replaced atomically. Other files in
    ``folder`` are never touched. The folder is created if needed.
    """
    folder = Path(folder)
    paths = []
    for name, arr in shipped_photos().items():
        buffer = io.BytesIO()
        Image.fromarray(arr).save(buffer, format="PNG")  # no timestamp: same bytes every run
        data = buffer.getvalue()
        path = folder / f"{name}.png"
        if not (path.is_file() and path.stat().st_size == len(data)
                and path.read_bytes() == data):
            with atomic_write(path, "wb") as handle:
                handle.write(data)
        paths.append(path)
    return paths


def _load_rgb_array(path: str, crop_size: int) -> np.ndarray:
    """Decode ``path`` as (H, W, 3) uint8 RGB, upscaled (bicubic) so that min(H, W) >= crop_size."""
    try:
        img = load_rgb(path)
    except (OSError, ValueError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"{path} cannot be read as an image ({type(err).__name__}: {err}); "
                        "delete or replace it") from err
    short = min(img.size)
    if short < crop_size:
        scale = crop_size / short
        size = (max(crop_size, round(img.width * scale)), max(crop_size, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(img)


class PhotoCrops(Dataset):
    """Random ``crop_size`` x ``crop_size`` crops of every image under a folder.

    Parameters
    ----------
    folder : path
        Searched recursively (``gankit.data.unaligned.list_images``: the usual image extensions,
        hidden files skipped), e.g. ``write_shipped_photos``'s folder, ``prepare("kodak")`` or a
        CycleGAN set.
    crop_size : int
        Side of the returned crops. An image whose short side is smaller is first upscaled
        (bicubic, aspect ratio kept) so that its short side equals ``crop_size``.
    length : int, optional
        Items per epoch; default the number of images. Item ``i`` is a fresh random crop of image
        ``i % n_images``, so ``length=1000`` over 6 photos gives 1000 different crops an epoch,
        each photo equally often.
    flip : bool
        Flip each crop left-right with probability 1/2.
    seed : int, optional
        Seed of a private generator; None uses Python's global ``random`` (see the module
        docstring for the reproducibility of each).
    cache : bool
        Keep the decoded (and upscaled) images in memory after first use: faster, at
        H x W x 3 bytes per image (each DataLoader worker holds its own copy). Default: decode
        the file on every item.

    Items are (3, crop_size, crop_size) float32 tensors in [0, 1] (not [-1, 1]: the codecs'
    range); the DataLoader stacks them into (N, 3, crop_size, crop_size). Grayscale, palette and
    RGBA files come out as RGB.

    Raises
    ------
    DataError
        If ``folder`` does not exist or holds no image (the message names it and says how to fill
        it), or later if a file cannot be decoded (the message names the file).
    ValueError
        If ``crop_size`` or ``length`` is not positive.
    """

    def __init__(self, folder: str | os.PathLike, crop_size: int = 256, length: int | None = None,
                 *, flip: bool = True, seed: int | None = None, cache: bool = False) -> None:
        if int(crop_size) <= 0:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        if length is not None and int(length) <= 0:
            raise ValueError(f"length must be positive (items per epoch), got {length}")
        self.root = Path(folder)
        try:
            self.paths = list_images(self.root)
        except DataError as err:
            # Same message as for a CycleGAN folder, but with advice that fits a photo folder.
            raise DataError(str(err).replace(SPLIT_HINT, PHOTOS_HINT)) from None
        self.crop_size = int(crop_size)
        self.length = len(self.paths) if length is None else int(length)
        self.flip, self.seed, self.cache = bool(flip), seed, bool(cache)
        self._images: dict[int, np.ndarray] = {}  # image index -> decoded array, if cache
        self._random = WorkerRandom(seed)

    def __len__(self) -> int:
        return self.length

    def _image(self, k: int) -> np.ndarray:
        """Image ``k`` as (H, W, 3) uint8 with min(H, W) >= crop_size."""
        if k in self._images:
            return self._images[k]
        arr = _load_rgb_array(self.paths[k], self.crop_size)
        if self.cache:
            self._images[k] = arr
        return arr

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} crops per epoch")
        index %= self.length
        arr = self._image(index % len(self.paths))
        rng = self._random()
        height, width = arr.shape[:2]
        top = rng.randint(0, height - self.crop_size)
        left = rng.randint(0, width - self.crop_size)
        crop = arr[top:top + self.crop_size, left:left + self.crop_size]
        if self.flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        chw = np.ascontiguousarray(crop.transpose(2, 0, 1))
        return torch.from_numpy(chw).to(torch.float32).div_(255.0)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.root)!r}, images={len(self.paths)}, "
                f"crop_size={self.crop_size}, length={self.length}, flip={self.flip}, "
                f"seed={self.seed}, cache={self.cache})")
