"""gankit.rd measures real files: closed-form PSNR, Pillow byte counts, codec file sizes, equal-bpp gains."""
from __future__ import annotations

import dataclasses
import io
import math

import matplotlib

matplotlib.use("Agg")  # headless, as on a grading server

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, features  # noqa: E402

from gankit import rd  # noqa: E402
from gankit.cli import main  # noqa: E402
from gankit.codec import HEADER_BYTES, Codec  # noqa: E402
from gankit.models.compression import CompressionConfig, FactorizedPriorCodec  # noqa: E402

needs_webp = pytest.mark.skipif(not features.check("webp"), reason="this Pillow was built without WebP")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tensors are small: one thread is faster, and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _crop(array: np.ndarray, top: int, left: int, height: int = 192, width: int = 192) -> torch.Tensor:
    """(H, W, 3) uint8 -> a (3, height, width) crop in [0, 1]."""
    patch = np.ascontiguousarray(array[top:top + height, left:left + width, :3])
    return torch.from_numpy(patch).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    """Three 192x192 crops of scikit-image photos (MS-SSIM needs both sides > 160 px)."""
    import skimage.data as skd

    return {"astronaut": _crop(skd.astronaut(), 40, 160), "coffee": _crop(skd.coffee(), 120, 200),
            "chelsea": _crop(skd.chelsea(), 60, 120)}


