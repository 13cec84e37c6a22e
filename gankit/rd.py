"""Rate-distortion evaluation: learned codecs against JPEG and WebP, measured on real files.

    gankit rd --checkpoint runs/compression/checkpoints/last.pt --images kodak --out runs/rd

Every rate is a real byte count: a codec point is ``len(codec.compress(image))`` (the whole
``.gkc`` file, header included), a JPEG or WebP point is the size of the file Pillow writes in
memory; bpp = 8 * bytes / (H * W) of the original image. Every distortion is measured the way a
saved file would be seen: both images are rounded to 8 bits first (``floor(255 x + 0.5)``, as
``gankit decompress`` writes PNGs), then

* PSNR = 10 log10(255^2 / MSE) over all pixels and the three RGB channels (inf if identical);
* MS-SSIM = ``pytorch_msssim.ms_ssim`` on the RGB images in [0, 1] (5 scales, 11x11 Gaussian
  window); it needs both sides > 160 px, smaller images get NaN.

Curves are averaged per image as CompressAI reports Kodak: for each (method, setting) the mean
bpp, mean PSNR and mean MS-SSIM of the images (not the PSNR of the mean MSE). ``psnr_gain``
compares two averaged curves at equal bpp by linear interpolation. The course goal is a codec
>= 1 dB above JPEG between 0.3 and 0.5 bpp on Kodak.

Baselines: JPEG is Pillow's libjpeg with its default 4:2:0 chroma subsampling and default Huffman
tables (``optimize=False``, baseline not progressive): what ``Image.save(f, "JPEG", quality=q)`` writes.
WebP is lossy libwebp at ``method=6`` (its slowest, best-compressing effort), so the baseline is as
strong as libwebp gets.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

JPEG_QUALITIES = (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_METHOD = 6
MS_SSIM_MIN_SIDE = 161            # pytorch_msssim's 5 scales need both sides > (11 - 1) * 2^4 = 160
GOAL_RANGE = (0.3, 0.5)           # bpp range of the course goal
# CompressAI's bmshj2018-factorized (MSE, qualities 3 and 4) on Kodak, results/image/kodak/*.json
REFERENCE_FACTORIZED_KODAK = ((0.288, 29.62), (0.440, 31.28))
BASELINES = ("jpeg", "webp")
ROW_FIELDS = ("method", "setting", "image", "height", "width", "bytes", "bpp", "psnr", "ms_ssim",
              "bpp_payload", "bpp_estimate")
CURVE_FIELDS = ("method", "setting", "images", "bpp", "psnr", "ms_ssim", "bpp_payload", "bpp_estimate")
TEXT_FIELDS = ("method", "image")  # every other CSV column is read back as a float
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
_EIGHT_BIT_MODES = ("RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV")


class RDError(ValueError):
    """A problem with the images or settings of an evaluation; the message names it and says what to do."""


# --- metrics -------------------------------------------------------------------------------------
def _check_image(image: torch.Tensor, what: str) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise RDError(f"{what}: expected an RGB image tensor of shape (3, H, W) in [0, 1], got {shape}")


def to_8bit(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) float in [0, 1] -> (3, H, W) float64 holding the integers 0..255 a saved file holds.

    Values are clamped to [0, 1] and rounded half up, ``floor(255 x + 0.5)`` in float32, exactly as
    :func:`gankit.codec.decompress_file` writes an image (so half levels land on the same side).
    """
    return torch.floor(image.detach().cpu().float().clamp(0, 1) * 255 + 0.5).double()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two images (3, H, W) in [0, 1], both rounded to 8 bits first.

    ``10 log10(255^2 / MSE)`` with MSE over every pixel and channel of the 8-bit values; ``inf``
    when the 8-bit images are identical.
    """
    _check_image(x, "psnr: x")
    _check_image(y, "psnr: y")
    if x.shape != y.shape:
        raise RDError(f"psnr: images differ in shape, {tuple(x.shape)} and {tuple(y.shape)}")
    mse = float(torch.mean((to_8bit(x) - to_8bit(y)) ** 2))
    if mse == 0:
        return math.inf
    return 10 * math.log10(255.0 ** 2 / mse)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """MS-SSIM in [0, 1] of two images (3, H, W) in [0, 1], both rounded to 8 bits first.

    ``pytorch_msssim.ms_ssim(data_range=1.0)`` with its defaults (5 scales, 11x11 Gaussian window,
    sigma 1.5), averaged over the RGB channels. The 5 scales need both sides > 160 px: for a
    smaller image this returns ``float('nan')`` (and CSV rows carry NaN) instead of an error.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check_image(x, "ms_ssim: x")
    _check_image(y, "ms_ssim: y")
    if x.shape != y.shape:
        raise RDError(f"ms_ssim: images differ in shape, {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[1:]) < MS_SSIM_MIN_SIDE:
        return math.nan
    with torch.no_grad():
        value = _ms_ssim(to_8bit(x)[None] / 255, to_8bit(y)[None] / 255, data_range=1.0)
    return float(value)


# --- single points -------------------------------------------------------------------------------
def _to_pil(image: torch.Tensor):
    """(3, H, W) in [0, 1] -> an 8-bit RGB PIL image."""
    from PIL import Image

    array = to_8bit(image).to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def encode_pillow(image: torch.Tensor, fmt: str, quality: int) -> bytes:
    """The bytes of a JPEG or WebP file of an image (3, H, W) in [0, 1], written in memory.

    ``fmt="jpeg"``: Pillow's defaults made explicit, 4:2:0 subsampling, ``optimize=False``,
    baseline (not progressive). ``fmt="webp"``: lossy, ``method=6``. ``quality`` in 0..100.
    """
    _check_image(image, f"{fmt} quality {quality}")
    if not 0 <= int(quality) <= 100:
        raise RDError(f"{fmt} quality must be in 0..100, got {quality}")
    buffer = io.BytesIO()
    if fmt == "jpeg":
        _to_pil(image).save(buffer, format="JPEG", quality=int(quality), subsampling=2, optimize=False,
                            progressive=False)
    elif fmt == "webp":
        from PIL import features

        if not features.check("webp"):
            raise RDError("this Pillow was built without WebP; leave WebP out (webp_qualities=(), "
                          "or --webp-qualities '') or install a Pillow wheel, which includes it")
        _to_pil(image).save(buffer, format="WEBP", quality=int(quality), method=WEBP_METHOD, lossless=False)
    else:
        raise RDError(f"fmt must be 'jpeg' or 'webp', got {fmt!r}")
    return buffer.getvalue()


def decode_pillow(data: bytes) -> torch.Tensor:
    """Decode JPEG/WebP bytes into an image (3, H, W) float in [0, 1]."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as decoded:
        array = np.asarray(decoded.convert("RGB"))  # (H, W, 3) uint8
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def pillow_point(image: torch.Tensor, fmt: str, quality: int) -> dict[str, float]:
    """Encode an image (3, H, W) in [0, 1] with JPEG or WebP at ``quality`` and measure it.

    Returns ``bytes`` (the real file size), ``bpp`` = 8 * bytes / (H * W), and ``psnr`` and
    ``ms_ssim`` of the decoded file against the image (see :func:`psnr`, :func:`ms_ssim`).
    """
    data = encode_pillow(image, fmt, quality)
    decoded = decode_pillow(data)
    H, W = image.shape[1:]
    if decoded.shape != image.shape:
        raise RDError(f"{fmt} quality {quality}: decoded shape {tuple(decoded.shape)} differs from the "
                      f"image's {tuple(image.shape)}; is Pillow's {fmt} plugin broken?")
    return {"bytes": len(data), "bpp": 8 * len(data) / (H * W), "psnr": psnr(image, decoded),
            "ms_ssim": ms_ssim(image, decoded)}


def codec_point(codec, image: torch.Tensor) -> dict[str, float]:
    """Compress an image (3, H, W) in [0, 1] with a :class:`gankit.codec.Codec`, decode it, measure it.

    ``bytes`` and ``bpp``: the whole file, ``len(codec.compress(image))``, header included;
    ``bpp_payload``: without the ``HEADER_BYTES``-byte header; ``bpp_estimate``: the model's own
    ``-sum log2 p`` (``codec.estimate_bits``), which the real file should match to within a few
    percent on large images. ``psnr`` and ``ms_ssim`` of the decoded file against the image.
    """
    from gankit.codec import HEADER_BYTES

    _check_image(image, codec.name)
    H, W = image.shape[1:]
    data = codec.compress(image)
    decoded = codec.decompress(data, source=f"{codec.name} round trip")
    if decoded.shape != image.shape:
        raise RDError(f"{codec.name}: decoding gave shape {tuple(decoded.shape)} for an image of shape "
                      f"{tuple(image.shape)}; the codec's round trip is broken (gankit/codec.py)")
    return {"bytes": len(data), "bpp": 8 * len(data) / (H * W),
            "bpp_payload": 8 * (len(data) - HEADER_BYTES) / (H * W),
            "bpp_estimate": codec.estimate_bits(image) / (H * W),
            "psnr": psnr(image, decoded), "ms_ssim": ms_ssim(image, decoded)}


# --- sweeps and curves ---------------------------------------------------------------------------
def evaluate(images: Mapping[str, torch.Tensor], codecs: Sequence = (),
             jpeg_qualities: Iterable[int] = JPEG_QUALITIES, webp_qualities: Iterable[int] = WEBP_QUALITIES,
             progress: bool = False) -> list[dict[str, Any]]:
    """One row per (method, setting, image): every image through every JPEG/WebP quality and codec.

    Parameters
    ----------
    images : {name: (3, H, W) float tensor in [0, 1]}
    codecs : :class:`gankit.codec.Codec` objects; each is a method named ``codec.name`` with
        setting ``codec.lmbda``. Two codecs with the same (name, lambda) are an error.
    jpeg_qualities, webp_qualities : Pillow qualities (0..100); empty leaves that baseline out.
    progress : show a tqdm bar on stderr.

    Returns
    -------
    list of dict with the keys of ``ROW_FIELDS``: method ("jpeg", "webp" or the codec's name),
    setting (quality or lambda), image, height, width, bytes, bpp, psnr, ms_ssim, and for codecs
    bpp_payload and bpp_estimate (NaN for the baselines).
    """
    from tqdm.auto import tqdm

    if not images:
        raise RDError("evaluate: no images given")
    for name, image in images.items():
        _check_image(image, f"image {name!r}")
    seen = set()
    for codec in codecs:
        if codec.name in BASELINES:
            raise RDError(f"a codec may not be named {codec.name!r}: that is a baseline's name")
        if (codec.name, codec.lmbda) in seen:
            raise RDError(f"two codecs are both named {codec.name!r} with lambda {codec.lmbda:g}; their points "
                          "would be averaged together. Give each a different name (--name) or checkpoint")
        seen.add((codec.name, codec.lmbda))
    jobs = [("jpeg", int(q), None) for q in jpeg_qualities] + [("webp", int(q), None) for q in webp_qualities]
    jobs += [(codec.name, codec.lmbda, codec) for codec in codecs]
    rows = []
    bar = tqdm(total=len(jobs) * len(images), desc="rd", unit="point", disable=not progress)
    for method, setting, codec in jobs:
        for name, image in images.items():
            if codec is None:
                point = pillow_point(image, method, setting)
                point["bpp_payload"], point["bpp_estimate"] = math.nan, math.nan
            else:
                point = codec_point(codec, image)
            row = {"method": method, "setting": setting, "image": name,
                   "height": int(image.shape[1]), "width": int(image.shape[2])}
            row.update({key: point[key] for key in ROW_FIELDS if key in point})
            rows.append(row)
            bar.update(1)
    bar.close()
    return rows


def average_curves(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, setting): the mean over images of bpp, PSNR, MS-SSIM (and of bpp_payload, bpp_estimate).

    Every (method, setting) must hold the same set of images, each once; means are plain means,
    so a NaN (MS-SSIM of a small image) or inf (a lossless point) carries into the average.
    Returns dicts with the keys of ``CURVE_FIELDS`` (``images``: how many were averaged), methods
    in order of first appearance, each method's points sorted by bpp.
    """
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], float(row["setting"])), []).append(row)
    if not groups:
        raise RDError("average_curves: no rows")
    all_images = sorted({row["image"] for group in groups.values() for row in group})
    for (method, setting), group in groups.items():
        names = [row["image"] for row in group]
        if len(set(names)) != len(names):
            raise RDError(f"{method} at setting {setting:g} has an image more than once; rows from two runs "
                          "with the same name were mixed")
        if sorted(names) != all_images:
            missing = sorted(set(all_images) - set(names))
            raise RDError(f"{method} at setting {setting:g} lacks images {missing}; averages over different "
                          "images cannot be compared. Evaluate every method on the same images")
    curves = []
    for method in dict.fromkeys(method for method, _ in groups):
        points = []
        for (m, setting), group in groups.items():
            if m != method:
                continue
            point = {"method": method, "setting": setting, "images": len(group)}
            for key in CURVE_FIELDS[3:]:
                point[key] = float(np.mean([float(row.get(key, math.nan)) for row in group]))
            points.append(point)
        curves += sorted(points, key=lambda p: p["bpp"])
    return curves


