"""Small stand-in datasets, generated offline and deterministically, in the official layouts.

Tests and the notebooks' smoke mode use these instead of the real downloads: the files have the
same names, formats and headers as MNIST / Fashion-MNIST (gzipped IDX), CIFAR-10 (python pickle
batches) and the CycleGAN sets (JPEG folders), so the same readers load both. The images are
meant to look like something, so that a tiny GAN trained for a minute visibly learns them:

* ``mnist``: the digits 0-9 rendered with Pillow's built-in font at random size, slant,
  rotation, stroke width and offset, normalised like MNIST (fit in 20x20, centred by mass in
  28x28). The label is the digit.
* ``fashion_mnist``: one drawn silhouette per Fashion-MNIST class (T-shirt, trouser, ... ankle
  boot) with random proportions, shade and texture.
* ``cifar10``: 32x32 crops of the photos scikit-image ships (rocket, coffee, cat, ...), one
  source per class, plus two classes of coloured shapes.
* CycleGAN sets: domain A is photo crops, domain B the same kind of crops posterised, tinted and
  striped, so A->B is a learnable translation.
* ``celeba``: 178x218 JPEG faces (scikit-image's small LFW faces as skin texture on a drawn head)
  and a ``list_attr_celeba.txt`` with the 40 official attributes, where StarGAN's five default
  attributes are visible: the hair colour (exactly one of black / blond / brown), ``Male`` (a
  beard and a wider face) and ``Young`` (smooth, vivid skin; otherwise forehead wrinkles and a
  faded, low-contrast image). ``No_Beard`` is ``not Male``; the other 34 are random.
* ``kodak``: the 24 file names of the Kodak suite (``kodim01.png`` .. ``kodim24.png``) as RGB PNGs
  at a quarter of the real size (192x128, the six portrait ones 128x192), each a random crop of
  one of the scikit-image photos.

Same seed and sizes give the same bytes (gzip and pickle headers carry no timestamps) on the
same Pillow / scikit-image versions.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import struct
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from gankit.data.fetch import check_layout
from gankit.data.registry import KODAK_PORTRAIT, DataError, get_spec

SYNTHETIC_MARKER = ".synthetic.json"
# Bump when the generated content changes, so prepare() rebuilds old copies.
GENERATOR_VERSION = 1

CIFAR_LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# The 40 attributes of list_attr_celeba.txt, in the file's order (also jpg/CelebA.md of StarGAN).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# Hair colour of the synthetic faces, one per image.
CELEBA_HAIR_COLOURS = {"Black_Hair": (30, 25, 22), "Blond_Hair": (226, 194, 118),
                       "Brown_Hair": (116, 70, 36)}
CELEBA_IMAGE_SIZE = (178, 218)  # (width, height) of the aligned & cropped CelebA images
# (width, height) of the synthetic Kodak landscape images, a quarter of the real 768x512 so tests
# stay fast; the portrait ones (registry.KODAK_PORTRAIT) are 128x192.
KODAK_SMOKE_SIZE = (192, 128)

# (n_train, n_test) per layout: big enough to train a toy GAN, small enough for < 1 s.
# CelebA: n_train + n_test images in one folder; the test split is the official rule (first
# images of the seeded shuffle, see gankit.data.celeba) with n_test instead of 1999.
# Kodak: a fixed test set of 24 named images and no training split; these sizes cannot be changed.
DEFAULT_SIZES = {"idx-gz": (600, 100), "cifar-python": (500, 100), "cyclegan": (24, 6),
                 "celeba": (320, 80), "kodak": (0, 24)}


# ------------------------------------------------------------------------------------- IDX
def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic ``0x0000 08 <ndim>``, big-endian dims).

    Parameters
    ----------
    array : np.ndarray of uint8, shape (N,) for labels or (N, 28, 28) for images
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                     *array.shape)
    return header + array.tobytes()


def _write_gz(path: Path, payload: bytes) -> None:
    # mtime=0 and no file name in the header: identical bytes on every run.
    path.write_bytes(gzip.compress(payload, compresslevel=6, mtime=0))


def _write_idx_pair(d: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    _write_gz(d / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(images))
    _write_gz(d / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(labels))


def _mnist_normalise(glyph: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Fit the ink into a 20x20 box (aspect kept) and centre its mass in 28x28, as MNIST does."""
    box = glyph.getbbox()
    out = np.zeros((28, 28), np.uint8)
    if box is None:
        return out
    glyph = glyph.crop(box)
    w, h = glyph.size
    scale = 20.0 / max(w, h)
    glyph = glyph.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                         Image.Resampling.LANCZOS)
    arr = np.asarray(glyph, np.float32)
    ys, xs = np.indices(arr.shape)
    mass = arr.sum() or 1.0
    cy, cx = (ys * arr).sum() / mass, (xs * arr).sum() / mass
    top = int(round(14 - cy + rng.integers(-1, 2)))
    left = int(round(14 - cx + rng.integers(-1, 2)))
    top = min(max(top, 0), 28 - arr.shape[0])
    left = min(max(left, 0), 28 - arr.shape[1])
    out[top:top + arr.shape[0], left:left + arr.shape[1]] = np.clip(arr, 0, 255).astype(np.uint8)
    return out


def _font(size: int, cache: dict) -> ImageFont.ImageFont:
    if size not in cache:
        try:
            cache[size] = ImageFont.load_default(size=size)  # FreeType build, Pillow >= 10.1
        except (TypeError, ImportError, OSError):
            cache[size] = ImageFont.load_default()  # bitmap fallback; normalising rescales it
    return cache[size]


def render_digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render each label as a handwritten-ish digit.

    Returns
    -------
    np.ndarray of uint8, shape (N, 28, 28), 0 = background, 255 = ink
    """
    fonts: dict = {}
    images = np.empty((len(labels), 28, 28), np.uint8)
    for i, digit in enumerate(labels):
        canvas = Image.new("L", (96, 96), 0)
        draw = ImageDraw.Draw(canvas)
        draw.text((48, 48), str(int(digit)), fill=int(rng.integers(200, 256)),
                  font=_font(int(rng.integers(36, 60)), fonts), anchor="mm",
                  stroke_width=int(rng.integers(0, 4)), stroke_fill=255)
        shear = rng.uniform(-0.35, 0.35)  # slant, like handwriting
        canvas = canvas.transform(canvas.size, Image.Transform.AFFINE,
                                  (1, shear, -shear * 48, 0, 1, 0), Image.Resampling.BILINEAR)
        canvas = canvas.rotate(rng.uniform(-12, 12), Image.Resampling.BILINEAR)
        # Anisotropic squeeze: thin and wide writers.
        sx = rng.uniform(0.7, 1.15)
        canvas = canvas.resize((max(8, int(96 * sx)), 96), Image.Resampling.BILINEAR)
        images[i] = _mnist_normalise(canvas, rng)
    return images


def _poly(draw: ImageDraw.ImageDraw, pts: list, tf: Callable, fill: int) -> None:
    draw.polygon([tf(x, y) for x, y in pts], fill=fill)


def _fashion_item(label: int, rng: np.random.Generator) -> np.ndarray:
    """One silhouette of Fashion-MNIST class ``label`` as (28, 28) uint8."""
    size = 112  # draw at 4x, downsample for anti-aliasing
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    s = rng.uniform(0.85, 1.05) * size
    ox, oy = rng.uniform(-0.04, 0.04, size=2) * size
    jitter = lambda v, a=0.04: v + rng.uniform(-a, a)  # noqa: E731 - tiny local helper

    def tf(x: float, y: float) -> tuple[float, float]:
        return (size / 2 + (x - 0.5) * s + ox, size / 2 + (y - 0.5) * s + oy)

    shade = int(rng.integers(110, 256))
    dark = max(0, shade - int(rng.integers(60, 110)))
    w = jitter(0.0, 0.05)  # width change
    if label in (0, 2, 4, 6):  # tops: body + sleeves (short for the T-shirt)
        sleeve = 0.2 if label == 0 else 0.45
        bottom = 0.95 if label == 4 else jitter(0.85)
        _poly(draw, [(0.3 - w, 0.12), (0.7 + w, 0.12), (0.72 + w, bottom), (0.28 - w, bottom)],
              tf, shade)
        for sgn in (-1, 1):
            x0 = 0.5 + sgn * (0.2 + w)
            x1 = 0.5 + sgn * (0.5 if label == 0 else 0.42)
            _poly(draw, [(x0, 0.12), (x1, 0.12 + sleeve * 0.5), (x1 - sgn * 0.1,
                                                                  0.12 + sleeve),
                         (x0, 0.12 + sleeve * 0.8)], tf, shade)
        if label == 4:  # coat: opening down the middle
            draw.line([tf(0.5, 0.14), tf(0.5, 0.95)], fill=dark, width=3)
        if label == 6:  # shirt: collar and buttons
            _poly(draw, [(0.42, 0.12), (0.5, 0.24), (0.58, 0.12)], tf, dark)
            for y in np.linspace(0.3, 0.8, 5):
                draw.ellipse([*tf(0.49, y), *tf(0.51, y + 0.02)], fill=dark)
    elif label == 1:  # trouser: waistband and two legs
        gap = jitter(0.03, 0.015)
        _poly(draw, [(0.33 - w, 0.05), (0.67 + w, 0.05), (0.5 + gap, 0.35), (0.5 - gap, 0.35)],
              tf, shade)
        _poly(draw, [(0.33 - w, 0.05), (0.5 - gap, 0.05), (0.48 - gap, 0.97), (0.35 - w, 0.97)],
              tf, shade)
        _poly(draw, [(0.5 + gap, 0.05), (0.67 + w, 0.05), (0.65 + w, 0.97), (0.52 + gap, 0.97)],
              tf, shade)
    elif label == 3:  # dress: narrow top, flared skirt
        flare = jitter(0.22, 0.06)
        _poly(draw, [(0.4, 0.05), (0.6, 0.05), (0.62, 0.4), (0.5 + flare + 0.1, 0.95),
                     (0.5 - flare - 0.1, 0.95), (0.38, 0.4)], tf, shade)
    elif label in (5, 7, 9):  # footwear, toe to the left like Fashion-MNIST
        top = {5: 0.55, 7: 0.45, 9: 0.12}[label]
        sole = jitter(0.75, 0.03)
        if label == 5:  # sandal: sole plus a few straps
            _poly(draw, [(0.05, sole - 0.05), (0.95, sole - 0.08), (0.95, sole), (0.05, sole)],
                  tf, shade)
            for x in np.linspace(0.2, 0.8, 4):
                draw.line([tf(x, sole - 0.05), tf(x + 0.08, top)], fill=shade, width=5)
            draw.line([tf(0.25, top), tf(0.9, top - 0.05)], fill=shade, width=5)
        else:
            heel_top = top if label == 9 else top + 0.05
            _poly(draw, [(0.05, sole - 0.12), (0.45, top + 0.12), (0.6, heel_top),
                         (0.95, heel_top), (0.95, sole), (0.05, sole)], tf, shade)
            draw.line([tf(0.05, sole - 0.02), tf(0.95, sole - 0.02)], fill=dark, width=4)
    else:  # 8, bag: box with a handle
        _poly(draw, [(0.12 - w, 0.38), (0.88 + w, 0.38), (0.92 + w, 0.92), (0.08 - w, 0.92)],
              tf, shade)
        draw.arc([*tf(0.3, 0.12), *tf(0.7, 0.6)], 180, 360, fill=shade, width=6)
    img = img.filter(ImageFilter.GaussianBlur(1.2)).resize((28, 28), Image.Resampling.BOX)
    arr = np.asarray(img, np.float32)
    texture = rng.normal(0, 12, size=arr.shape) * (arr > 20)  # cloth is not flat grey
    return np.clip(arr + texture, 0, 255).astype(np.uint8)


def render_fashion(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one silhouette per label.

    Returns
    -------
    np.ndarray of uint8, shape (N, 28, 28), 0 = background
    """
    return np.stack([_fashion_item(int(k), rng) for k in labels]) if len(labels) else \
        np.zeros((0, 28, 28), np.uint8)


def _balanced_labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Every class equally often (up to one), shuffled: tiny sets stay class-balanced."""
    return rng.permutation(np.arange(n) % classes).astype(np.uint8)


def _write_idx_dataset(d: Path, name: str, rngs: tuple, n_train: int, n_test: int) -> None:
    render = render_digits if name == "mnist" else render_fashion
    for prefix, n, rng in (("train", n_train, rngs[0]), ("t10k", n_test, rngs[1])):
        labels = _balanced_labels(n, 10, rng)
        _write_idx_pair(d, prefix, render(labels, rng), labels)


# ----------------------------------------------------------------------------------- photos
def _photo_sources(short_side: int) -> list[Image.Image]:
    """The RGB photos bundled with scikit-image (no download), shrunk for cheap cropping."""
    import skimage.data as skd  # heavy-ish import, only when photos are needed

    arrays = [skd.rocket(), skd.coffee(), skd.colorwheel(), skd.chelsea(), skd.astronaut(),
              skd.immunohistochemistry(), skd.retina(), skd.hubble_deep_field()]
    out = []
    for arr in arrays:
        img = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
        scale = short_side / min(img.size)
        out.append(img.resize((round(img.width * scale), round(img.height * scale)),
                              Image.Resampling.BILINEAR))
    return out


def _random_crop(src: Image.Image, out_size: int, rng: np.random.Generator,
                 min_frac: float = 0.45) -> Image.Image:
    side = int(min(src.size) * rng.uniform(min_frac, 1.0))
    x = int(rng.integers(0, src.width - side + 1))
    y = int(rng.integers(0, src.height - side + 1))
    crop = src.crop((x, y, x + side, y + side)).resize((out_size, out_size),
                                                       Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def _shapes(out_size: int, rng: np.random.Generator, background: tuple) -> Image.Image:
    img = Image.new("RGB", (out_size * 2, out_size * 2), background)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.integers(0, out_size, 2)
        w, h = rng.integers(out_size // 3, out_size, 2)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img.resize((out_size, out_size), Image.Resampling.BOX)


def render_cifar(labels: np.ndarray, rng: np.random.Generator,
                 sources: list[Image.Image]) -> np.ndarray:
    """32x32 RGB images, one visual source per class.

    Returns
    -------
    np.ndarray of uint8, shape (N, 3072): 1024 red, then 1024 green, then 1024 blue values,
    each plane row-major, exactly as in the CIFAR-10 batches.
    """
    out = np.empty((len(labels), 3072), np.uint8)
    for i, k in enumerate(labels):
        k = int(k)
        if k < len(sources):
            img = _random_crop(sources[k], 32, rng)
        else:  # ships on blue water, trucks on grey road
            img = _shapes(32, rng, (30, 60, 140) if k == 8 else (110, 110, 110))
        arr = np.asarray(img, np.float32) * rng.uniform(0.8, 1.2)  # exposure jitter
        out[i] = np.clip(arr, 0, 255).astype(np.uint8).transpose(2, 0, 1).reshape(-1)
    return out


class _Py2Str(bytes):
    """Pickled as a Python 2 ``str``, which is what the real CIFAR-10 batches contain.

    Loading then gives ``b"data"`` keys with ``encoding="bytes"`` and ``"data"`` keys with
    ``encoding="latin1"``, exactly like the real files.
    """


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us add one opcode writer
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj: _Py2Str) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + bytes(obj))
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str


def _py2_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        _Py2Pickler(handle, protocol=2).dump(obj)


def _write_cifar(d: Path, rngs: tuple, n_train: int, n_test: int) -> None:
    sources = _photo_sources(96)
    batch_dir = d / "cifar-10-batches-py"
    batch_dir.mkdir()
    train_labels = _balanced_labels(n_train, 10, rngs[0])
    train = render_cifar(train_labels, rngs[0], sources)
    test_labels = _balanced_labels(n_test, 10, rngs[1])
    test = render_cifar(test_labels, rngs[1], sources)
    bounds = np.linspace(0, n_train, 6).astype(int)  # five batches, as in the real set
    batches = [(f"data_batch_{i + 1}", f"training batch {i + 1} of 5", bounds[i], bounds[i + 1])
               for i in range(5)]
    for fname, label, lo, hi in batches:
        _write_cifar_batch(batch_dir / fname, label, train[lo:hi], train_labels[lo:hi], lo)
    _write_cifar_batch(batch_dir / "test_batch", "testing batch 1 of 1", test, test_labels, 0)
    _py2_pickle(batch_dir / "batches.meta", {
        _Py2Str(b"num_cases_per_batch"): int(max(1, bounds[1] - bounds[0])),
        _Py2Str(b"label_names"): [_Py2Str(n.encode()) for n in CIFAR_LABEL_NAMES],
        _Py2Str(b"num_vis"): 3072,
    })


def _write_cifar_batch(path: Path, batch_label: str, data: np.ndarray, labels: np.ndarray,
                       offset: int) -> None:
    _py2_pickle(path, {
        _Py2Str(b"batch_label"): _Py2Str(batch_label.encode()),
        _Py2Str(b"labels"): [int(v) for v in labels],
        _Py2Str(b"data"): np.ascontiguousarray(data, np.uint8),
        _Py2Str(b"filenames"): [_Py2Str(f"synthetic_{offset + i:05d}.png".encode())
                                for i in range(len(labels))],
    })


def _stylise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Domain B: posterised, warm-tinted and striped, a transformation a CycleGAN can learn."""
    arr = np.asarray(img, np.float32)
    arr = np.floor(arr / 64) * 64 + 32  # posterise to 4 levels per channel
    arr *= np.array([1.15, 0.95, 0.75], np.float32)  # warm tint
    h, w = arr.shape[:2]
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(10, 18) * h / 256
    ys, xs = np.indices((h, w))
    stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period) > 0
    arr[stripes] *= 0.55
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _write_cyclegan(d: Path, name: str, rngs: tuple, n_train: int, n_test: int,
                    image_size: int = 256) -> None:
    sources = _photo_sources(image_size * 2)
    top = d / name
    for split, n, rng in (("train", n_train, rngs[0]), ("test", n_test, rngs[1])):
        for domain in "AB":
            folder = top / f"{split}{domain}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = _random_crop(sources[int(rng.integers(len(sources)))], image_size, rng)
                if domain == "B":
                    img = _stylise(img, rng)
                # quality/subsampling fixed: the same bytes on every run
                img.save(folder / f"{i:04d}_{domain}.jpg", quality=90, subsampling=0)


# ------------------------------------------------------------------------------------ CelebA
_SKIN_TONES = np.array([(236, 200, 172), (224, 178, 142), (198, 150, 112), (160, 112, 80),
                        (112, 76, 54)], np.float32)


def _lfw_faces() -> np.ndarray:
    """scikit-image's 100 small LFW faces, (100, 25, 25) float32 in [0, 1] (no download)."""
    import skimage.data as skd

    return skd.lfw_subset()[:100].astype(np.float32)  # the other 100 are non-faces


def render_celeba_face(hair: str, male: bool, young: bool, rng: np.random.Generator,
                       faces: np.ndarray) -> Image.Image:
    """One 178x218 RGB face whose hair colour, sex and age are visible.

    Parameters
    ----------
    hair : {"Black_Hair", "Blond_Hair", "Brown_Hair"}
    male : bool
        Beard and moustache over the lower face, a wider face, short hair; else long hair down
        the sides and red lips.
    young : bool
        Smooth, saturated skin at full contrast; else forehead wrinkles, greyer skin and the whole
        image faded towards its mean (lower contrast).
    rng : np.random.Generator
        Pose, size, skin tone, background, clothes, texture, noise and colour jitter.
    faces : np.ndarray, (K, 25, 25) float in [0, 1]
        Grey face textures (``_lfw_faces()``); one is drawn at random.

    All cues sit inside the central 178x178 square that StarGAN's ``CenterCrop(178)`` keeps.
    """
    width, height = CELEBA_IMAGE_SIZE

    def colour(rgb) -> tuple[int, int, int]:
        return tuple(int(c) for c in np.clip(np.round(rgb), 0, 255))

    cx, cy = width / 2 + rng.uniform(-6, 6), 122 + rng.uniform(-6, 6)
    rx, ry = rng.uniform(42, 48) + (5 if male else 0), rng.uniform(56, 62)  # head half-axes
    head_box = (cx - rx, cy - ry, cx + rx, cy + ry)
    img = Image.new("RGB", (width, height), colour(rng.uniform(50, 215, 3)))
    draw = ImageDraw.Draw(img)
    draw.polygon([(cx - 0.5 * rx, cy + 0.8 * ry), (cx + 0.5 * rx, cy + 0.8 * ry),
                  (cx + 1.9 * rx, height), (cx - 1.9 * rx, height)],
                 fill=colour(rng.uniform(25, 230, 3)))  # shoulders

    hair_rgb = np.array(CELEBA_HAIR_COLOURS[hair], np.float32) * rng.uniform(0.9, 1.1)
    hair_fill = colour(hair_rgb)
    outer = (cx - 1.2 * rx, cy - 0.12 * ry - 1.14 * ry, cx + 1.2 * rx, cy - 0.12 * ry + 1.14 * ry)
    # PIL angles run clockwise from 3 o'clock: a chord from 150 to 30 degrees keeps the top of
    # the ellipse down to half its height below the centre (long hair), 200 -> 340 only the top.
    draw.chord(outer, *((200, 340) if male else (150, 30)), fill=hair_fill)

    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.92, 1.08)
    if not young:
        skin = 0.6 * skin + 0.4 * skin.mean()  # greyer, paler skin
    size = (int(round(2 * rx)), int(round(2 * ry)))
    texture = Image.fromarray(faces[rng.integers(len(faces))]).resize(
        size, Image.Resampling.BILINEAR)
    face = skin * (0.5 + 0.75 * np.asarray(texture, np.float32)[..., None])
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, size[0] - 1, size[1] - 1), fill=255)
    corner = (int(round(cx - rx)), int(round(cy - ry)))
    img.paste(Image.fromarray(np.clip(face, 0, 255).astype(np.uint8)), corner, mask)

    draw.chord(head_box, 215, 325, fill=hair_fill)  # hair over the top of the forehead
    if not young:  # three forehead wrinkles
        for k in range(3):
            y = cy - (0.42 - 0.1 * k) * ry
            draw.line([(cx - 0.45 * rx, y), (cx + 0.45 * rx, y)], fill=colour(skin * 0.55),
                      width=3)
    if male:  # beard and moustache over the lower face, the mouth left open
        draw.chord(head_box, 17, 163, fill=colour(np.array((52, 40, 33)) * rng.uniform(0.8, 1.2)))
        draw.rectangle((cx - 0.28 * rx, cy + 0.47 * ry, cx + 0.28 * rx, cy + 0.57 * ry),
                       fill=(95, 45, 45))
    else:  # red lips
        draw.ellipse((cx - 0.3 * rx, cy + 0.445 * ry, cx + 0.3 * rx, cy + 0.595 * ry),
                     fill=(185, 60, 72))
    img = ImageEnhance.Contrast(img).enhance(1.08 if young else 0.6)  # old: faded
    noise = rng.integers(-5, 6, (height, width, 1), dtype=np.int16)  # sensor noise
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))


