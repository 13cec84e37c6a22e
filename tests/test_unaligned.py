"""gankit.data.unaligned: CycleGAN's unaligned two-domain dataset and the single-folder dataset."""
from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gankit.data import DataError, SingleImageFolder, UnalignedImageFolders, write_synthetic


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


@pytest.fixture
def two_domains(tmp_path):
    """3 A images, 5 B images in mixed formats, sizes and modes, one in a subfolder, plus clutter."""
    rng = np.random.default_rng(0)
    root = tmp_path / "set"
    for i in range(3):
        _save(root / "trainA" / f"a{i}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    _save(root / "trainB" / "b0.jpg", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _save(root / "trainB" / "b1.PNG", rng.integers(0, 256, (16, 30), dtype=np.uint8))  # grayscale
    _save(root / "trainB" / "b2.png", rng.integers(0, 256, (16, 16, 4), dtype=np.uint8))  # RGBA
    _save(root / "trainB" / "deeper" / "b3.bmp", rng.integers(0, 256, (18, 16, 3), dtype=np.uint8))
    _save(root / "trainB" / "deeper" / "b4.tif", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    (root / "trainB" / "notes.txt").write_text("not an image")
    (root / "trainB" / "._b0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble fork, not a JPEG")
    for split in ("testA", "testB"):
        _save(root / split / "t0.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        _save(root / split / "t1.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    return root


def reference_resize(path, size):
    """Independent of the module: PIL bicubic resize of the RGB image, scaled to [-1, 1]."""
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def test_items_lengths_and_paths(two_domains):
    ds = UnalignedImageFolders(two_domains, load_size=12, crop_size=8, seed=0)
    assert len(ds) == 5, "max(len A, len B)"
    names = [p.rsplit("/", 1)[-1] for p in ds.B_paths]
    assert names == ["b0.jpg", "b1.PNG", "b2.png", "b3.bmp", "b4.tif"], "sorted, recursive, images only"
    for index in range(len(ds)):
        item = ds[index]
        assert set(item) == {"A", "B", "A_path", "B_path"}
        for key in "AB":
            assert item[key].shape == (3, 8, 8) and item[key].dtype == torch.float32
            assert -1.0 <= item[key].min() and item[key].max() <= 1.0
        assert item["A_path"] == ds.A_paths[index % 3], "A cycles through its folder in order"
        assert item["B_path"] in ds.B_paths


def test_random_b_is_seeded_and_varies(two_domains):
    def b_sequence(seed):
        ds = UnalignedImageFolders(two_domains, load_size=12, crop_size=8, seed=seed)
        return [ds[i % len(ds)]["B_path"] for i in range(20)]

    first = b_sequence(1)
    assert first == b_sequence(1), "same seed, same pairs"
    assert first != b_sequence(2)
    assert len(set(first)) >= 4, "B is drawn at random, not fixed per A"


def test_seed_none_follows_the_global_random_module(two_domains):
    ds = UnalignedImageFolders(two_domains, load_size=12, crop_size=8)
    random.seed(5)
    first = [(ds[i]["B_path"], ds[i]["A"].sum().item()) for i in range(5)]
    random.seed(5)
    assert first == [(ds[i]["B_path"], ds[i]["A"].sum().item()) for i in range(5)]


def test_serial_pairs_in_order(two_domains):
    ds = UnalignedImageFolders(two_domains, load_size=12, crop_size=8, serial=True)
    assert [ds[i]["B_path"] for i in range(5)] == ds.B_paths


def test_train_transform_is_resize_then_crop_then_flip(two_domains):
    ds = UnalignedImageFolders(two_domains, load_size=12, crop_size=8, seed=3)
    resized = reference_resize(ds.A_paths[0], 12)
    windows = {}
    for _ in range(60):
        out = ds[0]["A"]
        found = [(top, left, flipped)
                 for top in range(5) for left in range(5) for flipped in (False, True)
                 if torch.allclose(out, (resized.flip(-1) if flipped else resized)[
                     :, top:top + 8, (4 - left if flipped else left):(4 - left if flipped else left) + 8],
                     atol=1e-6)]
        assert found, "every output is a crop of the bicubic resize, possibly mirrored"
        windows.setdefault(found[0][2], set()).add(found[0][:2])
    assert set(windows) == {False, True}, "both flipped and unflipped crops occur"
    assert len(windows[False] | windows[True]) > 5, "crop positions vary"


def test_no_flip_never_mirrors(two_domains):
    ds = UnalignedImageFolders(two_domains, load_size=8, crop_size=8, flip=False, seed=0)
    expected = reference_resize(ds.A_paths[1], 8)
    for _ in range(10):
        assert torch.allclose(ds[1]["A"], expected, atol=1e-6)


def test_test_split_is_the_official_test_setting(two_domains):
    ds = UnalignedImageFolders(two_domains, "test", crop_size=10)
    assert (ds.load_size, ds.flip, ds.serial) == (10, False, True)
    for i in range(2):
        item = ds[i]
        assert item["B_path"] == ds.B_paths[i]
        assert torch.allclose(item["A"], reference_resize(item["A_path"], 10), atol=1e-6)
        assert torch.allclose(item["B"], reference_resize(item["B_path"], 10), atol=1e-6)


def test_grayscale_and_rgba_come_out_rgb(two_domains):
    ds = UnalignedImageFolders(two_domains, load_size=8, crop_size=8, flip=False, serial=True)
    gray = ds[1]["B"]
    assert gray.shape == (3, 8, 8)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert ds[2]["B"].shape == (3, 8, 8)


def test_bad_sizes_are_refused(two_domains):
    with pytest.raises(ValueError, match="crop_size"):
        UnalignedImageFolders(two_domains, load_size=8, crop_size=16)


def test_missing_or_empty_domain_names_the_folder(two_domains, tmp_path):
    with pytest.raises(DataError, match="valA"):
        UnalignedImageFolders(two_domains, "val")
    empty = tmp_path / "empty"
    (empty / "trainA").mkdir(parents=True)
    (empty / "trainB").mkdir()
    Image.new("RGB", (4, 4)).save(empty / "trainA" / "x.png")
    (empty / "trainB" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=str(empty / "trainB")):
        UnalignedImageFolders(empty)
    with pytest.raises(DataError, match="does not exist"):
        SingleImageFolder(tmp_path / "nowhere", 8)


def test_reads_the_synthetic_cyclegan_copy_through_its_outer_folder(tmp_path):
    path = write_synthetic("horse2zebra", tmp_path, n_train=3, n_test=2)
    ds = UnalignedImageFolders(path, load_size=40, crop_size=32, seed=0)  # <path>/horse2zebra/trainA
    assert len(ds) == 3 and ds.dir_A == path / "horse2zebra" / "trainA"
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["A"].shape == (2, 3, 32, 32) and len(batch["B_path"]) == 2


def _b_choices_by_worker(ds, seed):
    loader = DataLoader(ds, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(seed))
    choices = [ds.B_paths.index(batch["B_path"][0]) for batch in loader]
    return choices[0::2], choices[1::2]  # batches alternate between the two workers


def test_workers_draw_different_reproducible_streams(tmp_path):
    root = tmp_path / "many"
    for i in range(12):
        _save(root / "trainA" / f"a{i:02d}.png", np.full((8, 8, 3), i, np.uint8))
        _save(root / "trainB" / f"b{i:02d}.png", np.full((8, 8, 3), 100 + i, np.uint8))
    ds = UnalignedImageFolders(root, load_size=8, crop_size=8, seed=0)
    worker0, worker1 = _b_choices_by_worker(ds, seed=1)
    assert worker0 != worker1, "each worker gets its own stream, not a copy of the same one"
    assert (worker0, worker1) == _b_choices_by_worker(ds, seed=1), "same loader seed, same pairs"
    assert (worker0, worker1) != _b_choices_by_worker(ds, seed=2)


def test_single_image_folder(two_domains):
    ds = SingleImageFolder(two_domains / "trainB", size=10)
    assert len(ds) == 5
    image, path = ds[3]
    assert path.endswith("b3.bmp") and image.shape == (3, 10, 10)
    assert torch.allclose(image, reference_resize(path, 10), atol=1e-6)
    images, paths = next(iter(DataLoader(ds, batch_size=5)))
    assert images.shape == (5, 3, 10, 10) and list(paths) == ds.paths


def test_lazy_export():
    code = ("import sys, gankit.data as d; assert 'gankit.data.unaligned' not in sys.modules; "
            "assert 'UnalignedImageFolders' in d.__all__ and 'SingleImageFolder' in dir(d); "
            "d.UnalignedImageFolders; assert 'gankit.data.unaligned' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
