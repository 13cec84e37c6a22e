"""An interactive attribute editor for StarGAN: pick a face, toggle attributes, see the translation.

    from gankit.editor import attribute_editor
    attribute_editor(G, test_images, test_labels, ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"])

``G`` is a trained generator (``trainer.models["G"]``), or a path that
:func:`gankit.recipes.stargan.load_generator` reads: a gankit run checkpoint (``last.pt``) or an
official ``200000-G.ckpt``. The widget is a dropdown of the images, one checkbox per attribute
(initialised from the chosen image's labels; hair colours are mutually exclusive, as in
``create_labels``: switching one on switches the others off) and a PNG of the input next to
``edit_attributes(G, image, new_labels)``.

All the logic lives in :class:`AttributeEditor`, plain methods that need no browser (``render``
returns the side-by-side picture as an array); :meth:`AttributeEditor.widget` only wires ipywidgets
to them, so a headless kernel (papermill, tests) can build it and drive it by setting values.
"""
from __future__ import annotations

import io
import os
from typing import Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from gankit.models.stargan import HAIR_COLOURS, StarGANConfig
from gankit.recipes.stargan import edit_attributes, load_generator

Values = Union[Mapping[str, bool], Sequence[bool], torch.Tensor, np.ndarray]


class AttributeEditor:
    """The editor's state and update logic, without widgets.

    Parameters
    ----------
    G : nn.Module or path
        A StarGAN generator ``G(x (B, 3, S, S), c (B, c_dim))``, or a checkpoint for ``load_generator``.
        It is put in train mode, as the official solver always uses it (instance statistics in
        InstanceNorm; see ``gankit.models.stargan.Generator``); inference runs under ``no_grad``.
    images : tensor (N, 3, S, S) in [-1, 1]
        The images to edit, e.g. the CelebA test split.
    labels : tensor (N, c_dim) of 0 / 1
        Their attributes, in ``attr_names`` order.
    attr_names : sequence of str
        One name per label column (StarGAN's ``selected_attrs``).
    config : StarGANConfig, optional
        Architecture of an official checkpoint given as a path (default: the released 128 px model).
    names : sequence of str, optional
        Captions for the image chooser (default ``"image i"``).
    display_size : int
        The pictures are enlarged (nearest neighbour, by an integer factor) to at least this side.
    """

    def __init__(self, G: nn.Module | str | os.PathLike, images: torch.Tensor, labels: torch.Tensor,
                 attr_names: Sequence[str], *, config: StarGANConfig | None = None,
                 names: Sequence[str] | None = None, display_size: int = 256) -> None:
        if isinstance(G, (str, os.PathLike)):
            G = load_generator(G, config)
        self.G = G.train()
        self.images = torch.as_tensor(images).detach().float().cpu()
        self.labels = torch.as_tensor(labels).detach().float().cpu()
        self.attr_names = tuple(attr_names)
        if self.images.dim() != 4 or self.images.shape[1] != 3 or len(self.images) == 0:
            raise ValueError(f"images must be (N, 3, S, S) with N >= 1, got {tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images), len(self.attr_names)):
            raise ValueError(f"labels must be (N, len(attr_names)) = {(len(self.images), len(self.attr_names))}, "
                             f"got {tuple(self.labels.shape)}")
        c_dim = getattr(G, "c_dim", len(self.attr_names))
        if c_dim != len(self.attr_names):
            raise ValueError(f"the generator takes {c_dim} attributes, {len(self.attr_names)} attr_names given")
        self.names = list(names) if names is not None else [f"image {i}" for i in range(len(self.images))]
        if len(self.names) != len(self.images):
            raise ValueError(f"{len(self.names)} names for {len(self.images)} images")
        self.hair = [name for name in self.attr_names if name in HAIR_COLOURS]
        self.scale = max(1, -(-int(display_size) // self.images.shape[-1]))  # ceil

    def __len__(self) -> int:
        return len(self.images)

    # ------------------------------------------------------------------ labels
    def values_of(self, index: int) -> dict[str, bool]:
        """The attributes of image ``index``, {name: bool}: what the checkboxes start from."""
        return {name: bool(v > 0.5) for name, v in zip(self.attr_names, self.labels[index].tolist())}

    def as_dict(self, values: Values) -> dict[str, bool]:
        """{name: bool} from a mapping (missing names: False), or a sequence / vector in attr_names order."""
        if isinstance(values, Mapping):
            unknown = set(values) - set(self.attr_names)
            if unknown:
                raise ValueError(f"unknown attributes {sorted(unknown)}; choose from {list(self.attr_names)}")
            return {name: bool(values.get(name, False)) for name in self.attr_names}
        flat = [bool(float(v) > 0.5) for v in (values.tolist() if hasattr(values, "tolist") else values)]
        if len(flat) != len(self.attr_names):
            raise ValueError(f"{len(flat)} values for {len(self.attr_names)} attributes {list(self.attr_names)}")
        return dict(zip(self.attr_names, flat))

    def toggle(self, values: Values, name: str, on: bool) -> dict[str, bool]:
        """``values`` with ``name`` set to ``on``; switching a hair colour on switches the other colours off."""
        new = self.as_dict(values)
        if name not in new:
            raise ValueError(f"unknown attribute {name!r}; choose from {list(self.attr_names)}")
        if on and name in self.hair:
            new.update({h: False for h in self.hair})
        new[name] = bool(on)
        return new

    def label_vector(self, values: Values) -> torch.Tensor:
        """The target label ``c`` (c_dim,) float of 0 / 1 for ``values``."""
        d = self.as_dict(values)
        return torch.tensor([float(d[name]) for name in self.attr_names])

    # ------------------------------------------------------------------ images
    def translate(self, index: int, values: Values) -> torch.Tensor:
        """``edit_attributes(G, images[index], c)``: (3, S, S) in [-1, 1], on the CPU."""
        if not 0 <= int(index) < len(self.images):
            raise IndexError(f"image index {index} out of range [0, {len(self.images)})")
        return edit_attributes(self.G, self.images[int(index)], self.label_vector(values)).float().cpu()

    def render(self, index: int, values: Values, gap: int = 4) -> np.ndarray:
        """The input image and its translation side by side: uint8 (H, 2 W + gap, 3), enlarged ``scale`` times."""
        pair = [self.images[int(index)], self.translate(index, values)]
        pixels = [np.rint((p.clamp(-1, 1).numpy().transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8) for p in pair]
        pixels = [p.repeat(self.scale, 0).repeat(self.scale, 1) for p in pixels]  # nearest-neighbour enlargement
        h = pixels[0].shape[0]
        return np.concatenate([pixels[0], np.full((h, gap, 3), 255, np.uint8), pixels[1]], axis=1)

    def png(self, index: int, values: Values) -> bytes:
        """:meth:`render` encoded as PNG bytes (what the widget shows)."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.render(index, values)).save(buffer, format="PNG")
        return buffer.getvalue()

    def caption(self, index: int, values: Values) -> str:
        d = self.as_dict(values)
        changed = [f"{'+' if d[n] else '-'}{n}" for n, v in self.values_of(index).items() if d[n] != v]
        return f"{self.names[int(index)]}: input | G(x, c), c = [{', '.join(str(int(d[n])) for n in self.attr_names)}]" + (
            f" ({' '.join(changed)})" if changed else " (the image's own labels: a reconstruction)")

    # ------------------------------------------------------------------ the widget
    def widget(self):
        """An ipywidgets VBox: image dropdown, one checkbox per attribute, a reset button, the picture.

        Observers call :meth:`toggle` and :meth:`png`; setting ``.value`` of the controls from code
        (as the tests do) updates the picture exactly as clicking does. The box keeps a reference
        to this editor as ``box.editor``; ``box.chooser``, ``box.checkboxes``, ``box.image`` are its parts.
        """
        import ipywidgets as w

        chooser = w.Dropdown(options=[(name, i) for i, name in enumerate(self.names)], value=0, description="image")
        boxes = {name: w.Checkbox(value=v, description=name, indent=False, layout=w.Layout(width="auto"))
                 for name, v in self.values_of(0).items()}
        reset = w.Button(description="reset to the image's labels")
        start = self.values_of(0)
        picture = w.Image(value=self.png(0, start), format="png")
        caption = w.HTML(self.caption(0, start))
        syncing = [False]

        def show(values: Mapping[str, bool]) -> None:
            syncing[0] = True
            try:
                for name, box in boxes.items():
                    box.value = values[name]
            finally:
                syncing[0] = False
            picture.value = self.png(chooser.value, values)
            caption.value = self.caption(chooser.value, values)

        def on_toggle(change) -> None:
            if not syncing[0]:
                current = {name: box.value for name, box in boxes.items()}
                show(self.toggle(current, change["owner"].description, change["new"]))

        for box in boxes.values():
            box.observe(on_toggle, names="value")
        chooser.observe(lambda change: show(self.values_of(change["new"])), names="value")
        reset.on_click(lambda _: show(self.values_of(chooser.value)))
        box = w.VBox([w.HBox([chooser, reset]), w.HBox(list(boxes.values())), caption, picture])
        box.editor, box.chooser, box.checkboxes, box.image, box.caption_html = self, chooser, boxes, picture, caption
        return box


def attribute_editor(G: nn.Module | str | os.PathLike, images: torch.Tensor, labels: torch.Tensor,
                     attr_names: Sequence[str], **kwargs):
    """The attribute-editor widget (an ``ipywidgets.VBox``) for ``G`` on ``images``; see :class:`AttributeEditor`.

    Keyword arguments (``config``, ``names``, ``display_size``) go to :class:`AttributeEditor`;
    the returned box's ``.editor`` is that object, whose ``render(index, values)`` gives the picture.
    """
    return AttributeEditor(G, images, labels, attr_names, **kwargs).widget()