@pytest.fixture(scope="module")
def tiny_codec() -> Codec:
    torch.manual_seed(0)
    return Codec(FactorizedPriorCodec(8, 8), lmbda=0.01, name="tiny")


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8, rounded half up as gankit.codec.decompress_file writes it."""
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _psnr_numpy(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255 ** 2 / mse)


# --- metrics -------------------------------------------------------------------------------------
def test_psnr_of_a_constant_offset_is_the_closed_form():
    x = torch.full((3, 20, 30), 100 / 255)
    y = torch.full((3, 20, 30), 110 / 255)  # 10 levels apart everywhere: MSE = 100
    assert rd.psnr(x, y) == pytest.approx(10 * math.log10(255 ** 2 / 100), abs=1e-9)
    assert rd.psnr(x, x) == math.inf
    # A difference below half a level disappears when both are rounded to 8 bits, as in a saved file.
    assert rd.psnr(x, x + 0.3 / 255) == math.inf


def test_psnr_of_random_integer_offsets_is_the_mean_square_closed_form():
    generator = torch.Generator().manual_seed(1)
    levels = torch.randint(10, 246, (3, 40, 50), generator=generator).double()
    offsets = torch.randint(-3, 4, (3, 40, 50), generator=generator).double()
    expected = 10 * math.log10(255 ** 2 / float(torch.mean(offsets ** 2)))
    assert rd.psnr(levels / 255, (levels + offsets) / 255) == pytest.approx(expected, abs=1e-9)


def test_to_8bit_rounds_like_a_saved_png():
    image = torch.rand(3, 33, 17, generator=torch.Generator().manual_seed(2))
    image[0, 0, :4] = torch.tensor([-0.2, 1.3, 0.5 / 255, 254.5 / 255])  # clamped; half levels round up
    eight = rd.to_8bit(image.clamp(0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(eight, _to_uint8(image.clamp(0, 1)))
    np.testing.assert_array_equal(rd.to_8bit(image)[0, 0, :2].numpy(), [0, 255])


def test_ms_ssim_is_one_for_identical_images_and_nan_below_161_px(photos):
    x = photos["astronaut"]
    assert rd.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert 0 < rd.ms_ssim(x, noisy) < 0.999
    assert math.isnan(rd.ms_ssim(x[:, :160, :], x[:, :160, :]))
    assert math.isnan(rd.ms_ssim(x[:, :, :160], noisy[:, :, :160]))
    assert rd.ms_ssim(x[:, :161, :161], x[:, :161, :161]) == pytest.approx(1.0, abs=1e-6)


def test_metrics_reject_wrong_shapes(photos):
    x = photos["coffee"]
    with pytest.raises(rd.RDError, match="shape"):
        rd.psnr(x, x[:, :100])
    with pytest.raises(rd.RDError, match=r"\(3, H, W\)"):
        rd.psnr(x[0], x[0])


# --- single points -------------------------------------------------------------------------------
def test_jpeg_points_count_the_real_pillow_file(photos):
    image = photos["coffee"]
    H, W = image.shape[1:]
    points = []
    for quality in (10, 30, 60, 90):
        point = rd.pillow_point(image, "jpeg", quality)
        buffer = io.BytesIO()
        Image.fromarray(_to_uint8(image)).save(buffer, format="JPEG", quality=quality)  # Pillow's defaults
        assert point["bytes"] == len(buffer.getvalue())
        assert point["bpp"] == 8 * len(buffer.getvalue()) / (H * W)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        assert point["psnr"] == pytest.approx(_psnr_numpy(_to_uint8(image), decoded), abs=1e-9)
        assert 0 < point["ms_ssim"] < 1
        points.append(point)
    assert all(a["bpp"] < b["bpp"] for a, b in zip(points, points[1:])), points
    assert all(a["psnr"] < b["psnr"] for a, b in zip(points, points[1:])), points


@needs_webp
def test_webp_points_count_the_real_pillow_file(photos):
    image = photos["chelsea"]
    H, W = image.shape[1:]
    low, high = rd.pillow_point(image, "webp", 20), rd.pillow_point(image, "webp", 80)
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(image)).save(buffer, format="WEBP", quality=80, method=6)
    assert high["bytes"] == len(buffer.getvalue())
    assert high["bpp"] == 8 * len(buffer.getvalue()) / (H * W)
    assert low["bpp"] < high["bpp"] and low["psnr"] < high["psnr"]


def test_unknown_format_and_quality_are_errors(photos):
    with pytest.raises(rd.RDError, match="'jpeg' or 'webp'"):
        rd.pillow_point(photos["coffee"], "png", 50)
    with pytest.raises(rd.RDError, match="0..100"):
        rd.pillow_point(photos["coffee"], "jpeg", 101)


def test_codec_point_counts_the_whole_file(tiny_codec, photos):
    image = photos["astronaut"][:, :170, :180]  # not a multiple of 16: the codec pads, the file keeps H, W
    data = tiny_codec.compress(image)
    point = rd.codec_point(tiny_codec, image)
    assert point["bytes"] == len(data)
    assert point["bpp"] == 8 * len(data) / (170 * 180)
    assert point["bpp_payload"] == 8 * (len(data) - HEADER_BYTES) / (170 * 180)
    assert point["bpp_estimate"] == pytest.approx(tiny_codec.estimate_bits(image) / (170 * 180))
    assert point["psnr"] == pytest.approx(rd.psnr(image, tiny_codec.decompress(data)), abs=1e-12)
    assert math.isfinite(point["ms_ssim"])


# --- sweeps and curves ---------------------------------------------------------------------------
def test_evaluate_rows_and_per_image_averages(tiny_codec, photos):
    webp = (30,) if features.check("webp") else ()
    rows = rd.evaluate(photos, [tiny_codec], jpeg_qualities=(50, 10), webp_qualities=webp)
    assert len(rows) == 3 * (2 + len(webp) + 1)
    assert all(set(row) == set(rd.ROW_FIELDS) for row in rows)
    codec_rows = [r for r in rows if r["method"] == "tiny"]
    assert {r["setting"] for r in codec_rows} == {0.01}
    assert all(r["bpp"] == 8 * r["bytes"] / (r["height"] * r["width"]) for r in rows)
    assert all(math.isnan(r["bpp_payload"]) for r in rows if r["method"] == "jpeg")

    curves = rd.average_curves(rows)
    assert [c["method"] for c in curves] == ["jpeg", "jpeg"] + ["webp"] * len(webp) + ["tiny"]
    assert [c["setting"] for c in curves[:2]] == [10, 50], "sorted by bpp: quality 10 first"
    for curve in curves:
        mine = [r for r in rows if r["method"] == curve["method"] and r["setting"] == curve["setting"]]
        assert curve["images"] == 3 == len(mine)
        for key in ("bpp", "psnr", "ms_ssim"):  # the mean of per-image values, as CompressAI reports Kodak
            assert curve[key] == pytest.approx((mine[0][key] + mine[1][key] + mine[2][key]) / 3, rel=1e-12)

    with pytest.raises(rd.RDError, match="lacks images"):
        rd.average_curves(rows[1:])
    with pytest.raises(rd.RDError, match="more than once"):
        rd.average_curves(rows + rows[:1])


def test_evaluate_refuses_codecs_that_would_be_averaged_together(tiny_codec, photos):
    with pytest.raises(rd.RDError, match="both named 'tiny'"):
        rd.evaluate({"c": photos["coffee"]}, [tiny_codec, tiny_codec], jpeg_qualities=(), webp_qualities=())


def _curves(method: str, bpps, psnr_of) -> list[dict]:
    return [{"method": method, "setting": i, "bpp": b, "psnr": psnr_of(b), "ms_ssim": math.nan}
            for i, b in enumerate(bpps)]


def test_psnr_gain_of_a_constant_offset_is_that_offset():
    jpeg = _curves("jpeg", [0.1, 0.3, 0.45, 0.7], lambda b: 20 + 10 * b)
    ours = _curves("ours", [0.2, 0.38, 0.6], lambda b: 21.5 + 10 * b)  # other knots, same line + 1.5 dB
    assert rd.psnr_gain(jpeg + ours, "ours") == pytest.approx(1.5, abs=1e-9)
    assert rd.psnr_gain(jpeg + ours, "jpeg", baseline="ours") == pytest.approx(-1.5, abs=1e-9)


def test_psnr_gain_averages_over_the_overlap_only():
    jpeg = _curves("jpeg", [0.1, 0.3, 0.45, 0.7], lambda b: 20 + 10 * b)
    steeper = _curves("ours", [0.2, 0.6], lambda b: 21 + 14 * b)  # difference 1 + 4 bpp
    assert rd.psnr_gain(jpeg + steeper, "ours") == pytest.approx(1 + 4 * 0.4, abs=1e-9)  # mean over 0.3-0.5
    partial = _curves("ours", [0.35, 0.9], lambda b: 21 + 14 * b)
    result = rd.compare_at_equal_bpp(jpeg + partial, "ours")
    assert (result["low"], result["high"]) == (0.35, 0.5)
    assert result["gain"] == pytest.approx(1 + 4 * (0.35 + 0.5) / 2, abs=1e-9)
    single = _curves("ours", [0.4], lambda b: 21 + 14 * b)
    assert rd.psnr_gain(jpeg + single, "ours") == pytest.approx(1 + 4 * 0.4, abs=1e-9)


def test_psnr_gain_is_nan_with_a_reason_without_overlap():
    jpeg = _curves("jpeg", [0.1, 0.3, 0.45, 0.7], lambda b: 20 + 10 * b)
    high = _curves("ours", [0.6, 0.9], lambda b: 30 + b)
    with pytest.warns(RuntimeWarning, match="no common bpp"):
        assert math.isnan(rd.psnr_gain(jpeg + high, "ours"))
    with pytest.raises(rd.RDError, match="no curve named 'nope'"):
        rd.psnr_gain(jpeg, "nope")
    with pytest.raises(rd.RDError, match="same bpp"):
        rd.psnr_gain(jpeg + _curves("ours", [0.4, 0.4], lambda b: 30), "ours")


# --- files and plot ------------------------------------------------------------------------------
def test_csv_round_trip(tmp_path):
    rows = [{"method": "jpeg", "setting": 10, "image": "12", "bytes": 1234, "bpp": 1 / 3, "psnr": math.inf,
             "ms_ssim": math.nan},
            {"method": "hyperprior lambda=0.013", "setting": 0.013, "image": "a, b.png", "bytes": 99,
             "bpp": 0.1, "psnr": 31.25, "ms_ssim": 0.9712345678901234}]
    path = rd.write_csv(rows, tmp_path / "out" / "rd.csv")
    assert [p.name for p in path.parent.iterdir()] == ["rd.csv"], "no temporary file left behind"
    back = rd.read_csv(path)
    assert len(back) == 2
    for written, read in zip(rows, back):
        assert set(read) == set(written)
        for key, value in written.items():
            if isinstance(value, str):
                assert read[key] == value
            elif math.isnan(value):
                assert math.isnan(read[key])
            else:
                assert read[key] == value and isinstance(read[key], float)
    (tmp_path / "bad.csv").write_text("method,bpp\njpeg,lots\n")
    with pytest.raises(rd.RDError, match="line 2"):
        rd.read_csv(tmp_path / "bad.csv")


def test_plot_rd_draws_two_panels_with_one_line_per_method():
    curves = (_curves("jpeg", [0.2, 0.4, 0.8], lambda b: 25 + 8 * b) + _curves("webp", [0.2, 0.5], lambda b: 26 + 8 * b)
              + _curves("ours", [0.25, 0.45], lambda b: 28 + 8 * b))
    fig = rd.plot_rd(curves, title="test")
    assert len(fig.axes) == 2
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert len(labels) == 3 and "ours" in labels and any(lbl.startswith("JPEG") for lbl in labels)
    ours = [line for line in fig.axes[0].get_lines() if line.get_label() == "ours"][0]
    assert list(ours.get_xdata()) == [0.25, 0.45] and list(ours.get_ydata()) == [28 + 8 * 0.25, 28 + 8 * 0.45]

    fig = rd.plot_rd(curves, reference=True)
    ax_psnr, ax_ssim = fig.axes
    assert len(ax_psnr.get_lines()) == 4 and len(ax_ssim.get_lines()) == 3
    (ref,) = [line for line in ax_psnr.get_lines() if "CompressAI" in line.get_label()]
    assert list(ref.get_xdata()) == [0.288, 0.440] and list(ref.get_ydata()) == [29.62, 31.28]


# --- images and command line ---------------------------------------------------------------------
def test_load_images_from_a_folder_converts_8bit_modes_and_rejects_16bit(tmp_path, capsys):
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([rgb, np.full((5, 7), 9, np.uint8)])).save(tmp_path / "b.png")  # RGBA
    (tmp_path / "notes.txt").write_text("not an image")
    images = rd.load_images(tmp_path)
    assert list(images) == ["a.png", "b.png"]
    np.testing.assert_array_equal(_to_uint8(images["a.png"]), rgb)
    np.testing.assert_array_equal(_to_uint8(images["b.png"]), rgb)
    assert "b.png is mode 'RGBA'; converted to RGB" in capsys.readouterr().err

    Image.fromarray(np.zeros((5, 7), np.uint16)).save(tmp_path / "deep.png")  # mode I;16
    with pytest.raises(rd.RDError, match="deep.png.*8-bit"):
        rd.load_images(tmp_path)
    with pytest.raises(rd.RDError, match="no such folder"):
        rd.load_images(tmp_path / "missing")


def test_load_images_shipped_leaves_out_decoded_jpegs():
    photos = pytest.importorskip("gankit.data.photos")
    images = rd.load_images("shipped")
    assert "astronaut" in images and not set(images) & set(photos.JPEG_DERIVED)
    assert all(x.ndim == 3 and x.shape[0] == 3 and min(x.shape[1:]) > 160 for x in images.values())


def _write_checkpoint(path, lmbda: float = 0.0067) -> None:
    """A checkpoint as gankit's Trainer writes one: models.codec state and the config as a dict."""
    torch.manual_seed(1)
    config = CompressionConfig(model="factorized", N=8, M=8, lmbda=lmbda)
    model = FactorizedPriorCodec(config.N, config.M)
    torch.save({"format": 1, "step": 0, "models": {"codec": model.state_dict()},
                "config": dataclasses.asdict(config)}, path)


