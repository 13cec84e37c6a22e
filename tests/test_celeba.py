"""CelebA / RaFD for StarGAN: attribute parser, official split, transforms, synthetic copy, fetch.

No test touches the network: fetch of the real entry must fail offline with instructions, and the
hand-placement path is exercised with small stand-in files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
import shutil
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.data import (REGISTRY, CelebA, DataError, RaFDFolders, check_layout, fetch, prepare,
                         read_attributes, verify, write_synthetic)
from gankit.data.celeba import OFFICIAL_TEST_SIZE, shuffled_order, split_indices
from gankit.data.cli import main as cli_main
from gankit.data.registry import check_spec
from gankit.data.synthetic import CELEBA_ATTRIBUTES, celeba_attribute_text

HOMEPAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair")
# StarGAN's jpg/CelebA.md, in file order (spot-checked against the generator's constant).
OFFICIAL_NAMES_SPOT = {0: "5_o_Clock_Shadow", 8: "Black_Hair", 9: "Blond_Hair", 11: "Brown_Hair",
                       20: "Male", 24: "No_Beard", 39: "Young"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a CelebA test tried to open a URL")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return prepare("celeba", tmp_path_factory.mktemp("data"), smoke=True)


# --------------------------------------------------------------------------- attribute parser
def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.where(np.random.default_rng(seed).random((n, 40)) < 0.5, 1, -1)


def _attr_file(tmp_path: Path, lines: list[str], name: str = "list_attr_celeba.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def _valid_lines(n: int = 4) -> list[str]:
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    return celeba_attribute_text(names, _rows(n)).splitlines()


def test_read_attributes_valid_file(tmp_path):
    rows = _rows(5)
    names = [f"{i + 1:06d}.jpg" for i in range(5)]
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(celeba_attribute_text(names, rows))
    files, labels = read_attributes(path, ["Young", "Male", "5_o_Clock_Shadow"])
    assert files == names
    assert labels.dtype == bool and labels.shape == (5, 3)
    cols = [CELEBA_ATTRIBUTES.index(a) for a in ("Young", "Male", "5_o_Clock_Shadow")]
    assert (labels == (rows[:, cols] == 1)).all()
    # Windows line endings, single spaces and no trailing blank are all fine.
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(path.read_bytes().replace(b"  1", b" 1").replace(b"\n", b"\r\n"))
    assert read_attributes(crlf, "Male")[1][:, 0].tolist() == (rows[:, 20] == 1).tolist()


def _fields(line: str, edit) -> str:
    parts = line.split()
    edit(parts)
    return " ".join(parts)


BAD_CASES = {
    # name: (edit of the valid lines (0-based list), the 1-based line the message must name)
    "count_not_int": (lambda ls: ["two hundred", *ls[1:]], 1),
    "count_missing": (lambda ls: ls[1:], 1),
    "names_wrong_count": (lambda ls: [ls[0], _fields(ls[1], lambda f: f.pop()), *ls[2:]], 2),
    "names_missing": (lambda ls: [ls[0], *ls[2:]], 2),
    "row_too_short": (lambda ls: [*ls[:3], _fields(ls[3], lambda f: f.pop()), *ls[4:]], 4),
    "row_too_long": (lambda ls: [*ls[:4], _fields(ls[4], lambda f: f.append("1")), *ls[5:]], 5),
    "value_not_pm1": (lambda ls: [*ls[:4], _fields(ls[4], lambda f: f.__setitem__(7, "0")),
                                  *ls[5:]], 5),
    "value_plus_one": (lambda ls: [*ls[:2], _fields(ls[2], lambda f: f.__setitem__(1, "+1")),
                                   *ls[3:]], 3),
    "empty_line_inside": (lambda ls: [*ls[:3], "", *ls[3:]], 4),
    "count_disagrees": (lambda ls: ["7", *ls[1:]], 1),
    "duplicate_name": (lambda ls: [*ls[:3],
                                   _fields(ls[3], lambda f: f.__setitem__(0, "000001.jpg")),
                                   *ls[4:]], 4),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_attribute_file_names_file_and_line(tmp_path, case):
    edit, line = BAD_CASES[case]
    lines = edit(_valid_lines(4))
    path = _attr_file(tmp_path, lines)
    with pytest.raises(DataError) as err:
        read_attributes(path)
    message = str(err.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert "gankit data verify celeba" in message  # the fix


def test_value_error_names_the_attribute(tmp_path):
    lines = _valid_lines(3)
    fields = lines[3].split()
    fields[1 + 20] = "2"  # Male of the second image
    lines[3] = " ".join(fields)
    with pytest.raises(DataError, match=r"line 4: value '2' for attribute Male"):
        read_attributes(_attr_file(tmp_path, lines))


def test_empty_file(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("")
    with pytest.raises(DataError, match="line 1: the file is empty"):
        read_attributes(path)


def test_unknown_attribute_suggests_valid_names(tmp_path):
    path = _attr_file(tmp_path, _valid_lines(2))
    with pytest.raises(DataError) as err:
        read_attributes(path, ["Black_Hair", "Blonde_Hair"])
    message = str(err.value)
    assert str(path) in message and "line 2" in message and "'Blonde_Hair'" in message
    assert "did you mean Blond_Hair" in message
    assert "valid names: 5_o_Clock_Shadow, Arched_Eyebrows" in message and "Young" in message
    with pytest.raises(DataError, match="did you mean .*Male"):
        read_attributes(path, "male")
    with pytest.raises(ValueError):
        read_attributes(path, [])


def test_missing_attribute_file(tmp_path):
    with pytest.raises(DataError, match="gankit data fetch celeba"):
        read_attributes(tmp_path / "nope.txt")


# ---------------------------------------------------------------------------------- split rule
def test_split_reproduces_official_shuffle_without_touching_global_random(tmp_path):
    n = 2500
    lines = [f"{i + 1:06d}.jpg" + " 1" * 40 for i in range(n)]
    random.seed(99)
    before = random.getstate()
    order = shuffled_order(n)
    test, train = split_indices(n, "test"), split_indices(n, "train")
    assert random.getstate() == before  # the global generator was not used
    saved = random.getstate()
    try:
        official = list(lines)
        random.seed(1234)  # exactly what data_loader.py does
        random.shuffle(official)
    finally:
        random.setstate(saved)
    assert [lines[i] for i in order] == official
    official_test = [line for i, line in enumerate(official) if (i + 1) < 2000]
    official_train = [line for i, line in enumerate(official) if not (i + 1) < 2000]
    assert [lines[i] for i in test] == official_test
    assert [lines[i] for i in train] == official_train
    assert len(test) == OFFICIAL_TEST_SIZE == 1999 and len(train) == n - 1999


def test_celeba_dataset_uses_the_official_split(tmp_path):
    n = 2010
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    rows = _rows(n, seed=1)
    (tmp_path / "list_attr_celeba.txt").write_text(celeba_attribute_text(names, rows))
    images = tmp_path / "images"  # StarGAN's own layout (download.sh)
    images.mkdir()
    for name in names:
        (images / name).touch()  # nothing is decoded before __getitem__
    state = random.getstate()
    test = CelebA(tmp_path, split="test")
    train = CelebA(tmp_path, split="train", selected_attrs=["Male"])
    assert random.getstate() == state
    saved = random.getstate()
    try:
        shuffled = list(range(n))
        random.seed(1234)
        random.shuffle(shuffled)
    finally:
        random.setstate(saved)
    assert test.file_names == [names[i] for i in shuffled[:1999]]
    assert train.file_names == [names[i] for i in shuffled[1999:]] and len(train) == 11
    male = CELEBA_ATTRIBUTES.index("Male")
    assert train.labels[:, 0].tolist() == [float(rows[i, male] == 1) for i in shuffled[1999:]]
    assert test.image_dir == images


# ------------------------------------------------------------------------ synthetic + dataset
def test_prepare_smoke_layout_and_attribute_file(synthetic_root):
    assert synthetic_root.name == "celeba"
    assert check_layout("celeba", synthetic_root) == []
    lines = (synthetic_root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    assert names == list(CELEBA_ATTRIBUTES) and len(names) == 40
    for i, name in OFFICIAL_NAMES_SPOT.items():
        assert names[i] == name
    jpgs = sorted(p.name for p in (synthetic_root / "img_align_celeba").iterdir())
    assert int(lines[0]) == len(jpgs) == len(lines) - 2 == 400
    assert jpgs[0] == "000001.jpg" and jpgs[-1] == "000400.jpg"
    with Image.open(synthetic_root / "img_align_celeba" / "000007.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (178, 218)
    files, labels = read_attributes(synthetic_root / "list_attr_celeba.txt",
                                    [*HAIR, "Male", "No_Beard", "Young"])
    assert (labels[:, :3].sum(1) == 1).all()  # exactly one hair colour
    assert (labels[:, 3] != labels[:, 4]).all()  # a beard is drawn for every man
    assert 0.3 < labels[:, 3].mean() < 0.7 and 0.3 < labels[:, 5].mean() < 0.7
    assert prepare("celeba", synthetic_root.parent.parent, smoke=True) == synthetic_root


def test_synthetic_celeba_is_deterministic(tmp_path):
    def tree(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    a = tree(write_synthetic("celeba", tmp_path / "a", seed=5, n_train=12, n_test=4))
    b = tree(write_synthetic("celeba", tmp_path / "b", seed=5, n_train=12, n_test=4))
    c = tree(write_synthetic("celeba", tmp_path / "c", seed=6, n_train=12, n_test=4))
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert a["img_align_celeba/000003.jpg"] != c["img_align_celeba/000003.jpg"]


def test_dataset_shapes_ranges_and_labels(synthetic_root):
    train = CelebA(synthetic_root, split="train")
    test = CelebA(synthetic_root, split="test", image_size=64)
    assert (len(train), len(test)) == (320, 80)  # n_test from the copy's .synthetic.json
    assert not set(train.file_names) & set(test.file_names)
    assert train.flip and not test.flip
    image, label = train[3]
    assert image.dtype == torch.float32 and image.shape == (3, 128, 128)
    assert -1.0 <= image.min() < -0.3 and 0.3 < image.max() <= 1.0
    assert label.dtype == torch.float32 and label.shape == (5,)
    assert torch.equal(label, train.labels[3])
    assert set(train.labels.unique().tolist()) == {0.0, 1.0}
    assert (train.labels[:, :3].sum(1) == 1).all() and (test.labels[:, :3].sum(1) == 1).all()
    small, _ = test[0]
    assert small.shape == (3, 64, 64)
    files, labels = read_attributes(synthetic_root / "list_attr_celeba.txt")
    row = files.index(test.file_names[0])
    assert test[0][1].tolist() == labels[row].astype(float).tolist()


def test_official_transform_center_crop_resize_and_flip(synthetic_root):
    test = CelebA(synthetic_root, split="test")
    name = test.file_names[2]
    with Image.open(synthetic_root / "img_align_celeba" / name) as img:
        # CenterCrop(178) of 178x218 keeps rows 20..197; Resize(128) is PIL bilinear.
        ref = img.convert("RGB").crop((0, 20, 178, 198)).resize((128, 128),
                                                                Image.Resampling.BILINEAR)
    expected = torch.from_numpy(np.asarray(ref, np.float32) / 255).permute(2, 0, 1) * 2 - 1
    assert torch.allclose(test[2][0], expected, atol=1e-6)
    assert torch.equal(test[2][0], test[2][0])  # the test split is deterministic
    train = CelebA(synthetic_root, split="train")
    index = train.file_names.index(name) if name in train.file_names else None
    assert index is None  # disjoint splits; compare the flip on a train image instead
    with Image.open(synthetic_root / "img_align_celeba" / train.file_names[0]) as img:
        ref = img.convert("RGB").crop((0, 20, 178, 198)).resize((128, 128),
                                                                Image.Resampling.BILINEAR)
    plain = torch.from_numpy(np.asarray(ref, np.float32) / 255).permute(2, 0, 1) * 2 - 1
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        image = train[0][0]
        if torch.allclose(image, plain, atol=1e-6):
            seen.add("plain")
        elif torch.allclose(image, plain.flip(-1), atol=1e-6):
            seen.add("flipped")
        else:
            pytest.fail("a train image is neither the official crop nor its mirror image")
    assert seen == {"plain", "flipped"}


def test_dataset_errors_name_what_is_missing(tmp_path, synthetic_root):
    with pytest.raises(DataError, match="no CelebA image folder"):
        CelebA(tmp_path)
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(DataError, match="list_attr_celeba.txt not found"):
        CelebA(tmp_path)
    shutil.copy(synthetic_root / "list_attr_celeba.txt", tmp_path)
    with pytest.raises(DataError, match="000.*jpg not found"):
        CelebA(tmp_path, split="test", test_size=80)
    with pytest.raises(DataError, match="leaves none for the 'train' split"):
        CelebA(tmp_path, split="train")  # 400 images, all in the official 1999 test images
    with pytest.raises(ValueError):
        CelebA(synthetic_root, split="val")


# ------------------------------------------------------------------------- registry and fetch
def test_registry_entry():
    spec = REGISTRY["celeba"]
    assert check_spec(spec) == []
    assert spec.homepage == HOMEPAGE and spec.layout == "celeba"
    files = {f.filename: f for f in spec.files}
    assert set(files) == {"img_align_celeba.zip", "list_attr_celeba.txt"}
    zf, attrs = files["img_align_celeba.zip"], files["list_attr_celeba.txt"]
    # tensorflow/datasets url_checksums/celeb_a.txt; also pinned by torchvision's prototype
    assert (zf.size, zf.sha256[:16]) == (1443490838, "46fb89443c578308")
    assert (attrs.size, attrs.sha256[:16]) == (26721026, "f0e5da289d5ccf75")
    for f in spec.files:
        assert len(f.sha256) == 64 and all(c in "0123456789abcdef" for c in f.sha256)
        assert f.urls == () and "Google Drive" in f.manual  # placed by hand, says where
    assert zf.extract == "zip" and attrs.extract is None
    assert set(spec.required) == {"img_align_celeba", "list_attr_celeba.txt"}


def test_fetch_without_files_fails_offline_with_instructions(tmp_path):
    with pytest.raises(DataError) as err:
        fetch("celeba", tmp_path, progress=False)
    message = str(err.value)
    d = tmp_path / "celeba"
    assert HOMEPAGE in message
    assert "img_align_celeba.zip" in message and "list_attr_celeba.txt" in message
    assert str(d / "img_align_celeba.zip") in message and f"{d}/" in message
    assert "1443490838" in message and "gankit data fetch celeba" in message
    assert sorted(p.name for p in d.iterdir()) == [".lock"]  # nothing downloaded or written
    problems = verify("celeba", tmp_path)
    by_hand = [p for p in problems if HOMEPAGE in p]
    assert len(by_hand) == 2  # both files, each with the page to get it from
    assert any("img_align_celeba is missing" in p for p in problems)  # not unpacked yet


def test_cli_fetch_celeba_prints_instructions(tmp_path, capsys):
    assert cli_main(["data", "fetch", "celeba", "--root", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and HOMEPAGE in err and str(tmp_path / "celeba") in err


def _hand_placed_spec(tmp_path: Path) -> tuple:
    """The celeba entry with a small synthetic zip + attribute file pinned instead of the real."""
    src = write_synthetic("celeba", tmp_path / "src", seed=2, n_train=6, n_test=3)
    archive = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((src / "img_align_celeba").iterdir()):
            zf.write(p, f"img_align_celeba/{p.name}")
    payload = {"img_align_celeba.zip": archive.read_bytes(),
               "list_attr_celeba.txt": (src / "list_attr_celeba.txt").read_bytes()}
    files = tuple(dataclasses.replace(f, sha256=hashlib.sha256(payload[f.filename]).hexdigest(),
                                      size=len(payload[f.filename]))
                  for f in REGISTRY["celeba"].files)
    return dataclasses.replace(REGISTRY["celeba"], files=files), payload


def test_hand_placed_files_are_verified_and_extracted(tmp_path):
    spec, payload = _hand_placed_spec(tmp_path)
    d = tmp_path / "cache" / "celeba"
    d.mkdir(parents=True)
    (d / "img_align_celeba.zip").write_bytes(payload["img_align_celeba.zip"])
    with pytest.raises(DataError, match="list_attr_celeba.txt is missing"):
        fetch("celeba", tmp_path / "cache", spec=spec, progress=False)
    (d / "list_attr_celeba.txt").write_bytes(payload["list_attr_celeba.txt"])
    assert fetch("celeba", tmp_path / "cache", spec=spec, progress=False) == d
    assert (d / ".verified").is_file() and (d / "img_align_celeba" / "000009.jpg").is_file()
    assert verify("celeba", tmp_path / "cache", spec=spec) == []
    test = CelebA(d, split="test", test_size=3)
    assert len(test) == 3 and test[0][0].shape == (3, 128, 128)


def test_hand_placed_wrong_file_is_reported_and_left_in_place(tmp_path):
    spec, payload = _hand_placed_spec(tmp_path)
    d = tmp_path / "cache" / "celeba"
    d.mkdir(parents=True)
    (d / "img_align_celeba.zip").write_bytes(payload["img_align_celeba.zip"][:-10])
    (d / "list_attr_celeba.txt").write_bytes(payload["list_attr_celeba.txt"])
    with pytest.raises(DataError) as err:
        fetch("celeba", tmp_path / "cache", spec=spec, progress=False)
    message = str(err.value)
    assert str(d / "img_align_celeba.zip") in message and "expected" in message
    assert HOMEPAGE in message
    assert (d / "img_align_celeba.zip").stat().st_size == len(payload["img_align_celeba.zip"]) - 10
    assert not (d / "img_align_celeba.zip.corrupt").exists() and not (d / ".verified").exists()


# ---------------------------------------------------------------------------------------- RaFD
def _rafd_tree(root: Path) -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    layout = {"train": {"happy": 3, "angry": 2, "neutral": 2}, "test": {"angry": 1, "happy": 1}}
    for split, classes in layout.items():
        for name, n in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                side = 300 if i % 2 else 256
                arr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{name}_{i}.jpg", quality=95)
    return {s: sorted(c) for s, c in layout.items()}


def test_rafd_folders(tmp_path):
    classes = _rafd_tree(tmp_path)
    (tmp_path / "train" / "happy" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    train = RaFDFolders(tmp_path)
    assert train.classes == classes["train"] == ["angry", "happy", "neutral"]
    assert len(train) == 7 and train.targets == [0, 0, 1, 1, 1, 2, 2]
    assert [Path(p).name for p, _ in train.samples][:3] == ["angry_0.jpg", "angry_1.jpg",
                                                           "happy_0.jpg"]
    image, label = train[2]
    assert isinstance(label, int) and label == 1
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert -1.0 <= image.min() and image.max() <= 1.0
    test = RaFDFolders(tmp_path, image_size=64, split="test")
    assert not test.flip and test.classes == ["angry", "happy"] and len(test) == 2
    path = test.samples[0][0]
    with Image.open(path) as img:  # 256x256: CenterCrop(256) keeps it, Resize(64) shrinks it
        ref = img.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    expected = torch.from_numpy(np.asarray(ref, np.float32) / 255).permute(2, 0, 1) * 2 - 1
    assert torch.allclose(test[0][0], expected, atol=1e-6)
    flat = RaFDFolders(tmp_path / "test", split=None, flip=False)  # --rafd_image_dir data/RaFD/test
    assert flat.samples == test.samples


def test_rafd_matches_torchvision_imagefolder(tmp_path):
    from torchvision.datasets import ImageFolder

    _rafd_tree(tmp_path)
    ours, theirs = RaFDFolders(tmp_path), ImageFolder(str(tmp_path / "train"))
    assert ours.classes == theirs.classes and ours.class_to_idx == theirs.class_to_idx
    assert ours.samples == theirs.samples


def test_rafd_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        RaFDFolders(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folder"):
        RaFDFolders(tmp_path)
    (tmp_path / "train" / "sad").mkdir()
    with pytest.raises(DataError, match="sad holds no image"):
        RaFDFolders(tmp_path)
