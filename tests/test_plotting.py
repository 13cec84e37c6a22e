"""gankit.plotting works headless and draws what it is given."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless, as on a grading server

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gankit.plotting import image_grid, plot_losses, show_grid  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_plot_losses_from_a_trainer_csv(tmp_path):
    path = tmp_path / "losses.csv"
    path.write_text("step,epoch,d_loss,g_loss\n2,0,1.5,0.7\n4,0,1.25,0.9\n6,1,1.0,\n")
    fig = plot_losses(path, title="run")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"d_loss", "g_loss"}, "step and epoch are not plotted"
    assert list(lines["d_loss"].get_xdata()) == [2, 4, 6]
    assert list(lines["d_loss"].get_ydata()) == [1.5, 1.25, 1.0]
    assert np.isnan(lines["g_loss"].get_ydata()[2]), "an empty cell is a gap"
    assert ax.get_title() == "run"


def test_plot_losses_from_a_dict_on_given_axes_with_smoothing():
    fig, ax = plt.subplots()
    values = [3.0, 5.0, 7.0, 11.0]
    assert plot_losses({"g_loss": values}, ax=ax, smooth=0.5) is fig
    raw, smoothed = ax.get_lines()
    assert list(raw.get_xdata()) == [1, 2, 3, 4]
    # debiased EMA: a_t = 0.5 a_{t-1} + 0.5 x_t, divided by 1 - 0.5^t
    expected, average = [], 0.0
    for t, x in enumerate(values, start=1):
        average = 0.5 * average + 0.5 * x
        expected.append(average / (1 - 0.5**t))
    assert np.allclose(smoothed.get_ydata(), expected)
    assert smoothed.get_label() == "g_loss" and raw.get_color() == smoothed.get_color()


def test_plot_losses_from_a_dataframe_like_object():
    class Frame:  # what plot_losses needs from a pandas DataFrame
        columns = ["step", "loss"]

        def __getitem__(self, key):
            return {"step": np.array([10, 20]), "loss": np.array([0.5, 0.25])}[key]

    (line,) = plot_losses(Frame()).axes[0].get_lines()
    assert list(line.get_xdata()) == [10, 20] and list(line.get_ydata()) == [0.5, 0.25]
    with pytest.raises(ValueError):
        plot_losses({"step": [1, 2]})
    with pytest.raises(ValueError):
        plot_losses({"loss": [1, 2]}, smooth=1.0)


def test_image_grid_layout_and_values():
    images = torch.full((5, 1, 3, 2), -1.0)
    images[1] = 1.0
    images[4] = 0.0
    grid = image_grid(images, nrow=3, padding=1)
    assert grid.dtype == np.uint8 and grid.shape == (2 * (3 + 1) + 1, 3 * (2 + 1) + 1, 1)
    assert (grid[1:4, 1:3] == 0).all()  # image 0: -1 -> 0
    assert (grid[1:4, 4:6] == 255).all()  # image 1: 1 -> 255
    assert (grid[5:8, 4:6] == 128).all()  # image 4 (second row, second column): 0 -> 127.5 -> 128
    assert (grid[5:8, 7:9] == 0).all(), "the unused cell stays black"


def test_image_grid_clips_and_keeps_colour():
    images = np.stack([np.full((3, 4, 4), 7.0), np.full((3, 4, 4), -7.0)])
    grid = image_grid(images, nrow=8)
    assert grid.shape == (4 + 4, 2 * (4 + 2) + 2, 3)
    assert grid.max() == 255 and grid[2:6, 2:6].min() == 255 and grid[2:6, 8:12].max() == 0
    with pytest.raises(ValueError):
        image_grid(torch.zeros(3, 4, 4))


def test_show_grid_returns_a_figure_headless():
    fig = show_grid(torch.rand(6, 1, 8, 8, requires_grad=True) * 2 - 1, nrow=3, title="samples")
    (ax,) = fig.axes
    assert ax.get_title() == "samples"
    (image,) = ax.get_images()
    assert image.get_array().shape == (2 * 10 + 2, 3 * 10 + 2)
    fig.canvas.draw()  # renders without a display