def celeba_attribute_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """Attributes of ``n`` synthetic faces: (n, 40) int8 of +1 / -1 in ``CELEBA_ATTRIBUTES`` order.

    Exactly one of Black_Hair / Blond_Hair / Brown_Hair is +1; the three colours, Male and Young
    are balanced (up to one); No_Beard = not Male; the other 34 attributes are random.
    """
    index = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}
    rows = np.where(rng.random((n, len(CELEBA_ATTRIBUTES))) < 0.5, 1, -1).astype(np.int8)
    hair = _balanced_labels(n, 3, rng)
    for k, name in enumerate(CELEBA_HAIR_COLOURS):
        rows[:, index[name]] = np.where(hair == k, 1, -1)
    for name in ("Male", "Young"):
        rows[:, index[name]] = np.where(rng.permutation(np.arange(n) % 2) == 1, 1, -1)
    rows[:, index["No_Beard"]] = -rows[:, index["Male"]]
    return rows


def celeba_attribute_text(file_names: list[str], rows: np.ndarray) -> str:
    """``list_attr_celeba.txt`` formatted as the official one: count, names, ``name v1 .. v40``."""
    lines = [str(len(file_names)), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [name + "".join(f" {int(v):2d}" for v in row) for name, row in zip(file_names, rows)]
    return "\n".join(lines) + "\n"


def _write_celeba(d: Path, rng: np.random.Generator, n: int) -> None:
    folder = d / "img_align_celeba"
    folder.mkdir()
    rows = celeba_attribute_rows(n, rng)
    index = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}
    faces = _lfw_faces()
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for name, row in zip(names, rows):
        hair = next(h for h in CELEBA_HAIR_COLOURS if row[index[h]] == 1)
        img = render_celeba_face(hair, row[index["Male"]] == 1, row[index["Young"]] == 1, rng,
                                 faces)
        img.save(folder / name, quality=90, subsampling=0)
    (d / "list_attr_celeba.txt").write_text(celeba_attribute_text(names, rows), encoding="ascii",
                                            newline="\n")


# ------------------------------------------------------------------------------------- Kodak
def _write_kodak(d: Path, rng: np.random.Generator) -> None:
    """The 24 ``kodimNN.png`` of the Kodak suite: RGB PNGs, 192x128 (portrait ones 128x192).

    Image k is a random crop (aspect kept, 1x to as large as fits) of scikit-image photo
    ``k % 8``, shrunk with Lanczos; the names are the registry's, so ``check_layout`` passes.
    """
    sources = _photo_sources(256)  # short side 256 >= 192: every crop fits either way round
    for k, name in enumerate(get_spec("kodak").required):
        width, height = KODAK_SMOKE_SIZE
        if name in KODAK_PORTRAIT:
            width, height = height, width
        src = sources[k % len(sources)]
        scale = rng.uniform(1.0, min(src.width / width, src.height / height))
        crop_w = min(src.width, round(width * scale))
        crop_h = min(src.height, round(height * scale))
        x = int(rng.integers(0, src.width - crop_w + 1))
        y = int(rng.integers(0, src.height - crop_h + 1))
        img = src.crop((x, y, x + crop_w, y + crop_h)).resize((width, height),
                                                               Image.Resampling.LANCZOS)
        img.save(d / name, format="PNG")  # PNG carries no timestamp: same bytes on every run