def test_cli_writes_rows_curves_and_plot(tmp_path, photos, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(_to_uint8(photos[name])).save(folder / f"{name}.png")
    checkpoint = tmp_path / "last.pt"
    _write_checkpoint(checkpoint)
    out = tmp_path / "rd"
    webp = "30" if features.check("webp") else ""
    code = main(["rd", "--checkpoint", str(checkpoint), "--images", str(folder), "--out", str(out),
                 "--jpeg-qualities", "10,40", "--webp-qualities", webp])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["rd.csv", "rd.png", "rd_curves.csv"]
    rows = rd.read_csv(out / "rd.csv")
    assert len(rows) == 2 * (2 + len(webp.split(",")) * bool(webp) + 1)
    assert {r["method"] for r in rows} >= {"jpeg", "factorized lambda=0.0067"}
    assert {r["image"] for r in rows} == {"astronaut.png", "coffee.png"}
    curves = rd.read_csv(out / "rd_curves.csv")
    expected = rd.average_curves(rows)
    assert [(c["method"], c["setting"]) for c in curves] == [(c["method"], c["setting"]) for c in expected]
    assert [c["bpp"] for c in curves] == [c["bpp"] for c in expected]
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "PSNR gain over JPEG" in printed and "factorized lambda=0.0067" in printed


def test_cli_keeps_checkpoints_with_the_same_name_apart(tmp_path):
    for run in ("rd_run", "gan_run"):
        (tmp_path / run).mkdir()
        _write_checkpoint(tmp_path / run / "last.pt")
    paths = [str(tmp_path / run / "last.pt") for run in ("rd_run", "gan_run")]
    codecs = rd._load_codecs(paths, None)
    assert [c.name for c in codecs] == [f"factorized lambda=0.0067 [{p}]" for p in paths]
    assert [c.name for c in rd._load_codecs(paths, "sweep")] == ["sweep", "sweep"]


def test_cli_missing_checkpoint_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "runs" / "nope.pt"
    code = main(["rd", "--checkpoint", str(missing), "--images", str(tmp_path), "--out", str(tmp_path / "rd")])
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "rd").exists()


def test_cli_unreadable_checkpoint_exits_2(tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["rd", "--checkpoint", str(broken), "--out", str(tmp_path / "rd")]) == 2
    assert "broken.pt: cannot be read as a torch checkpoint" in capsys.readouterr().err
