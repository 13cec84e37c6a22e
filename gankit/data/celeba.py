"""CelebA and RaFD for StarGAN, read the way the official code reads them.

Faithful to ``data_loader.py`` and ``main.py`` of yunjey/stargan:

* Labels come from ``list_attr_celeba.txt``: line 1 the number of images, line 2 the 40 attribute
  names, then ``000001.jpg v1 ... v40`` with values ``1`` / ``-1``. A label is ``value == "1"``
  for each selected attribute (default: Black_Hair, Blond_Hair, Brown_Hair, Male, Young).
* Test split: the data lines are shuffled after ``random.seed(1234)`` and the official loop puts
  line ``i`` (0-based, in shuffled order) in the test set when ``(i+1) < 2000``, i.e. the first
  **1999** shuffled lines are test and the remaining 200,600 train. ``split_indices``
  reproduces that order with a private ``random.Random(1234)`` (the same permutation, since a
  shuffle depends only on the generator and the list's length), so Python's global ``random``
  state is left alone.
* Transforms (``get_loader``): train ``RandomHorizontalFlip``, then ``CenterCrop(crop_size)``
  (178 for CelebA, 256 for RaFD), ``Resize(image_size)`` (128), ``ToTensor``,
  ``Normalize(0.5, 0.5)``; test the same without the flip. Images come out in [-1, 1].
* RaFD: a torchvision ``ImageFolder`` over ``<root>/<split>/<class>/*.jpg`` (the official
  ``--rafd_image_dir data/RaFD/train``), the label being the class index in sorted class order.

The flip uses torch's global RNG (as torchvision does), which ``seed_everything`` seeds, the
DataLoader re-seeds per worker and ``gankit.training.Trainer`` checkpoints.
"""
from __future__ import annotations

import difflib
import json
import os
import random
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gankit.data.registry import CELEBA_HOMEPAGE, DataError
from gankit.data.synthetic import CELEBA_ATTRIBUTES, SYNTHETIC_MARKER

#: StarGAN's default ``--selected_attrs`` (``--c_dim 5``).
DEFAULT_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
#: ``random.seed(1234)`` in the official ``CelebA.preprocess``.
SPLIT_SEED = 1234
#: Test images of the official split: ``(i+1) < 2000`` holds for i = 0 .. 1998.
OFFICIAL_TEST_SIZE = 1999
ATTR_FILE = "list_attr_celeba.txt"
#: Image folders looked for under the root: StarGAN's ``download.sh`` layout, then the
#: official zip's.
IMAGE_DIRS = ("images", "img_align_celeba")
# torchvision's ImageFolder extensions, compared case-blind.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_VALUES = frozenset(("1", "-1"))


def _attr_fix() -> str:
    return (f"if this is the official file, it is damaged: run `gankit data verify celeba`, or get "
            f"a fresh list_attr_celeba.txt from {CELEBA_HOMEPAGE} (folder Anno/); if you wrote "
            "the file yourself, fix that line")


def _as_attr_tuple(selected_attrs: str | Iterable[str]) -> tuple[str, ...]:
    selected = (selected_attrs,) if isinstance(selected_attrs, str) else tuple(selected_attrs)
    if not selected:
        raise ValueError("selected_attrs is empty: select at least one attribute, e.g. "
                         f"{list(DEFAULT_ATTRS)}")
    duplicates = sorted({a for a in selected if selected.count(a) > 1})
    if duplicates:
        raise ValueError(f"selected_attrs lists {duplicates} more than once")
    return selected