# ------------------------------------------------------------------------------------ public
def synthetic_params(name: str, seed: int = 0, n_train: int | None = None,
                     n_test: int | None = None) -> dict:
    """The parameters a synthetic copy is built from (stored in its ``.synthetic.json``)."""
    spec = get_spec(name)
    if spec.layout not in DEFAULT_SIZES:
        raise DataError(f"no synthetic generator for {name!r} (layout {spec.layout!r})")
    d_train, d_test = DEFAULT_SIZES[spec.layout]
    if spec.layout == "kodak":
        # A fixed set of named test images: a different count would not be the Kodak layout.
        if n_train not in (None, d_train) or n_test not in (None, d_test):
            raise ValueError(f"{name} is a fixed set of {d_test} test images (kodim01.png .. "
                             f"kodim24.png) with no training split: leave n_train and n_test "
                             f"unset, got n_train={n_train}, n_test={n_test}")
        n_train, n_test = d_train, d_test
    else:
        n_train = d_train if n_train is None else int(n_train)
        n_test = d_test if n_test is None else int(n_test)
        if n_train < 1 or n_test < 1:
            raise ValueError("n_train and n_test must be at least 1")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return {"dataset": name, "seed": seed, "n_train": n_train, "n_test": n_test,
            "generator_version": GENERATOR_VERSION}


def synthetic_is_current(path: str | os.PathLike, params: dict) -> bool:
    """True if ``path`` is a complete synthetic copy built with exactly ``params``."""
    path = Path(path)
    try:
        recorded = json.loads((path / SYNTHETIC_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded == params and not check_layout(params["dataset"], path)


def write_synthetic(name: str, root: str | os.PathLike, *, seed: int = 0,
                    n_train: int | None = None, n_test: int | None = None) -> Path:
    """Generate a small synthetic copy of dataset ``name`` at ``<root>/<name>``.

    Parameters
    ----------
    name : str
        ``mnist``, ``fashion_mnist``, ``cifar10``, a CycleGAN set (``horse2zebra``, ...),
        ``celeba`` or ``kodak``.
    root : path
        Parent directory; the dataset directory ``<root>/<name>`` is replaced atomically.
    seed : int
        Same seed and sizes, same bytes.
    n_train, n_test : int, optional
        Number of training / test examples (per domain for CycleGAN sets). Defaults: 600/100
        for the IDX sets, 500/100 for CIFAR-10, 24/6 for CycleGAN sets, 320/80 for CelebA (one
        folder of n_train + n_test faces; ``gankit.data.CelebA`` splits it by the official rule
        with ``n_test`` test images, read from the copy's ``.synthetic.json``). Kodak is always
        its 24 named images at quarter size (``KODAK_SMOKE_SIZE``); leave both unset.

    Returns
    -------
    pathlib.Path
        ``<root>/<name>``; ``check_layout(name, path)`` is empty for it.
    """
    params = synthetic_params(name, seed, n_train, n_test)
    layout = get_spec(name).layout
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    # Build beside the target and rename: parallel notebooks never see a half-written copy.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        rngs = tuple(np.random.default_rng(s)
                     for s in np.random.SeedSequence(params["seed"]).spawn(2))
        if layout == "idx-gz":
            _write_idx_dataset(tmp, name, rngs, params["n_train"], params["n_test"])
        elif layout == "cifar-python":
            _write_cifar(tmp, rngs, params["n_train"], params["n_test"])
        elif layout == "celeba":
            _write_celeba(tmp, rngs[0], params["n_train"] + params["n_test"])
        elif layout == "kodak":
            _write_kodak(tmp, rngs[0])
        elif layout == "cyclegan":
            _write_cyclegan(tmp, name, rngs, params["n_train"], params["n_test"])
        else:  # synthetic_params() already refused layouts missing from DEFAULT_SIZES
            raise DataError(f"no synthetic generator for {name!r} (layout {layout!r})")
        (tmp / SYNTHETIC_MARKER).write_text(json.dumps(params, indent=1), encoding="utf-8")
        if target.exists():
            trash = root / f".{name}.old-{uuid.uuid4().hex}"
            os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process put a copy there in the meantime; keep it if it is the same one.
            if not synthetic_is_current(target, params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
