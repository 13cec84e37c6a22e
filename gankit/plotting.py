"""Loss curves and image grids for notebooks and headless runs.

Figures are made with ``matplotlib.pyplot``, so a notebook shows them inline at the end of the
cell; nothing here calls ``plt.show()``, so scripts and graders under the Agg backend just get a
Figure to save (``fig.savefig(...)``). In a notebook, assign the result (``fig = show_grid(...)``)
or end the line with ``;`` when it is the cell's last line, otherwise Jupyter draws it twice.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

_NOT_LOSSES = ("step", "epoch", "time")


def _columns(source: Any) -> dict[str, np.ndarray]:
    """Columns as float arrays from a CSV path, a mapping of sequences or a DataFrame-like object."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            return {}
        names = list(rows[0])
        return {n: np.array([float(r[n]) if r.get(n) not in (None, "") else np.nan for r in rows]) for n in names}
    names = list(source.columns) if hasattr(source, "columns") else list(source)
    return {str(n): np.asarray(source[n], dtype=float) for n in names}


def _ema(values: np.ndarray, smooth: float) -> np.ndarray:
    """TensorBoard-style exponential moving average, debiased at the start; NaNs are carried over."""
    out, average, weight = np.empty_like(values), 0.0, 0.0
    for i, value in enumerate(values):
        if not np.isnan(value):
            average, weight = smooth * average + (1 - smooth) * value, smooth * weight + (1 - smooth)
        out[i] = average / weight if weight > 0 else np.nan
    return out


def plot_losses(source: Any, ax: Axes | None = None, smooth: float = 0.0, title: str | None = None) -> Figure:
    """Plot every loss column against the step.

    Parameters
    ----------
    source : path, mapping or DataFrame-like
        A ``losses.csv`` written by :class:`gankit.training.Trainer`, a dict of equal-length
        sequences (``{"d_loss": [...], "g_loss": [...]}``) or a pandas DataFrame. A ``step``
        column is the x axis (else 1, 2, 3, ...); ``step``, ``epoch`` and ``time`` are not plotted.
    ax : matplotlib Axes, optional
        Draw here instead of on a new figure.
    smooth : float in [0, 1)
        Exponential-moving-average weight; > 0 draws the raw curve faintly and the smoothed one on top.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    columns = _columns(source)
    losses = {k: v for k, v in columns.items() if k not in _NOT_LOSSES}
    if not losses:
        raise ValueError("no loss columns to plot")
    length = len(next(iter(losses.values())))
    steps = columns.get("step", np.arange(1, length + 1))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for name, values in losses.items():
        if smooth > 0:
            (line,) = ax.plot(steps, values, alpha=0.25, linewidth=1)
            ax.plot(steps, _ema(values, smooth), color=line.get_color(), label=name)
        else:
            ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax.figure


def image_grid(images: Any, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Tile images (B, C, H, W) in [-1, 1] into one uint8 array (rows, cols, C), C = 1 or 3.

    ``nrow`` images per row, like ``torchvision.utils.make_grid``; ``padding`` black pixels
    around each. Accepts a torch tensor (any device, with or without grad) or a NumPy array;
    values outside [-1, 1] are clipped.
    """
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {images.shape}")
    count, channels, height, width = images.shape
    columns = max(1, min(nrow, count))
    rows = math.ceil(count / columns)
    pixels = np.rint((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8)  # [-1, 1] -> {0..255}
    grid = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), np.uint8)
    for i in range(count):
        top, left = padding + (i // columns) * (height + padding), padding + (i % columns) * (width + padding)
        grid[top:top + height, left:left + width] = pixels[i].transpose(1, 2, 0)  # CHW -> HWC
    return grid


def show_grid(images: Any, nrow: int = 8, title: str | None = None) -> Figure:
    """A Figure of :func:`image_grid` (grey colour map for one channel), shown inline in notebooks."""
    grid = image_grid(images, nrow)
    height, width = grid.shape[:2]
    scale = min(8 / width, 8 / height) * 100  # at most 8 inches a side
    fig, ax = plt.subplots(figsize=(max(width * scale / 100, 1), max(height * scale / 100, 1)), layout="constrained")
    if grid.shape[2] == 1:
        ax.imshow(grid[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig
