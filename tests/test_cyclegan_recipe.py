"""CycleGAN training recipe: smoke run, exact resume (pools included), DDP, translation, CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gankit.models.cyclegan import ResnetGenerator
from gankit.recipes.cyclegan import load_generator, train_cyclegan, translate_folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from gankit.data import prepare
    return prepare("horse2zebra", tmp_path_factory.mktemp("data"), smoke=True)


def _params(trainer):
    return {f"{name}.{k}": v.clone() for name, net in trainer.models.items() for k, v in net.state_dict().items()}


def test_smoke_run_writes_a_complete_run_folder(data_root, tmp_path):
    trainer = train_cyclegan({}, data_root, tmp_path / "run", "cpu", smoke=True, progress=False)
    assert trainer.result.step == 6 and trainer.result.stopped_by is None
    header = (tmp_path / "run" / "losses.csv").read_text().splitlines()[0].split(",")
    assert {"G", "G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"} <= set(header)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    grid = Image.open(sorted((tmp_path / "run" / "samples").glob("*.png"))[-1])
    assert grid.width > 32 and grid.height > 32


def test_resuming_gives_the_same_networks_as_an_uninterrupted_run(data_root, tmp_path):
    straight = train_cyclegan({}, data_root, tmp_path / "straight", "cpu", smoke=True, progress=False, max_steps=6)
    train_cyclegan({}, data_root, tmp_path / "split", "cpu", smoke=True, progress=False, max_steps=3)
    resumed = train_cyclegan({}, data_root, tmp_path / "split", "cpu", smoke=True, progress=False, max_steps=6)
    assert resumed.result.step == 6
    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume is not exact"


def test_the_image_pools_are_part_of_the_checkpoint(data_root, tmp_path):
    train_cyclegan({"pool_size": 4}, data_root, tmp_path / "run", "cpu", smoke=True, progress=False, max_steps=3)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    pools = ckpt["extra"][0]
    assert len(pools["pool_A"]["images"]) == 3 and len(pools["pool_B"]["images"]) == 3


def test_translate_folder_with_a_run_checkpoint_and_an_official_style_file(data_root, tmp_path):
    run = tmp_path / "run"
    train_cyclegan({}, data_root, run, "cpu", smoke=True, progress=False, max_steps=1)
    test_a = next(Path(data_root).rglob("testA"))
    written = translate_folder(run / "checkpoints" / "last.pt", test_a, tmp_path / "out", size=32, device="cpu")
    assert len(written) == len(list(test_a.iterdir())) and all(p.suffix == ".png" for p in written)
    assert Image.open(written[0]).size == (32, 32)
    # An official-style file: a bare state dict with the old InstanceNorm running statistics.
    official = ResnetGenerator(ngf=8, n_blocks=2)
    state = official.state_dict()
    state["model.2.running_mean"], state["model.2.running_var"] = torch.zeros(8), torch.ones(8)
    torch.save(state, tmp_path / "latest_net_G_A.pth")
    net = load_generator(tmp_path / "latest_net_G_A.pth", n_blocks=2, ngf=8)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in official.state_dict().items())
    with pytest.raises(ValueError, match="direction"):
        load_generator(tmp_path / "latest_net_G_A.pth", direction="sideways")


def _gankit(*args, **kw):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_cli_smoke_run_and_bad_settings(tmp_path):
    done = _gankit("gankit", "train", "cyclegan", "--smoke", "--data-dir", str(tmp_path / "d"),
                   "--run-dir", str(tmp_path / "run"), "--no-progress", "--max-steps", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step 2" in done.stdout
    bad = _gankit("gankit", "train", "cyclegan", "--smoke", "--set", "crop_size=30", "--run-dir", str(tmp_path / "x"))
    assert bad.returncode == 2 and "crop_size" in bad.stderr


@pytest.mark.slow
def test_two_process_ddp_training_under_torchrun(tmp_path):
    """Two CPU processes on gloo, as on a two-GPU student server (NCCL there)."""
    done = _gankit("torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                   "--master_port", "29561", "-m", "gankit", "train", "cyclegan", "--smoke",
                   "--data-dir", str(tmp_path / "d"), "--run-dir", str(tmp_path / "run"), "--no-progress",
                   "--max-steps", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("gankit train cyclegan: step 4") == 1, "only rank 0 reports"
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["extra"]) == 2, "both ranks' pools are saved"
    rows = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert len(rows) == 1 + 4, "one CSV row per step, written by rank 0 alone"


def test_fid_cli_without_weights_says_how_to_get_them(tmp_path):
    env_weights = tmp_path / "nowhere" / "inception.pth"
    done = subprocess.run([sys.executable, "-m", "gankit", "fid", str(tmp_path), str(tmp_path), "--weights",
                           str(env_weights)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert str(env_weights) in done.stderr and "sha256" in done.stderr and "https://" in done.stderr


@pytest.mark.slow
def test_compiled_generators_train_and_checkpoint_plain_modules(data_root, tmp_path):
    trainer = train_cyclegan({}, data_root, tmp_path / "run", "cpu", smoke=True, progress=False,
                             max_steps=2, compile_generators=True)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["models"]["G_A"]), "compiled wrappers leak into checkpoints"
    ResnetGenerator(ngf=8, n_blocks=2).load_state_dict(ckpt["models"]["G_A"])
    assert trainer.result.step == 2
