"""gankit core: device selection at run time, seeding, atomic writes."""
from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import gankit
from gankit.io import atomic_write, atomic_write_text


def test_auto_picks_cpu_when_nothing_else_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert gankit.pick_device("auto") == torch.device("cpu")
    assert gankit.pick_device(None) == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gankit.pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gankit.pick_device("AUTO").type == "mps"


def test_explicit_devices_are_checked_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        gankit.pick_device("cuda:0")
    with pytest.raises(ValueError, match="not a device name"):
        gankit.pick_device("gpu please")
    assert gankit.pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="only 2 GPU"):
        gankit.pick_device("cuda:2")


def test_importing_gankit_touches_no_device():
    # CUDA would be initialised by any device query at import time; the flag stays false.
    code = "import gankit, gankit.data, gankit.training, torch; print(torch.cuda.is_initialized())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    gankit.seed_everything(7)
    first = draw()
    gankit.seed_everything(7)
    second = draw()
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])
    gankit.seed_everything(8)
    assert not torch.equal(draw()[2], first[2])


def test_seed_everything_returns_a_seeded_generator_and_sets_flags():
    g1, g2 = gankit.seed_everything(3, deterministic=True), gankit.seed_everything(3)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    gankit.seed_everything(3, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    gankit.seed_everything(3)
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(ValueError):
        gankit.seed_everything(-1)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "grades.csv"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["grades.csv"], "the temporary file is cleaned up"
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "ckpt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o644