def _unknown_attr_message(path: Path, name: object, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    close += [n for n in names if n.lower() == str(name).lower() and n not in close]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (f"{path}, line 2: no attribute named {name!r}; {hint}valid names: "
            f"{', '.join(names)}")


def read_attributes(path: str | os.PathLike, selected_attrs: str | Iterable[str] = DEFAULT_ATTRS,
                    *, n_attributes: int = len(CELEBA_ATTRIBUTES)) -> tuple[list[str], np.ndarray]:
    """Read a CelebA attribute file (``list_attr_celeba.txt``) strictly.

    Parameters
    ----------
    path : path
        The file: line 1 the number of images, line 2 the attribute names, then one line per
        image, ``<file name> v1 ... vK`` with values ``1`` or ``-1`` separated by blanks.
    selected_attrs : str or sequence of str
        Attribute names to return, in this order (StarGAN's five by default).
    n_attributes : int
        Names expected on line 2 (40 in CelebA).

    Returns
    -------
    file_names : list of str
        Image file names in file order, e.g. ``"000001.jpg"``.
    labels : np.ndarray of bool, shape (N, len(selected_attrs))
        True where the value is ``1``.

    Raises
    ------
    DataError
        With the file, the line number and the fix, for: an unreadable file, a first line that
        is not an integer, a second line without exactly ``n_attributes`` distinct names, an
        unknown selected attribute (with close matches and the valid names), a line with the
        wrong number of values, a value other than 1 / -1, a repeated file name, and a count on
        line 1 that differs from the number of image lines.
    ValueError
        If ``selected_attrs`` is empty or repeats a name.
    """
    path = Path(path)
    selected = _as_attr_tuple(selected_attrs)
    try:
        with open(path, encoding="utf-8") as handle:  # universal newlines: \r\n files work too
            text = handle.read()
    except FileNotFoundError:
        raise DataError(f"{path} not found: get the CelebA files with `gankit data fetch celeba` "
                        "(or a synthetic copy with gankit.data.prepare('celeba', smoke=True))"
                        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read as text ({type(err).__name__}: {err}); "
                        f"{_attr_fix()}") from err
    lines = text.split("\n")
    while lines and not lines[-1].strip():  # the final newline, and blank lines at the very end
        lines.pop()
    if not lines:
        raise DataError(f"{path}, line 1: the file is empty; {_attr_fix()}")
    count_field = lines[0].strip()
    if not count_field.isdigit():
        raise DataError(f"{path}, line 1: expected the number of images (e.g. 202599), found "
                        f"{lines[0][:60]!r}: the header is missing or damaged; {_attr_fix()}")
    if len(lines) < 2:
        raise DataError(f"{path}, line 2: missing, expected the {n_attributes} attribute names; "
                        f"{_attr_fix()}")
    names = lines[1].split()
    if len(names) != n_attributes:
        looks_like_row = bool(names) and names[0].lower().endswith(IMG_EXTENSIONS)
        why = (" (it looks like an image line: the line of attribute names is missing)"
               if looks_like_row else "")
        raise DataError(f"{path}, line 2: expected the {n_attributes} attribute names, found "
                        f"{len(names)} fields{why}; {_attr_fix()}")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path}, line 2: attribute names {repeated} appear more than once; "
                        f"{_attr_fix()}")
    position = {name: i for i, name in enumerate(names)}
    for name in selected:
        if name not in position:
            raise DataError(_unknown_attr_message(path, name, names))
    columns = [position[name] for name in selected]

    file_names: list[str] = []
    rows: list[list[bool]] = []
    seen: dict[str, int] = {}
    width = n_attributes + 1
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != width:
            found = "an empty line" if not parts else f"{len(parts) - 1} values"
            raise DataError(f"{path}, line {lineno}: expected an image name and {n_attributes} "
                            f"values (1 or -1), found {found}; {_attr_fix()}")
        values = parts[1:]
        if not _VALUES.issuperset(values):
            col = next(i for i, v in enumerate(values) if v not in _VALUES)
            raise DataError(f"{path}, line {lineno}: value {values[col]!r} for attribute "
                            f"{names[col]} (field {col + 2}) of {parts[0]}; every value must be "
                            f"1 or -1; {_attr_fix()}")
        if parts[0] in seen:
            raise DataError(f"{path}, line {lineno}: {parts[0]} is listed again (first on line "
                            f"{seen[parts[0]]}); {_attr_fix()}")
        seen[parts[0]] = lineno
        file_names.append(parts[0])
        rows.append([values[c] == "1" for c in columns])
    if int(count_field) != len(file_names):
        last = f"lines 3-{len(file_names) + 2}" if file_names else "no image lines"
        raise DataError(f"{path}, line 1: says {int(count_field)} images but the file has "
                        f"{len(file_names)} image lines ({last}): it is truncated or was edited; "
                        f"{_attr_fix()}")
    labels = np.array(rows, dtype=bool).reshape(len(file_names), len(selected))
    return file_names, labels


def shuffled_order(n: int, seed: int = SPLIT_SEED) -> list[int]:
    """Line order after the official ``random.seed(seed); random.shuffle(lines)`` on ``n`` lines.

    Uses a private ``random.Random(seed)``: the global ``random`` state is not touched.
    """
    order = list(range(int(n)))
    random.Random(seed).shuffle(order)
    return order


