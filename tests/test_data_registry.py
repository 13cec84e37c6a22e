"""The dataset registry: well-formed, pinned entries and the cache-root rules."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gankit.data import REGISTRY, DataError, dataset_dir, default_root, list_datasets
from gankit.data.registry import KODAK_PORTRAIT, DatasetSpec, FileSpec, check_spec, get_spec

EXPECTED = {"mnist", "fashion_mnist", "cifar10", "horse2zebra", "apple2orange",
            "summer2winter_yosemite", "monet2photo", "maps", "kodak"}
KODAK_NAMES = [f"kodim{i:02d}.png" for i in range(1, 25)]


def test_registry_has_the_course_datasets():
    assert EXPECTED <= set(REGISTRY)
    assert list_datasets() == list(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_entry_is_well_formed(name):
    spec = REGISTRY[name]
    assert spec.name == name
    assert check_spec(spec) == []
    assert spec.files and spec.required and spec.layout and spec.description
    for f in spec.files:
        assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f.filename
        assert isinstance(f.size, int) and f.size > 0
        for url in f.urls:
            assert url.startswith("https://"), url
            assert url.endswith("/" + f.filename), url  # the on-disk name is the remote name
    assert spec.size == sum(f.size for f in spec.files)


def test_names_checksums_and_urls_are_unique():
    specs = list(REGISTRY.values())
    assert len({s.name for s in specs}) == len(specs)
    shas = [f.sha256 for s in specs for f in s.files]
    assert len(set(shas)) == len(shas), "two entries pin the same bytes: copy-paste error?"
    urls = [u for s in specs for f in s.files for u in f.urls]
    assert len(set(urls)) == len(urls)


def test_official_layouts():
    idx = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for name in ("mnist", "fashion_mnist"):
        spec = REGISTRY[name]
        assert tuple(sorted(f.filename for f in spec.files)) == tuple(sorted(idx))
        assert all(f.extract is None for f in spec.files)  # kept gzipped, like torchvision
        assert set(spec.required) == set(idx)
    assert REGISTRY["mnist"].files[0].url.startswith(
        "https://storage.googleapis.com/cvdf-datasets/mnist/")
    cifar = REGISTRY["cifar10"]
    assert [f.filename for f in cifar.files] == ["cifar-10-python.tar.gz"]
    assert cifar.files[0].extract == "tar.gz"
    assert set(cifar.required) == {f"cifar-10-batches-py/{b}" for b in
                                   ["data_batch_1", "data_batch_2", "data_batch_3",
                                    "data_batch_4", "data_batch_5", "test_batch",
                                    "batches.meta"]}
    for name in ("horse2zebra", "apple2orange", "summer2winter_yosemite", "monet2photo", "maps"):
        spec = REGISTRY[name]
        assert spec.files[0].extract == "zip"
        server = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"
        assert spec.files[0].url == f"{server}{name}.zip"
        splits = ("trainA", "trainB", "testA", "testB")
        assert set(spec.required) == {f"{name}/{s}" for s in splits}


def test_kodak_entry():
    spec = REGISTRY["kodak"]
    assert spec.layout == "kodak" and "Kodak" in spec.description and "768x512" in spec.description
    assert [f.filename for f in spec.files] == KODAK_NAMES
    assert list(spec.required) == KODAK_NAMES  # single PNGs: the downloads are the layout
    for f in spec.files:
        assert f.url == f"https://r0k.us/graphics/kodak/kodak/{f.filename}"
        assert f.extract is None and f.mirrors == () and not f.manual
        assert 490_000 < f.size < 830_000, f.filename  # lossless 768x512 RGB PNGs
    assert spec.homepage == "http://r0k.us/graphics/kodak/"
    assert "Eastman Kodak" in spec.license and "unrestricted" in spec.license
    assert set(KODAK_PORTRAIT) == {f"kodim{i:02d}.png" for i in (4, 9, 10, 17, 18, 19)}
    assert set(KODAK_PORTRAIT) < set(KODAK_NAMES)


def test_known_checksums_spot_check():
    # Guards against accidental edits of the pinned values (sources: tensorflow/datasets
    # url_checksums, keras datasets); a typo here would make every student's download fail.
    mnist = {f.filename: f for f in REGISTRY["mnist"].files}
    assert mnist["train-images-idx3-ubyte.gz"].size == 9912422
    assert mnist["train-images-idx3-ubyte.gz"].sha256.startswith("440fcabf73cc546f")
    assert REGISTRY["cifar10"].files[0].size == 170498071
    assert REGISTRY["cifar10"].files[0].sha256.endswith("0b5c001ce")
    assert REGISTRY["horse2zebra"].files[0].size == 116867962
    kodak = {f.filename: f for f in REGISTRY["kodak"].files}  # published r0k.us SHA-256 lists
    assert kodak["kodim01.png"].size == 736501
    assert kodak["kodim01.png"].sha256.startswith("a56e27cbf5f843c0")
    assert kodak["kodim13.png"].size == 822712
    assert kodak["kodim13.png"].sha256.startswith("bc34a3ce58dea09d")
    assert kodak["kodim24.png"].size == 706397
    assert kodak["kodim24.png"].sha256.endswith("6721b156d7cb96")
    assert REGISTRY["kodak"].size == 15394305


def test_registry_is_read_only_and_specs_frozen():
    with pytest.raises(TypeError):
        REGISTRY["x"] = REGISTRY["mnist"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        REGISTRY["mnist"].name = "other"  # type: ignore[misc]


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError) as err:
        get_spec("mnits")
    message = str(err.value)
    assert "mnits" in message
    for name in REGISTRY:
        assert name in message


def test_check_spec_flags_bad_entries():
    bad = DatasetSpec(name="bad", description="", layout="x", required=(),
                      files=(FileSpec("a.gz", "https://x/a.gz", "ABC", 0),))
    problems = "\n".join(check_spec(bad))
    assert "sha256" in problems and "size" in problems and "required" in problems


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("GANKIT_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "gankit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec says: ignore
    assert default_root() == tmp_path / "home" / ".cache" / "gankit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "gankit"
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "shared"))
    assert default_root() == tmp_path / "shared"
    assert dataset_dir("mnist") == tmp_path / "shared" / "mnist"
    assert dataset_dir("mnist", tmp_path / "arg") == tmp_path / "arg" / "mnist"


def test_import_is_light_and_side_effect_free(tmp_path):
    code = (
        "import sys, gankit.data as d\n"
        "heavy = [m for m in ('gankit.data.datasets', 'gankit.data.synthetic', 'skimage', "
        "'PIL') if m in sys.modules]\n"
        "print(heavy)\n"
        "assert callable(d.prepare) and 'gankit.data.datasets' in sys.modules\n"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "GANKIT_DATA": str(tmp_path / "c")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []  # no cache dir created, nothing written
