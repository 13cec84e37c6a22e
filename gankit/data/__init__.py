"""Datasets for the course: a checksummed registry, a resumable shared-cache downloader, offline
synthetic stand-ins in the same layouts, and torch datasets that read both.

Typical notebook use::

    from gankit.data import prepare, MNISTIdx
    root = prepare("mnist", DATA_DIR, smoke=SMOKE, seed=SEED)
    train = MNISTIdx(root, "train", image_size=32)

Importing this package reads no file and opens no connection; the parts that need torch, numpy,
Pillow or scikit-image (``MNISTIdx``, ``CIFAR10Batches``, ``prepare``, ``write_synthetic``,
``PhotoCrops``, ...) are imported on first use.

Note: the function ``fetch`` shadows the submodule of the same name as an attribute of this
package; use ``importlib.import_module("gankit.data.fetch")`` to reach the module itself.
"""
from __future__ import annotations

import importlib
from typing import Any

from gankit.data.fetch import (check_layout, dataset_dir, default_root, fetch, is_verified,
                               verify)
from gankit.data.registry import REGISTRY, DataError, DatasetSpec, FileSpec, list_datasets

_LAZY = {
    "prepare": "gankit.data.datasets",
    "MNISTIdx": "gankit.data.datasets",
    "CIFAR10Batches": "gankit.data.datasets",
    "read_idx": "gankit.data.datasets",
    "write_synthetic": "gankit.data.synthetic",
    "UnalignedImageFolders": "gankit.data.unaligned",
    "SingleImageFolder": "gankit.data.unaligned",
    "CelebA": "gankit.data.celeba",
    "RaFDFolders": "gankit.data.celeba",
    "read_attributes": "gankit.data.celeba",
    "PhotoCrops": "gankit.data.photos",
    "shipped_photos": "gankit.data.photos",
    "write_shipped_photos": "gankit.data.photos",
}

__all__ = [
    "fetch", "verify", "dataset_dir", "default_root", "is_verified", "check_layout",
    "DataError", "DatasetSpec", "FileSpec", "REGISTRY", "list_datasets", *_LAZY,
]


def __getattr__(name: str) -> Any:
    # PEP 562: keep `import gankit.data` free of numpy/PIL/torch-dataset imports.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gankit.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