def _curve(curves: Sequence[Mapping[str, Any]], method: str) -> tuple[np.ndarray, np.ndarray]:
    """(bpp, psnr) arrays of one method's averaged curve, sorted by bpp."""
    points = sorted((float(c["bpp"]), float(c["psnr"])) for c in curves if c["method"] == method)
    if not points:
        methods = list(dict.fromkeys(c["method"] for c in curves))
        raise RDError(f"no curve named {method!r}; the curves hold {methods}")
    bpp, value = np.array(points).T
    if np.any(np.diff(bpp) <= 0):
        raise RDError(f"{method}: two points have the same bpp ({bpp.tolist()}); PSNR is not a function of bpp")
    return bpp, value


def compare_at_equal_bpp(curves: Sequence[Mapping[str, Any]], method: str, baseline: str = "jpeg",
                         bpp_range: tuple[float, float] = GOAL_RANGE, points: int = 101) -> dict[str, Any]:
    """:func:`psnr_gain` with its workings: ``gain`` (dB), ``low``/``high`` (bpp actually compared), ``reason``.

    ``reason`` is "" when a gain was computed, else why it is NaN.
    """
    bpp_m, psnr_m = _curve(curves, method)
    bpp_b, psnr_b = _curve(curves, baseline)
    low = max(float(bpp_range[0]), bpp_m[0], bpp_b[0])
    high = min(float(bpp_range[1]), bpp_m[-1], bpp_b[-1])
    if low > high:
        reason = (f"no common bpp: {method} spans {bpp_m[0]:.3f}-{bpp_m[-1]:.3f} bpp, {baseline} "
                  f"{bpp_b[0]:.3f}-{bpp_b[-1]:.3f}, the range is {bpp_range[0]:g}-{bpp_range[1]:g}")
        return {"gain": math.nan, "low": math.nan, "high": math.nan, "reason": reason}
    if not (np.all(np.isfinite(psnr_m)) and np.all(np.isfinite(psnr_b))):
        return {"gain": math.nan, "low": low, "high": high, "reason": "a curve has a non-finite PSNR"}
    grid = np.linspace(low, high, points)  # one point if low == high (a single-point curve)
    gain = float(np.mean(np.interp(grid, bpp_m, psnr_m) - np.interp(grid, bpp_b, psnr_b)))
    return {"gain": gain, "low": low, "high": high, "reason": ""}


