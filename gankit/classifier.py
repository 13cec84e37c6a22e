"""The kit's own attribute (domain) classifier, for scoring image-to-image translations.

StarGAN is judged by whether a translated face shows the *target* attributes: the paper trains a
classifier on real images (a ResNet-18 expression classifier for RaFD) and reports how often it
recognises the target domain in generated images. The course trains its own small classifier
instead of downloading one:

    from gankit.classifier import train_classifier, load_classifier, attribute_accuracy
    clf = train_classifier(CelebA(root, split="train", image_size=128), "runs/clf", max_steps=20000)
    clf = load_classifier("runs/clf/classifier.pt")
    per_attr, mean = attribute_accuracy(clf, fake_images, target_labels)

``AttributeClassifier`` is a plain CNN (stride-2 4x4 convolutions with BatchNorm and LeakyReLU
down to 4x4, global average pooling, one linear layer) giving one logit per attribute; it is
trained with binary cross-entropy (``BCEWithLogits``), the loss StarGAN's own auxiliary
classifier uses for CelebA. Training runs in ``gankit.training.Trainer`` (checkpoints, exact
resume, AMP, ``losses.csv``); the final weights are also written to ``<run_dir>/classifier.pt``,
a small file with the architecture settings that ``load_classifier`` reads from a local path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

FORMAT = "gankit-attribute-classifier"
EXPORT_NAME = "classifier.pt"


class AttributeClassifier(nn.Module):
    """Multi-label CNN: (B, 3, image_size, image_size) in [-1, 1] -> (B, c_dim) logits.

    Parameters
    ----------
    c_dim : int
        Number of binary attributes (StarGAN's ``--c_dim``).
    image_size : int
        Side of the input images (>= 8). Convolutions halve it down to 4x4 (or less).
    conv_dim : int
        Channels of the first convolution, doubled at each following one up to ``max_dim``.
    max_dim : int
        Channel cap.
    attr_names : sequence of str, optional
        Names of the attributes, in logit order (kept with the weights, for reports).
    """

    def __init__(self, c_dim: int = 5, image_size: int = 128, conv_dim: int = 32,
                 max_dim: int = 256, attr_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if int(c_dim) < 1:
            raise ValueError(f"c_dim must be >= 1, got {c_dim}")
        if int(image_size) < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if attr_names is not None and len(attr_names) != int(c_dim):
            raise ValueError(f"{len(attr_names)} attr_names for c_dim={c_dim}")
        self.c_dim, self.image_size = int(c_dim), int(image_size)
        self.conv_dim, self.max_dim = int(conv_dim), int(max_dim)
        self.attr_names = tuple(attr_names) if attr_names is not None else None
        layers: list[nn.Module] = []
        in_ch, out_ch, size = 3, self.conv_dim, self.image_size
        while size > 4:
            layers += [nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.BatchNorm2d(out_ch),
                       nn.LeakyReLU(0.2, inplace=True)]
            in_ch, out_ch, size = out_ch, min(out_ch * 2, self.max_dim), size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, self.c_dim)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments; ``AttributeClassifier(**config)`` rebuilds the architecture."""
        return {"c_dim": self.c_dim, "image_size": self.image_size, "conv_dim": self.conv_dim,
                "max_dim": self.max_dim,
                "attr_names": list(self.attr_names) if self.attr_names is not None else None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _infer_sizes(dataset: Dataset) -> tuple[int, int]:
    image, label = dataset[0][:2]
    label = torch.as_tensor(label)
    if image.dim() != 3 or label.dim() != 1:
        raise ValueError("train_classifier needs items (image (3, S, S), label (k,) of 0/1), as "
                         f"gankit.data.CelebA gives; got shapes {tuple(image.shape)} and "
                         f"{tuple(label.shape)}")
    return int(label.shape[0]), int(image.shape[-1])


def train_classifier(dataset: Dataset, run_dir: str | os.PathLike, *,
                     attr_names: Sequence[str] | None = None, conv_dim: int = 32,
                     max_dim: int = 256, batch_size: int = 32, max_steps: int | None = None,
                     epochs: int | None = None, lr: float = 1e-3,
                     betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
                     device: str | torch.device = "auto", precision: str = "auto",
                     seed: int = 0, resume: bool = True, num_workers: int = 0,
                     checkpoint_every: int = 1000, progress: bool = True,
                     tensorboard: bool = False) -> AttributeClassifier:
    """Train an ``AttributeClassifier`` with binary cross-entropy on ``(image, label)`` items.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image (3, S, S) in [-1, 1], label (k,) of 0/1)``, e.g. ``gankit.data.CelebA``;
        ``c_dim = k`` and ``image_size = S`` are read from the first item.
    run_dir : path
        Trainer run folder (``checkpoints/``, ``losses.csv``, ``config.json``); the trained
        weights also go to ``<run_dir>/classifier.pt`` for ``load_classifier``.
    attr_names : sequence of str, optional
        Attribute names kept with the weights; default ``dataset.selected_attrs`` if it has them.
    conv_dim, max_dim : int
        Width of the network (see ``AttributeClassifier``).
    batch_size, max_steps, epochs : int
        Stop after ``max_steps`` steps or ``epochs`` epochs (10 epochs if neither is given).
    lr, betas, weight_decay : float
        Adam(W) settings.
    device, precision : str
        As for ``gankit.training.Trainer`` (``"auto"``: the GPU if any, bf16/fp16 there).
    seed : int
        Seeds initialisation and data order (``seed_everything``).
    resume : bool
        Continue from ``<run_dir>/checkpoints/last.pt`` if present.
    num_workers, checkpoint_every, progress, tensorboard
        Passed to the Trainer.

    Returns
    -------
    AttributeClassifier
        The trained network, in eval mode, on ``device``.
    """
    from gankit.device import pick_device
    from gankit.distributed import rank_and_world_size
    from gankit.io import atomic_write
    from gankit.seeding import seed_everything
    from gankit.training import Trainer

    if epochs is None and max_steps is None:
        epochs = 10
    c_dim, image_size = _infer_sizes(dataset)
    if attr_names is None:
        attr_names = getattr(dataset, "selected_attrs", None)
    device = pick_device(device)
    seed_everything(seed)
    model = AttributeClassifier(c_dim, image_size, conv_dim, max_dim, attr_names).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas,
                                  weight_decay=weight_decay)
    config = {"model": model.config, "batch_size": batch_size, "lr": lr, "betas": list(betas),
              "weight_decay": weight_decay, "seed": seed}
    trainer = Trainer(run_dir, {"classifier": model}, {"adam": optimizer}, device=device,
                      precision=precision, config=config, keep_last=1, progress=progress,
                      tensorboard=tensorboard)

    def step(batch: Any) -> dict[str, float]:
        images, labels = batch[0], batch[1].float()
        with trainer.autocast():
            logits = model(images)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        trainer.backward(loss, optimizer)
        accuracy = ((logits.detach() > 0) == (labels > 0.5)).float().mean()
        return {"bce": loss.detach(), "acc": accuracy}

    trainer.fit(dataset, step, batch_size=batch_size, epochs=epochs, max_steps=max_steps,
                num_workers=num_workers, seed=seed, resume=resume,
                checkpoint_every=checkpoint_every)
    model.eval()
    if rank_and_world_size()[0] == 0:
        export = {"format": FORMAT, "version": 1, "config": model.config,
                  "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
        with atomic_write(Path(run_dir) / EXPORT_NAME, "wb") as handle:
            torch.save(export, handle)
    return model


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> AttributeClassifier:
    """Load a classifier written by ``train_classifier``, from a local path only.

    Parameters
    ----------
    path : path
        ``<run_dir>/classifier.pt``, a Trainer checkpoint of ``train_classifier``
        (``<run_dir>/checkpoints/last.pt``), or the run folder itself.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    AttributeClassifier
        In eval mode.

    Raises
    ------
    FileNotFoundError
        If there are no weights at ``path`` (the message names it and how to make them).
    ValueError
        If ``path`` is a URL, or the file is not a classifier of this kit.
    """
    text = os.fspath(path)
    if "://" in text:
        raise ValueError(f"load_classifier reads local files only, got {text!r}: download the "
                         "file yourself, or train one with gankit.classifier.train_classifier")
    path = Path(text).expanduser()
    if path.is_dir():
        candidates = [path / EXPORT_NAME, path / "checkpoints" / "last.pt"]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise FileNotFoundError(
            f"no classifier weights at {path}: train them with gankit.classifier."
            f"train_classifier(dataset, run_dir), which writes <run_dir>/{EXPORT_NAME}, or copy "
            "that file there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"{path} cannot be read as a torch file ({type(err).__name__}: {err}); "
                         "is it a classifier written by train_classifier?") from err
    try:
        if isinstance(state, dict) and state.get("format") == FORMAT:
            config, weights = state["config"], state["state_dict"]
        else:  # a Trainer checkpoint of train_classifier
            config, weights = state["config"]["model"], state["models"]["classifier"]
        model = AttributeClassifier(**config)
        model.load_state_dict(weights)
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path} is not an attribute classifier of gankit "
                         f"({type(err).__name__}: {err})") from err
    return model.to(device).eval()


