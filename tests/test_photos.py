"""gankit.data.photos: the photos scikit-image / matplotlib install, and random crops of a folder.

No test touches the network: an autouse guard makes any socket connection fail, so "shipped"
really means installed, not fetched on first use.
"""
from __future__ import annotations

import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gankit.data import DataError, PhotoCrops, shipped_photos, write_shipped_photos
from gankit.data.photos import JPEG_DERIVED


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    real_connect = socket.socket.connect

    def guarded(sock, address, *args, **kwargs):
        if sock.family == getattr(socket, "AF_UNIX", None):  # DataLoader workers' local pipes
            return real_connect(sock, address, *args, **kwargs)
        raise OSError(f"network disabled in tests ({address})")

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="module")
def photos():
    return shipped_photos()


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _gradient(height, width):
    """A smooth colour image where every position looks different (crops are identifiable)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 255 // max(1, width - 1), ys * 255 // max(1, height - 1),
                     (xs + ys) % 256], axis=-1).astype(np.uint8)


# --------------------------------------------------------------------------- shipped photos
def test_shipped_photos_are_real_rgb_photos(photos):
    expected = {"astronaut": (512, 512), "chelsea": (300, 451), "coffee": (400, 600),
                "rocket": (427, 640), "motorcycle_left": (500, 741)}
    assert list(photos)[:5] == list(expected)
    assert set(photos) <= {*expected, "grace_hopper"}
    for name, arr in photos.items():
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
        assert arr.flags.c_contiguous, name
        if name in expected:
            assert arr.shape[:2] == expected[name], name
        assert 256 <= min(arr.shape[:2]) and max(arr.shape[:2]) <= 1024, name
        channels = arr.reshape(-1, 3).astype(np.int16)
        assert np.abs(channels[:, 0] - channels[:, 2]).mean() > 5, f"{name} is not colour"
        assert arr.std() > 30 and len(np.unique(arr)) > 200, f"{name} looks flat, not a photo"
    assert set(JPEG_DERIVED) >= {"rocket"} and set(JPEG_DERIVED) <= {"rocket", "grace_hopper"}


def test_grace_hopper_comes_from_matplotlib_when_installed(photos):
    from matplotlib import cbook

    try:
        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    except (OSError, ValueError):
        pytest.skip("this matplotlib has no sample data")
    assert photos["grace_hopper"].shape == (600, 512, 3)
    with Image.open(path) as img:
        assert img.format == "JPEG"
        assert np.array_equal(photos["grace_hopper"], np.asarray(img.convert("RGB")))


def test_write_shipped_photos_is_idempotent(tmp_path, photos):
    folder = tmp_path / "new" / "photos"
    paths = write_shipped_photos(folder)
    assert paths == [folder / f"{name}.png" for name in photos]
    for path, arr in zip(paths, photos.values()):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert np.array_equal(np.asarray(img), arr)  # lossless: the very same pixels
    stamps = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in paths}
    (folder / "mine.txt").write_text("kept")
    assert write_shipped_photos(folder) == paths
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in paths} == stamps  # not rewritten
    # A damaged copy is replaced; nothing else in the folder is touched, no temp file is left.
    good = paths[1].read_bytes()
    paths[1].write_bytes(good[:100])
    write_shipped_photos(folder)
    assert paths[1].read_bytes() == good
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in paths]
                                                              + ["mine.txt"])


# ------------------------------------------------------------------------------- PhotoCrops
@pytest.fixture
def folder(tmp_path):
    """Three images, one in a subfolder, one grayscale, plus clutter that is not an image."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    _save(root / "a.png", rng.integers(0, 256, (80, 120, 3), dtype=np.uint8))
    _save(root / "sub" / "b.jpg", rng.integers(0, 256, (100, 70, 3), dtype=np.uint8))
    _save(root / "c.png", rng.integers(0, 256, (90, 90), dtype=np.uint8))  # grayscale
    (root / "notes.txt").write_text("not an image")
    (root / "._a.png").write_bytes(b"AppleDouble fork, not a PNG")
    return root


def test_items_shape_range_and_length(folder):
    ds = PhotoCrops(folder, 64, seed=0)
    assert len(ds) == 3 and [p.rsplit("/", 1)[-1] for p in ds.paths] == ["a.png", "c.png", "b.jpg"]
    for i in range(len(ds)):
        x = ds[i]
        assert isinstance(x, torch.Tensor) and x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    grey = ds[1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # grey file -> RGB
    with pytest.raises(IndexError):
        ds[3]
    assert ds[-1].shape == (3, 64, 64)
    long = PhotoCrops(folder, 32, length=50)
    assert len(long) == 50
    batch = next(iter(DataLoader(long, batch_size=10, shuffle=True)))
    assert batch.shape == (10, 3, 32, 32)
    assert "photos" in repr(long) and "images=3" in repr(long) and "length=50" in repr(long)


def test_crop_is_a_window_of_the_image_possibly_flipped(tmp_path):
    arr = _gradient(70, 110)
    _save(tmp_path / "g.png", arr)
    ds = PhotoCrops(tmp_path, 64, length=40, seed=3)
    flips = 0
    for i in range(len(ds)):
        crop = (ds[i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        windows = [arr[t:t + 64, l:l + 64] for t in range(70 - 63) for l in range(110 - 63)]
        if any(np.array_equal(crop, w) for w in windows):
            continue
        assert any(np.array_equal(crop[:, ::-1], w) for w in windows), f"item {i}: no window"
        flips += 1
    assert 5 <= flips <= 35  # about half are mirrored


def test_items_differ_and_flip_false_never_mirrors(tmp_path):
    _save(tmp_path / "g.png", _gradient(70, 110))
    ds = PhotoCrops(tmp_path, 32, length=12, seed=0)
    crops = [ds[i] for i in range(len(ds))]  # all from the one image
    distinct = {tuple(c.flatten()[::97].tolist()) for c in crops}
    assert len(distinct) >= 10, "every item is a fresh random crop"
    plain = PhotoCrops(tmp_path, 32, length=30, flip=False, seed=0)
    for i in range(len(plain)):
        red = plain[i][0]  # red grows left to right in _gradient; a mirrored crop would decrease
        assert (red[:, 1:] >= red[:, :-1]).all()


def test_seeded_crops_are_reproducible(folder):
    def sequence(seed, cache=False):
        ds = PhotoCrops(folder, 48, length=9, seed=seed, cache=cache)
        return torch.stack([ds[i] for i in range(len(ds))])

    first = sequence(1)
    assert torch.equal(first, sequence(1))
    assert torch.equal(first, sequence(1, cache=True))  # caching changes speed, not content
    assert not torch.equal(first, sequence(2))


def test_seed_none_follows_the_global_random_module(folder):
    ds = PhotoCrops(folder, 48, length=6)
    random.seed(5)
    first = torch.stack([ds[i] for i in range(6)])
    random.seed(5)
    assert torch.equal(first, torch.stack([ds[i] for i in range(6)]))
    random.seed(6)
    assert not torch.equal(first, torch.stack([ds[i] for i in range(6)]))


def test_cache_keeps_decoded_images_only_when_asked(folder):
    ds = PhotoCrops(folder, 48, seed=0)
    ds[0]
    assert ds._images == {}
    cached = PhotoCrops(folder, 48, seed=0, cache=True)
    cached[0], cached[2]
    assert sorted(cached._images) == [0, 2]
    assert cached._images[0].shape == (80, 120, 3) and cached._images[0].dtype == np.uint8


def test_small_images_are_upscaled_bicubic_to_the_crop(tmp_path):
    arr = _gradient(20, 50)  # short side 20 < 64: scaled to 64 x 160
    _save(tmp_path / "small.png", arr)
    ds = PhotoCrops(tmp_path, 64, length=20, seed=0, flip=False)
    expected = np.asarray(Image.fromarray(arr).resize((160, 64), Image.Resampling.BICUBIC))
    lefts = set()
    for i in range(len(ds)):
        crop = (ds[i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert crop.shape == (64, 64, 3)
        matches = [l for l in range(160 - 63) if np.array_equal(crop, expected[:, l:l + 64])]
        assert matches, f"item {i} is not a window of the bicubic upscale"
        lefts.add(matches[0])
    assert len(lefts) > 5  # random positions along the long side
    tall = tmp_path / "tall"
    _save(tall / "t.png", _gradient(50, 10))  # portrait, narrow side 10
    assert PhotoCrops(tall, 16, seed=0)[0].shape == (3, 16, 16)


def test_empty_or_missing_folder_names_it_and_says_how_to_fill_it(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as err:
        PhotoCrops(empty, 64)
    message = str(err.value)
    assert str(empty) in message and "holds no image" in message
    assert "write_shipped_photos" in message and "kodak" in message
    assert "CycleGAN" not in message  # the advice fits a photo folder
    with pytest.raises(DataError, match="does not exist") as err:
        PhotoCrops(tmp_path / "nowhere", 64)
    assert str(tmp_path / "nowhere") in str(err.value)


def test_unreadable_file_names_it(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"<html>not a png</html>")
    ds = PhotoCrops(tmp_path, 8)
    with pytest.raises(DataError, match="broken.png"):
        ds[0]


def test_bad_sizes_are_refused(folder):
    with pytest.raises(ValueError, match="crop_size"):
        PhotoCrops(folder, 0)
    with pytest.raises(ValueError, match="length"):
        PhotoCrops(folder, 8, length=0)


def _crops_by_worker(ds, seed):
    loader = DataLoader(ds, batch_size=1, num_workers=2,
                        generator=torch.Generator().manual_seed(seed))
    crops = [batch[0] for batch in loader]
    return torch.stack(crops[0::2]), torch.stack(crops[1::2])  # batches alternate by worker


def test_workers_draw_different_reproducible_streams(tmp_path):
    _save(tmp_path / "g.png", _gradient(70, 110))
    ds = PhotoCrops(tmp_path, 16, length=8, seed=0)
    worker0, worker1 = _crops_by_worker(ds, seed=1)
    assert not torch.equal(worker0, worker1), "each worker gets its own stream"
    again = _crops_by_worker(ds, seed=1)
    assert torch.equal(worker0, again[0]) and torch.equal(worker1, again[1])


def test_crops_of_the_shipped_photos_and_synthetic_kodak(tmp_path):
    from gankit.data import prepare

    ds = PhotoCrops(write_shipped_photos(tmp_path / "shipped")[0].parent, 256, length=12, seed=0)
    assert torch.stack([ds[i] for i in range(12)]).shape == (12, 3, 256, 256)
    kodak = PhotoCrops(prepare("kodak", tmp_path / "data", smoke=True), 64, seed=0)
    assert len(kodak) == 24 and kodak[23].shape == (3, 64, 64)


def test_lazy_export():
    code = ("import sys, gankit.data as d; assert 'gankit.data.photos' not in sys.modules; "
            "assert {'PhotoCrops', 'shipped_photos', 'write_shipped_photos'} <= set(dir(d)); "
            "d.PhotoCrops; assert 'gankit.data.photos' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
