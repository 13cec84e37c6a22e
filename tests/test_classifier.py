"""The kit's attribute classifier: learns the visible synthetic attributes, saves, loads, scores."""
from __future__ import annotations

import pytest
import torch

from gankit.classifier import (AttributeClassifier, attribute_accuracy, dataset_accuracy,
                               load_classifier, predict_attributes, train_classifier)
from gankit.data import CelebA, prepare

ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")


def _in_memory(dataset) -> torch.utils.data.TensorDataset:
    """Decode every image once (with its random flip): training then costs only the network."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.utils.data.TensorDataset(torch.stack(images), torch.stack(labels))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = prepare("celeba", tmp_path_factory.mktemp("data"), smoke=True)
    torch.manual_seed(0)
    train = CelebA(root, ATTRS, split="train", image_size=64)
    test = CelebA(root, ATTRS, split="test", image_size=64)
    run_dir = tmp_path_factory.mktemp("clf")
    clf = train_classifier(_in_memory(train), run_dir, attr_names=ATTRS, conv_dim=8,
                           max_steps=200, batch_size=32, device="cpu", progress=False, seed=0)
    return clf, run_dir, test


def test_learns_hair_colour_sex_and_age_on_held_out_faces(trained):
    clf, run_dir, test = trained
    assert not clf.training and clf.attr_names == ATTRS
    per_attribute, mean = dataset_accuracy(clf, test)
    accuracy = dict(zip(ATTRS, per_attribute.tolist()))
    # Chance (always "no") is 2/3 for each hair colour and about 1/2 for Male / Young; after
    # 200 steps the held-out accuracy measured 0.99-1.0 over seeds, so 0.9 leaves a wide margin.
    for name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male"):
        assert accuracy[name] >= 0.9, accuracy
    assert accuracy["Young"] >= 0.8, accuracy
    assert mean == pytest.approx(per_attribute.mean().item())
    assert (run_dir / "losses.csv").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()


def test_save_load_round_trip_gives_identical_predictions(trained):
    clf, run_dir, test = trained
    images = torch.stack([test[i][0] for i in range(16)])
    with torch.no_grad():
        expected = clf(images)
    for source in (run_dir / "classifier.pt", run_dir, run_dir / "checkpoints" / "last.pt",
                   str(run_dir / "classifier.pt")):
        loaded = load_classifier(source)
        assert not loaded.training and loaded.config == clf.config
        with torch.no_grad():
            assert torch.equal(loaded(images), expected), source


def test_missing_or_foreign_weights_fail_clearly(tmp_path):
    missing = tmp_path / "nowhere" / "classifier.pt"
    with pytest.raises(FileNotFoundError) as err:
        load_classifier(missing)
    assert str(missing) in str(err.value) and "train_classifier" in str(err.value)
    with pytest.raises(FileNotFoundError, match="classifier.pt"):
        load_classifier(tmp_path)  # a folder without weights
    with pytest.raises(ValueError, match="local files only"):
        load_classifier("https://example.org/classifier.pt")
    foreign = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not an attribute classifier"):
        load_classifier(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_classifier(garbage)


class _Fixed(AttributeClassifier):
    """Ignores the image: returns preset logits, so the accuracy arithmetic can be checked."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__(c_dim=logits.shape[1], image_size=8, conv_dim=4)
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_attribute_accuracy_arithmetic():
    logits = torch.tensor([[3.0, -1.0, 2.0], [1.0, 1.0, -2.0], [-1.0, 0.5, 4.0],
                           [2.0, -3.0, -1.0]])
    targets = torch.tensor([[1, 0, 0], [1, 0, 1], [0, 0, 1], [1, 1, 1]])
    clf = _Fixed(logits).train()
    images = torch.zeros(4, 3, 8, 8)
    per_attribute, mean = attribute_accuracy(clf, images, targets)
    assert per_attribute.tolist() == [1.0, 0.25, 0.25]
    assert mean == pytest.approx(0.5)
    assert clf.training  # the previous mode is restored
    assert predict_attributes(clf, images).tolist() == (logits > 0).tolist()
    assert attribute_accuracy(clf, images, targets.bool())[0].tolist() == [1.0, 0.25, 0.25]
    with pytest.raises(ValueError, match="trained on 8x8"):
        attribute_accuracy(clf, torch.zeros(4, 3, 16, 16), targets)
    with pytest.raises(ValueError, match="target_labels"):
        attribute_accuracy(clf, images, targets[:, :2])


@pytest.mark.parametrize("size", [64, 128])
def test_architecture(size):
    clf = AttributeClassifier(c_dim=5, image_size=size, conv_dim=8)
    assert clf(torch.zeros(2, 3, size, size)).shape == (2, 5)
    assert AttributeClassifier(**clf.config).config == clf.config
    strided = [m for m in clf.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(strided) == {64: 4, 128: 5}[size]  # down to 4x4
    with pytest.raises(ValueError):
        AttributeClassifier(c_dim=2, attr_names=["Male"])