@torch.no_grad()
def predict_attributes(classifier: AttributeClassifier, images: torch.Tensor, *,
                       batch_size: int = 256) -> torch.Tensor:
    """Predicted attributes (logit > 0) of ``images`` (N, 3, S, S): (N, c_dim) bool, on the CPU.

    Runs in eval mode (BatchNorm statistics frozen) and restores the previous mode.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (classifier.image_size, classifier.image_size):
        raise ValueError(
            f"the classifier was trained on {classifier.image_size}x{classifier.image_size} "
            f"images, got {images.shape[-2]}x{images.shape[-1]}: resize them first (e.g. "
            "F.interpolate(images, size=..., mode='bilinear', antialias=True))")
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    try:
        out = [classifier(chunk.to(device).float()).cpu() > 0 for chunk in images.split(batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, classifier.c_dim), dtype=torch.bool)


def attribute_accuracy(classifier: AttributeClassifier, images: torch.Tensor,
                       target_labels: torch.Tensor, *, batch_size: int = 256
                       ) -> tuple[torch.Tensor, float]:
    """How often the classifier sees the target attributes in ``images``.

    Parameters
    ----------
    classifier : AttributeClassifier
    images : torch.Tensor, (N, 3, S, S) in [-1, 1]
        Real or translated images, S the classifier's ``image_size``.
    target_labels : torch.Tensor, (N, c_dim)
        0 / 1 (or bool) attributes the images should show, e.g. StarGAN's target labels.

    Returns
    -------
    per_attribute : torch.Tensor, (c_dim,) float32
        Fraction of images whose prediction matches the target, per attribute.
    mean : float
        Mean of ``per_attribute``.
    """
    target = torch.as_tensor(target_labels)
    if target.shape != (images.shape[0], classifier.c_dim):
        raise ValueError(f"target_labels must be ({images.shape[0]}, {classifier.c_dim}) for "
                         f"these images, got {tuple(target.shape)}")
    if len(images) == 0:
        raise ValueError("no images to score")
    predicted = predict_attributes(classifier, images, batch_size=batch_size)
    per_attribute = (predicted == (target.cpu().float() > 0.5)).float().mean(0)
    return per_attribute, float(per_attribute.mean())


def dataset_accuracy(classifier: AttributeClassifier, dataset: Dataset, *,
                     batch_size: int = 64) -> tuple[torch.Tensor, float]:
    """``attribute_accuracy`` over every ``(image, label)`` item of ``dataset`` (in order)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    hits, total = torch.zeros(classifier.c_dim), 0
    for images, labels in loader:
        predicted = predict_attributes(classifier, images, batch_size=batch_size)
        hits += (predicted == (labels.float() > 0.5)).float().sum(0)
        total += len(images)
    if total == 0:
        raise ValueError("the dataset is empty")
    per_attribute = hits / total
    return per_attribute, float(per_attribute.mean())