def split_indices(n: int, split: str, test_size: int = OFFICIAL_TEST_SIZE,
                  seed: int = SPLIT_SEED) -> list[int]:
    """Indices (into the file's image lines) of the official ``split``, in the official order.

    ``"test"``: the first ``test_size`` lines of the seeded shuffle (1999 officially);
    ``"train"``: the rest.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if int(test_size) < 0:
        raise ValueError(f"test_size must be >= 0, got {test_size}")
    order = shuffled_order(n, seed)
    return order[:test_size] if split == "test" else order[test_size:]


def stargan_transform(crop_size: int, image_size: int, flip: bool) -> Callable:
    """The official ``get_loader`` transform: [flip,] CenterCrop, Resize, ToTensor, Normalize."""
    from torchvision import transforms as T  # torchvision imports slowly: only when used

    steps = [T.RandomHorizontalFlip()] if flip else []
    steps += [T.CenterCrop(crop_size), T.Resize(image_size), T.ToTensor(),
              T.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))]
    return T.Compose(steps)


def _load_rgb(path: Path, hint: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path} not found; {hint}") from None
    except OSError as err:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"{path} cannot be read as an image ({type(err).__name__}: {err}); "
                        f"{hint}") from err


def _synthetic_test_size(root: Path) -> int | None:
    """``n_test`` of a synthetic CelebA copy (``prepare('celeba', smoke=True)``), else None."""
    try:
        params = json.loads((root / SYNTHETIC_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(params, dict) or params.get("dataset") != "celeba":
        return None
    n_test = params.get("n_test")
    return n_test if isinstance(n_test, int) and n_test >= 0 else None


class CelebA(Dataset):
    """CelebA faces with selected binary attributes, split and preprocessed as in StarGAN.

    Parameters
    ----------
    root : path
        Folder with ``list_attr_celeba.txt`` and the images in ``images/`` (StarGAN's layout) or
        ``img_align_celeba/`` (the official zip's), e.g. what ``prepare("celeba")`` returns.
    selected_attrs : sequence of str
        Attributes that make the label, in order (StarGAN's ``--selected_attrs``).
    split : {"train", "test"}
        The official split (see the module docstring).
    image_size, crop_size : int
        ``CenterCrop(crop_size)`` then ``Resize(image_size)``; official 178 and 128.
    flip : bool, optional
        Random horizontal flips; default True for ``"train"`` only, as officially.
    test_size : int, optional
        Images in the test split: default 1999 (official), or for a synthetic copy the
        ``n_test`` recorded in its ``.synthetic.json``.
    image_dir, attr_path : path, optional
        Override the locations found under ``root`` (the official ``--celeba_image_dir`` and
        ``--attr_path``).
    transform : callable, optional
        Replaces the official transform (PIL RGB image in, tensor out).

    Items are ``(image, label)``: image float32 (3, image_size, image_size) in [-1, 1], label
    float32 (len(selected_attrs),) of 0 / 1. ``file_names`` and ``labels`` hold the split in the
    official order.

    Raises
    ------
    DataError
        Missing files or folders, a malformed attribute file, or a split with no image.
    """

    def __init__(self, root: str | os.PathLike, selected_attrs: Sequence[str] = DEFAULT_ATTRS,
                 split: str = "train", image_size: int = 128, crop_size: int = 178, *,
                 flip: bool | None = None, test_size: int | None = None,
                 image_dir: str | os.PathLike | None = None,
                 attr_path: str | os.PathLike | None = None,
                 transform: Callable | None = None) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if int(image_size) < 1 or int(crop_size) < 1:
            raise ValueError(f"image_size and crop_size must be positive, got {image_size}, "
                             f"{crop_size}")
        self.root = Path(root)
        self.split, self.image_size, self.crop_size = split, int(image_size), int(crop_size)
        self.selected_attrs = _as_attr_tuple(selected_attrs)
        self.attr_path = Path(attr_path) if attr_path is not None else self.root / ATTR_FILE
        self.image_dir = self._find_image_dir(image_dir)
        if test_size is None:
            test_size = _synthetic_test_size(self.root)
        if test_size is None:
            test_size = OFFICIAL_TEST_SIZE
        self.test_size = int(test_size)
        names, labels = read_attributes(self.attr_path, self.selected_attrs)
        index = split_indices(len(names), split, self.test_size)
        if not index:
            raise DataError(
                f"{self.attr_path} lists {len(names)} images, which leaves none for the {split!r} "
                f"split (the first {self.test_size} of the seeded shuffle are the test split); "
                "pass a smaller test_size, or use the full dataset")
        self.file_names = [names[i] for i in index]
        self.labels = torch.from_numpy(labels[index].astype(np.float32))
        first = self.image_dir / self.file_names[0]
        if not first.is_file():
            raise DataError(f"{first} not found, though {self.attr_path} lists it: "
                            f"{self.image_dir} is not the folder of these images (unpack "
                            "img_align_celeba.zip there, or run `gankit data fetch celeba`)")
        self.flip = (split == "train") if flip is None else bool(flip)
        self.transform = transform if transform is not None else stargan_transform(
            self.crop_size, self.image_size, self.flip)

    def _find_image_dir(self, image_dir: str | os.PathLike | None) -> Path:
        if image_dir is not None:
            folder = Path(image_dir)
            if not folder.is_dir():
                raise DataError(f"image folder {folder} does not exist")
            return folder
        for name in IMAGE_DIRS:
            if (self.root / name).is_dir():
                return self.root / name
        raise DataError(
            f"no CelebA image folder in {self.root}: expected {self.root / IMAGE_DIRS[0]} or "
            f"{self.root / IMAGE_DIRS[1]} (img_align_celeba.zip unpacked), next to "
            f"{ATTR_FILE}; run `gankit data fetch celeba`, or use "
            "gankit.data.prepare('celeba', smoke=True) for a synthetic copy")

    def __len__(self) -> int:
        return len(self.file_names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.image_dir / self.file_names[index]
        image = _load_rgb(path, f"{self.attr_path} lists it; run `gankit data verify celeba`")
        return self.transform(image), self.labels[index].clone()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"attrs={list(self.selected_attrs)}, image_size={self.image_size}, "
                f"crop_size={self.crop_size}, flip={self.flip})")


class RaFDFolders(Dataset):
    """Images in one folder per class, ``<root>/<split>/<class>/*.jpg``, as StarGAN reads RaFD.

    The official code uses torchvision's ``ImageFolder`` on ``data/RaFD/train`` (or ``test``);
    this is the same (classes in sorted order, images sorted, searched recursively, converted
    to RGB) with clearer errors and hidden files and folders skipped. RaFD itself must be
    requested from the Radboud Faces Database; StarGAN's ``jpg/RaFD.md`` asks for faces cropped
    to 256x256 and a 90/10 train/test split. Any dataset in this layout works (``--dataset RaFD``
    is StarGAN's "custom dataset" mode).

    Parameters
    ----------
    root : path
        Folder holding ``train/`` and ``test/`` (or the class folders, with ``split=None``).
    image_size, crop_size : int
        ``CenterCrop(crop_size)`` then ``Resize(image_size)``; official 256 and 128.
    split : {"train", "test"} or None
        Subfolder of ``root`` to read; None reads ``root`` itself.
    flip : bool, optional
        Random horizontal flips; default True except for ``split="test"``.
    transform : callable, optional
        Replaces the official transform.

    Items are ``(image, label)``: image float32 (3, image_size, image_size) in [-1, 1], label
    the int class index. ``classes``, ``class_to_idx``, ``samples`` and ``targets`` are as in
    ``ImageFolder``.
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 128, crop_size: int = 256,
                 split: str | None = "train", *, flip: bool | None = None,
                 transform: Callable | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.folder = self.root / split if split is not None else self.root
        layout = ("expected <root>/<split>/<class>/<image>, e.g. RaFD/train/angry/001.jpg (see "
                  "StarGAN's jpg/RaFD.md)")
        if not self.folder.is_dir():
            raise DataError(f"{self.folder} does not exist; {layout}")
        self.classes = sorted(e.name for e in os.scandir(self.folder)
                              if e.is_dir() and not e.name.startswith("."))
        if not self.classes:
            raise DataError(f"{self.folder} has no class folder; {layout}")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for name in self.classes:
            found = sorted(
                os.path.join(dirpath, f)
                for dirpath, dirnames, files in os.walk(self.folder / name, followlinks=True)
                for f in files
                if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS))
            if not found:
                raise DataError(f"class folder {self.folder / name} holds no image "
                                f"({', '.join(IMG_EXTENSIONS)}); remove it or add images")
            self.samples += [(p, self.class_to_idx[name]) for p in found]
        self.targets = [label for _, label in self.samples]
        self.image_size, self.crop_size = int(image_size), int(crop_size)
        self.flip = (split != "test") if flip is None else bool(flip)
        self.transform = transform if transform is not None else stargan_transform(
            self.crop_size, self.image_size, self.flip)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = _load_rgb(Path(path), "the folder changed since it was listed")
        return self.transform(image), label

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.folder)!r}, n={len(self)}, "
                f"classes={self.classes}, image_size={self.image_size}, "
                f"crop_size={self.crop_size}, flip={self.flip})")