def psnr_gain(curves: Sequence[Mapping[str, Any]], method: str, baseline: str = "jpeg",
              bpp_range: tuple[float, float] = GOAL_RANGE) -> float:
    """Mean PSNR difference in dB, ``method`` minus ``baseline``, at equal bpp over ``bpp_range``.

    Each averaged curve (from :func:`average_curves`) is linearly interpolated in bpp on 101 evenly
    spaced points of the overlap of both curves' bpp spans and ``bpp_range``; the gain is the mean
    difference there. A one-point curve inside the range is compared at its own bpp. Returns NaN,
    with a ``RuntimeWarning`` saying why, when there is no overlap. Unknown method: :class:`RDError`.
    """
    import warnings

    result = compare_at_equal_bpp(curves, method, baseline, bpp_range)
    if result["reason"]:
        warnings.warn(f"psnr_gain({method!r} over {baseline!r}) is NaN: {result['reason']}", RuntimeWarning,
                      stacklevel=2)
    return result["gain"]


# --- files ---------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))  # shortest text that reads back as the same float; 'nan', 'inf'


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows (dicts) to a CSV atomically; columns: every key, in order of first appearance.

    Floats are written with ``repr`` so :func:`read_csv` gives back the same numbers (NaN as
    ``nan``, infinity as ``inf``); a key a row lacks is an empty cell.
    """
    from gankit.io import atomic_write

    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[key]) if key in row else "" for key in columns])
    return Path(path)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by :func:`write_csv`: ``method`` and ``image`` as text, every other column a float.

    Empty cells read as NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise RDError(f"{path}: no such file; write it with `gankit rd ... --out DIR` (DIR/rd.csv)")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for number, row in enumerate(rows, start=2):
        parsed = {}
        for key, text in row.items():
            if key in TEXT_FIELDS:
                parsed[key] = text
                continue
            try:
                parsed[key] = float(text) if text not in ("", None) else math.nan
            except ValueError:
                raise RDError(f"{path}, line {number}: column {key!r} holds {text!r}, not a number") from None
        out.append(parsed)
    return out


# --- plot ----------------------------------------------------------------------------------------
_BASELINE_STYLE = {
    "jpeg": {"color": "0.3", "linestyle": "--", "marker": "s", "markersize": 4, "linewidth": 1.2,
             "label": "JPEG (Pillow, 4:2:0)"},
    "webp": {"color": "0.6", "linestyle": ":", "marker": "^", "markersize": 4, "linewidth": 1.5,
             "label": f"WebP (Pillow, method {WEBP_METHOD})"},
}


def plot_rd(curves: Sequence[Mapping[str, Any]], title: str | None = None, reference: bool = False,
            max_bpp: float | None = None, target_range: tuple[float, float] | None = GOAL_RANGE):
    """Two panels, bpp vs PSNR and bpp vs MS-SSIM, one line with markers per method.

    Parameters
    ----------
    curves : output of :func:`average_curves` (or :func:`read_csv` of ``rd_curves.csv``).
    title : figure title.
    reference : also mark CompressAI's factorized model on Kodak (29.62 dB at 0.288 bpp, 31.28 dB at
        0.440 bpp) on the PSNR panel; only meaningful when the curves are Kodak's.
    max_bpp : right end of the bpp axis; None: the learned codecs' largest bpp plus 10 % (at least
        1 bpp), or everything when there are only baselines. ``math.inf`` shows everything.
    target_range : bpp band shaded on both panels (the course goal); None for none.

    Returns
    -------
    matplotlib.figure.Figure (JPEG and WebP grey and dashed/dotted, learned codecs in colour).
    """
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(c["method"] for c in curves))
    if not methods:
        raise RDError("plot_rd: no curves to plot")
    fig, (ax_psnr, ax_ssim) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    colour = 0
    for method in methods:
        points = sorted((c for c in curves if c["method"] == method), key=lambda c: float(c["bpp"]))
        bpp = [float(c["bpp"]) for c in points]
        if method in _BASELINE_STYLE:
            style = dict(_BASELINE_STYLE[method])
        else:
            style = {"color": f"C{colour}", "linestyle": "-", "marker": "o", "markersize": 5, "linewidth": 2,
                     "label": method}
            colour += 1
        ax_psnr.plot(bpp, [float(c["psnr"]) for c in points], **style)
        ax_ssim.plot(bpp, [float(c["ms_ssim"]) for c in points], **style)
    if reference:
        ref_bpp, ref_psnr = zip(*REFERENCE_FACTORIZED_KODAK)
        ax_psnr.plot(ref_bpp, ref_psnr, linestyle="none", marker="*", markersize=12, color="black",
                     label="CompressAI factorized, Kodak")

    learned = [float(c["bpp"]) for c in curves if c["method"] not in BASELINES and math.isfinite(float(c["bpp"]))]
    if max_bpp is None and learned:
        max_bpp = max(1.0, 1.1 * max(learned))
    for ax in (ax_psnr, ax_ssim):
        if target_range is not None:
            ax.axvspan(*target_range, color="tab:green", alpha=0.08, linewidth=0,
                       label=f"{target_range[0]:g}-{target_range[1]:g} bpp" if ax is ax_psnr else None)
        if max_bpp is not None and math.isfinite(max_bpp):
            _zoom(ax, max_bpp)
        ax.set_xlabel("bits per pixel (whole file)")
        ax.grid(alpha=0.3)
    ax_psnr.set_ylabel("PSNR (dB, RGB, 8-bit)")
    ax_ssim.set_ylabel("MS-SSIM (RGB)")
    ax_psnr.legend(fontsize="small")
    if not any(math.isfinite(float(c["ms_ssim"])) for c in curves):
        ax_ssim.text(0.5, 0.5, "MS-SSIM undefined:\nimages need both sides > 160 px", transform=ax_ssim.transAxes,
                     ha="center", va="center", color="0.4")
    if title:
        fig.suptitle(title)
    return fig


def _zoom(ax, max_bpp: float) -> None:
    """Show bpp in [0, max_bpp] and fit the y axis to the points in view."""
    ax.set_xlim(0, max_bpp)
    values = []
    for line in ax.get_lines():
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        values += y[(x <= max_bpp) & np.isfinite(y)].tolist()
    if values:
        low, high = min(values), max(values)
        margin = 0.05 * (high - low) if high > low else 0.01 * max(abs(high), 1.0)
        ax.set_ylim(low - margin, high + margin)


# --- images --------------------------------------------------------------------------------------
def _read_image(path: Path) -> torch.Tensor:
    """An image file as (3, H, W) in [0, 1]; 8-bit non-RGB modes are converted with a note on stderr."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ("RGB",) + _EIGHT_BIT_MODES:
                raise RDError(f"{path}: image mode {mode!r} (16-bit or float) cannot be measured as an 8-bit "
                              "image; save an 8-bit RGB copy (e.g. PNG) and evaluate that")
            if mode != "RGB":
                note = " (alpha dropped, not composited)" if "A" in mode or mode == "RGBa" else ""
                print(f"gankit rd: note: {path} is mode {mode!r}; converted to RGB{note}", file=sys.stderr)
            array = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
    except (UnidentifiedImageError, OSError) as err:
        raise RDError(f"{path}: not an image Pillow can read ({err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def load_images(source: str | Path, data_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Images to evaluate on, as {name: (3, H, W) float tensor in [0, 1]}, names sorted.

    ``source``:

    * ``"shipped"``: the lossless photos shipped with scikit-image (``gankit.data.photos.shipped_photos``
      less ``JPEG_DERIVED``: a decoded JPEG re-encoded with JPEG flatters the JPEG baseline);
    * ``"kodak"``: the 24 Kodak images, ``gankit.data.prepare("kodak", data_dir)`` (downloads once);
    * a folder: every file in it (not in sub-folders) with an image suffix, keyed by file name.
      RGB images are taken as they are; other 8-bit modes (RGBA, grey, palette, CMYK) are converted
      with Pillow's ``.convert("RGB")`` (alpha is dropped) and a note is printed; 16-bit and float
      images are an error;
    * one image file.
    """
    if str(source) == "shipped":
        from gankit.data.photos import JPEG_DERIVED, shipped_photos

        photos = {name: array for name, array in shipped_photos().items() if name not in JPEG_DERIVED}
        return {name: torch.from_numpy(np.ascontiguousarray(photos[name])).permute(2, 0, 1).float() / 255
                for name in sorted(photos)}
    if str(source) == "kodak":
        from gankit.data import prepare

        source = prepare("kodak", data_dir)
    path = Path(source)
    if path.is_file():
        return {path.name: _read_image(path)}
    if not path.is_dir():
        raise RDError(f"{path}: no such folder or image; pass --images shipped, --images kodak or a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RDError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return {p.name: _read_image(p) for p in files}


# --- command line --------------------------------------------------------------------------------
def _qualities(text: str) -> tuple[int, ...]:
    """'10,20,30' -> (10, 20, 30); '' -> () (leave that baseline out)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 10,20,30, got {text!r}") from None
    if any(not 0 <= q <= 100 for q in values):
        raise argparse.ArgumentTypeError(f"qualities must be in 0..100, got {text!r}")
    return values


def add_rd_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``gankit rd`` to an ``add_subparsers()`` object."""
    rd = subparsers.add_parser("rd", help="rate-distortion curves: learned codecs vs JPEG and WebP on real files",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rd.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                    help="a `gankit train compression` checkpoint (repeat for several); none: baselines only")
    rd.add_argument("--name", default=None,
                    help="draw all checkpoints as one curve NAME (a lambda sweep of one model); default: each "
                         "checkpoint is its own method, named like 'hyperprior lambda=0.013'")
    rd.add_argument("--images", default="shipped", metavar="shipped|kodak|FOLDER",
                    help="scikit-image's photos (default), Kodak (fetched once into --data-dir) or a folder")
    rd.add_argument("--data-dir", default=None, help="dataset cache root for --images kodak")
    rd.add_argument("--out", default="runs/rd", help="writes OUT/rd.csv, OUT/rd_curves.csv and OUT/rd.png")
    rd.add_argument("--jpeg-qualities", type=_qualities, default=JPEG_QUALITIES, metavar="Q,Q,...",
                    help="JPEG qualities ('' for none; default: a sweep dense below 20)")
    rd.add_argument("--webp-qualities", type=_qualities, default=WEBP_QUALITIES, metavar="Q,Q,...",
                    help="WebP qualities ('' for none)")
    rd.set_defaults(func=run_rd)
    return rd


def _load_codecs(paths: Sequence[str], name: str | None) -> list:
    """``load_codec`` for each path; any failure becomes a :class:`gankit.codec.CodecError` naming the file.

    ``name`` renames every codec (one curve through several lambdas). Without it, checkpoints that
    ``load_codec`` names alike (same model and lambda) get their path appended, so they stay apart.
    """
    from gankit.codec import load_codec

    codecs = [load_codec(path) for path in paths]  # a bad file raises CodecError naming it
    for codec in codecs:
        if name is not None:
            codec.name = name
    if name is None:  # e.g. an rd run and the gan run warm-started from it: same model and lambda
        keys = [(codec.name, codec.lmbda) for codec in codecs]
        for codec, path in zip(codecs, paths):
            if keys.count((codec.name, codec.lmbda)) > 1:
                codec.name = f"{codec.name} [{path}]"
    return codecs


def run_rd(args: argparse.Namespace) -> int:
    """``gankit rd``: evaluate, write the CSVs and the plot, print a table and the gains over JPEG."""
    import matplotlib
    from PIL import features

    from gankit.codec import CodecError
    from gankit.data.registry import DataError
    from gankit.io import atomic_write

    try:
        codecs = _load_codecs(args.checkpoint, args.name)
        images = load_images(args.images, args.data_dir)
    except (CodecError, DataError, RDError) as err:
        print(f"gankit rd: {err}", file=sys.stderr)
        return 2
    webp = args.webp_qualities
    if webp and not features.check("webp"):
        print("gankit rd: note: this Pillow has no WebP support; WebP is left out", file=sys.stderr)
        webp = ()
    sizes = sorted({f"{int(x.shape[2])}x{int(x.shape[1])}" for x in images.values()})
    print(f"gankit rd: {len(images)} images ({', '.join(sizes[:4])}{', ...' if len(sizes) > 4 else ''}), "
          f"{len(codecs)} codec(s), {len(args.jpeg_qualities)} JPEG and {len(webp)} WebP qualities")
    try:
        rows = evaluate(images, codecs, args.jpeg_qualities, webp, progress=True)
        curves = average_curves(rows)
    except (CodecError, RDError) as err:
        print(f"gankit rd: {err}", file=sys.stderr)
        return 2

    out = Path(args.out)
    write_csv(rows, out / "rd.csv")
    write_csv(curves, out / "rd_curves.csv")
    matplotlib.use("Agg")  # a command line run opens no window, with or without a display
    import matplotlib.pyplot as plt

    title = f"rate-distortion on {args.images if args.images in ('shipped', 'kodak') else Path(args.images).name}"
    fig = plot_rd(curves, title=f"{title} ({len(images)} images)", reference=args.images == "kodak")
    with atomic_write(out / "rd.png") as handle:
        fig.savefig(handle, format="png", dpi=150)
    plt.close(fig)

    print(f"\n{'method':<28} {'setting':>8} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8}")
    for c in curves:
        if c["method"] in BASELINES and c["bpp"] > 1.0:
            continue  # the table keeps to the low rates; rd_curves.csv has every point
        print(f"{c['method'][:28]:<28} {c['setting']:>8g} {c['bpp']:>7.3f} {c['psnr']:>7.2f} {c['ms_ssim']:>8.4f}")
    learned = [m for m in dict.fromkeys(c["method"] for c in curves) if m not in BASELINES]
    if learned and args.jpeg_qualities:
        low, high = GOAL_RANGE
        print(f"\nPSNR gain over JPEG at equal bpp, {low:g}-{high:g} bpp (course goal: >= 1 dB):")
        for method in learned:
            result = compare_at_equal_bpp(curves, method, "jpeg", GOAL_RANGE)
            if result["reason"]:
                print(f"  {method}: n/a ({result['reason']})")
                continue
            span = "" if (result["low"], result["high"]) == GOAL_RANGE else \
                f" (only {result['low']:.3f}-{result['high']:.3f} bpp is covered by both curves)"
            print(f"  {method}: {result['gain']:+.2f} dB{span}")
    print(f"\nwrote {out / 'rd.csv'} ({len(rows)} rows), {out / 'rd_curves.csv'}, {out / 'rd.png'}")
    return 0
