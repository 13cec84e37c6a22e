"""Synthetic datasets: official layouts, readable by the torch datasets, deterministic."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.data import CIFAR10Batches, DataError, MNISTIdx, check_layout, prepare, write_synthetic
from gankit.data.cli import main as cli_main
from gankit.data.datasets import read_idx
from gankit.data.registry import KODAK_PORTRAIT


def _tree_bytes(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _nearest_mean_accuracy(train_x, train_y, test_x, test_y) -> float:
    """A class-mean classifier: clearly above chance only if the classes really look different."""
    train_x = train_x.reshape(len(train_x), -1).float()
    test_x = test_x.reshape(len(test_x), -1).float()
    means = torch.stack([train_x[train_y == k].mean(0) for k in range(10)])
    pred = torch.cdist(test_x, means).argmin(1)
    return (pred == test_y).float().mean().item()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_synthetic_reads_back(tmp_path, name):
    d = write_synthetic(name, tmp_path, seed=3, n_train=120, n_test=40)
    assert d == tmp_path / name
    assert check_layout(name, d) == []
    train = MNISTIdx(d, "train", flavour=name)
    test = MNISTIdx(d, "test", flavour=name)
    assert (len(train), len(test)) == (120, 40)
    image, label = train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
    assert -1.0 <= image.min() and image.max() <= 1.0
    assert image.min() == -1.0 and image.max() > 0.5  # black background, bright strokes
    assert isinstance(label, int)
    assert sorted(set(train.labels.tolist())) == list(range(10))  # every class present
    assert len(train.classes) == 10
    big = MNISTIdx(d, "train", image_size=32, flavour=name)
    assert big[5][0].shape == (1, 32, 32) and -1 <= big[5][0].min() and big[5][0].max() <= 1
    assert _nearest_mean_accuracy(train.images, train.labels, test.images, test.labels) > 0.5


def test_idx_headers_are_official(tmp_path):
    d = write_synthetic("mnist", tmp_path, n_train=30, n_test=10)
    raw = gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes())
    assert struct.unpack(">IIII", raw[:16]) == (0x00000803, 30, 28, 28)
    assert len(raw) == 16 + 30 * 28 * 28
    raw = gzip.decompress((d / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert struct.unpack(">II", raw[:8]) == (0x00000801, 10)


def test_cifar_synthetic_reads_back(tmp_path):
    d = write_synthetic("cifar10", tmp_path, seed=1, n_train=100, n_test=30)
    assert check_layout("cifar10", d) == []
    train = CIFAR10Batches(d, "train")
    test = CIFAR10Batches(d / "cifar-10-batches-py", "test")  # the folder itself works too
    assert (len(train), len(test)) == (100, 30)
    image, label = train[3]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert -1.0 <= image.min() and image.max() <= 1.0
    assert 0 <= label <= 9 and sorted(set(train.labels.tolist())) == list(range(10))
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"
    assert _nearest_mean_accuracy(train.images, train.labels, test.images, test.labels) > 0.5


def test_cifar_pickles_match_the_real_format(tmp_path):
    d = write_synthetic("cifar10", tmp_path, n_train=50, n_test=10) / "cifar-10-batches-py"
    with open(d / "data_batch_2", "rb") as fh:
        as_bytes = pickle.load(fh, encoding="bytes")  # how Keras reads it
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (10, 3072)
    assert len(as_bytes[b"labels"]) == 10
    with open(d / "batches.meta", "rb") as fh:
        meta = pickle.load(fh, encoding="latin1")  # how torchvision reads it
    assert meta["label_names"][3] == "cat"


def test_cyclegan_synthetic(tmp_path):
    d = write_synthetic("horse2zebra", tmp_path, n_train=3, n_test=2)
    assert check_layout("horse2zebra", d) == []
    files = sorted((d / "horse2zebra" / "trainB").iterdir())
    assert len(files) == 3 and len(list((d / "horse2zebra" / "testA").iterdir())) == 2
    with Image.open(files[0]) as img:
        assert img.format == "JPEG" and img.size == (256, 256) and img.mode == "RGB"


def test_kodak_synthetic_has_the_24_names_at_quarter_size(tmp_path):
    d = prepare("kodak", tmp_path, smoke=True)
    assert d == tmp_path / "synthetic" / "kodak"
    assert check_layout("kodak", d) == []
    pngs = sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
    assert pngs == [f"kodim{i:02d}.png" for i in range(1, 25)]
    arrays = {}
    for name in pngs:
        with Image.open(d / name) as img:
            assert img.format == "PNG" and img.mode == "RGB", name
            assert img.size == ((128, 192) if name in KODAK_PORTRAIT else (192, 128)), name
            arrays[name] = np.asarray(img)
    assert all(a.std() > 10 for a in arrays.values())  # photo crops, not flat fills
    assert len({a.tobytes() for a in arrays.values()}) == 24
    a = _tree_bytes(write_synthetic("kodak", tmp_path / "a", seed=7))
    assert a == _tree_bytes(write_synthetic("kodak", tmp_path / "b", seed=7))
    c = _tree_bytes(write_synthetic("kodak", tmp_path / "c", seed=8))
    assert a.keys() == c.keys() and a["kodim05.png"] != c["kodim05.png"]


def test_kodak_synthetic_size_is_fixed(tmp_path, capsys):
    with pytest.raises(ValueError, match="fixed set of 24"):
        write_synthetic("kodak", tmp_path, n_train=5)
    with pytest.raises(ValueError, match="fixed set of 24"):
        write_synthetic("kodak", tmp_path, n_test=3)
    assert not (tmp_path / "kodak").exists()
    assert cli_main(["data", "synthetic", "kodak", str(tmp_path), "--n-test", "3"]) == 1
    assert "leave n_train and n_test unset" in capsys.readouterr().err
    assert cli_main(["data", "synthetic", "kodak", str(tmp_path)]) == 0
    assert check_layout("kodak", tmp_path / "kodak") == []


@pytest.mark.parametrize("name, n", [("mnist", 20), ("fashion_mnist", 20), ("cifar10", 20),
                                     ("apple2orange", 3)])
def test_deterministic_for_a_seed(tmp_path, name, n):
    a = _tree_bytes(write_synthetic(name, tmp_path / "a", seed=7, n_train=n, n_test=2))
    b = _tree_bytes(write_synthetic(name, tmp_path / "b", seed=7, n_train=n, n_test=2))
    c = _tree_bytes(write_synthetic(name, tmp_path / "c", seed=8, n_train=n, n_test=2))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_check_layout_reports_missing(tmp_path):
    d = write_synthetic("mnist", tmp_path, n_train=10, n_test=10)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    problems = check_layout("mnist", d)
    assert problems == [f"missing: {d / 't10k-labels-idx1-ubyte.gz'}"]


def _rewrite_gz(path: Path, edit) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    path.write_bytes(gzip.compress(bytes(edit(raw))))


def test_corrupted_magic_names_the_file(tmp_path):
    d = write_synthetic("mnist", tmp_path, n_train=10, n_test=10)
    path = d / "train-images-idx3-ubyte.gz"

    def bad_magic(raw):
        raw[3] = 0x01  # images file now claims to be 1-D
        return raw

    _rewrite_gz(path, bad_magic)
    with pytest.raises(DataError) as err:
        MNISTIdx(d, "train")
    message = str(err.value)
    assert str(path) in message and "magic" in message and "0x00000801" in message
    assert "gankit data" in message  # says how to fix it


def test_truncated_and_non_gzip_files(tmp_path):
    d = write_synthetic("fashion_mnist", tmp_path, n_train=10, n_test=10)
    path = d / "t10k-images-idx3-ubyte.gz"
    _rewrite_gz(path, lambda raw: raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        MNISTIdx(d, "test", flavour="fashion_mnist")
    path.write_bytes(b"<html>captive portal</html>")
    with pytest.raises(DataError, match=str(path).replace("\\", "\\\\")):
        read_idx(path, 0x00000803, dataset="fashion_mnist")


def test_mismatched_counts(tmp_path):
    d = write_synthetic("mnist", tmp_path, n_train=10, n_test=10)
    other = write_synthetic("mnist", tmp_path / "other", n_train=12, n_test=10)
    (d / "train-labels-idx1-ubyte.gz").write_bytes(
        (other / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="10 images but .* 12 labels"):
        MNISTIdx(d, "train")


def test_bad_cifar_batch(tmp_path):
    d = write_synthetic("cifar10", tmp_path, n_train=20, n_test=10)
    (d / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch"):
        CIFAR10Batches(d, "test")


def test_prepare_smoke_builds_once_and_reuses(tmp_path):
    d = prepare("mnist", tmp_path, smoke=True, seed=0)
    assert d == tmp_path / "synthetic" / "mnist"
    assert check_layout("mnist", d) == []
    stamp = (d / "train-images-idx3-ubyte.gz").stat().st_mtime_ns, d.stat().st_ino
    assert prepare("mnist", tmp_path, smoke=True, seed=0) == d
    assert ((d / "train-images-idx3-ubyte.gz").stat().st_mtime_ns, d.stat().st_ino) == stamp
    before = (d / "train-images-idx3-ubyte.gz").read_bytes()
    prepare("mnist", tmp_path, smoke=True, seed=1)  # another seed: rebuilt in place
    assert (d / "train-images-idx3-ubyte.gz").read_bytes() != before
    assert not [p for p in (tmp_path / "synthetic").iterdir() if p.name.startswith(".")]
    assert len(MNISTIdx(prepare("mnist", tmp_path, smoke=True, seed=1), "test")) == 100


def test_prepare_smoke_default_location_follows_gankit_data(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "cache"))
    d = prepare("fashion_mnist", smoke=True)
    assert d == tmp_path / "cache" / "synthetic" / "fashion_mnist"
    assert len(MNISTIdx(d, "train", flavour="fashion_mnist")) == 600


def test_prepare_rejects_unknown_names(tmp_path):
    with pytest.raises(DataError, match="known datasets"):
        prepare("no_such_set", tmp_path, smoke=True)


def test_cli_synthetic(tmp_path, capsys):
    code = cli_main(["data", "synthetic", "cifar10", str(tmp_path), "--n-train", "20",
                     "--n-test", "10"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cifar10")
    assert len(CIFAR10Batches(tmp_path / "cifar10", "train")) == 20
    assert cli_main(["data", "synthetic", "cifar10", str(tmp_path), "--n-train", "0"]) == 1
    assert "n_train" in capsys.readouterr().err
