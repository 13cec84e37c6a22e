"""StarGAN training recipe: smoke run, exact resume, the paper's LR schedule, DDP, editing, CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gankit.models.stargan import StarGANConfig
from gankit.recipes.stargan import edit_attributes, load_generator, paper_lr_multiplier, train_stargan


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from gankit.data import prepare
    return prepare("celeba", tmp_path_factory.mktemp("data"), smoke=True)


def test_smoke_run_logs_both_players_and_a_domain_grid(data_root, tmp_path):
    trainer = train_stargan({}, data_root, tmp_path / "run", "cpu", smoke=True, progress=False)
    assert trainer.result.step == 6
    rows = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert rows[0].split(",")[2:] == ["D_real", "D_cls", "D_fake", "D_gp", "G_fake", "G_cls", "G_rec"]
    assert len(rows) == 7
    g_rec = [float(r.split(",")[-1]) for r in rows[1:]]
    assert g_rec[0] == 0.0 and g_rec[1] > 0, "G first steps at step n_critic (2 in smoke mode)"
    from PIL import Image
    grid = Image.open(sorted((tmp_path / "run" / "samples").glob("*.png"))[-1])
    assert grid.height > grid.width, "one row per target attribute plus the inputs: 6 rows of 4"


def test_resume_is_exact(data_root, tmp_path):
    straight = train_stargan({}, data_root, tmp_path / "a", "cpu", smoke=True, progress=False, max_steps=6)
    train_stargan({}, data_root, tmp_path / "b", "cpu", smoke=True, progress=False, max_steps=3)
    resumed = train_stargan({}, data_root, tmp_path / "b", "cpu", smoke=True, progress=False, max_steps=6)
    for name in ("G", "D"):
        a, b = straight.models[name].state_dict(), resumed.models[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"


def test_paper_schedule_decays_linearly_to_zero_over_the_last_iterations():
    config = StarGANConfig(num_iters=200_000, num_iters_decay=100_000, lr_update_step=1000)
    rule = paper_lr_multiplier(config)
    assert rule(0) == 1.0 and rule(100_999) == 1.0
    assert rule(150_000) == pytest.approx(0.5)
    assert rule(199_999) == pytest.approx(0.01) and rule(200_000) == 0.0


def test_edit_attributes_with_a_checkpoint_and_an_official_file(data_root, tmp_path):
    train_stargan({}, data_root, tmp_path / "run", "cpu", smoke=True, progress=False, max_steps=2)
    G = load_generator(tmp_path / "run" / "checkpoints" / "last.pt")
    image = torch.zeros(3, 32, 32)
    blond = edit_attributes(G, image, torch.tensor([0, 1, 0, 1, 1]))
    black = edit_attributes(G, image, torch.tensor([1, 0, 0, 1, 1]))
    assert blond.shape == (3, 32, 32) and blond.abs().max() <= 1
    assert not torch.equal(blond, black), "the label changes the output"
    torch.save({f"module.{k}": v for k, v in G.state_dict().items()}, tmp_path / "200000-G.ckpt")
    small = StarGANConfig(g_conv_dim=8, g_repeat_num=2)
    official = load_generator(tmp_path / "200000-G.ckpt", small)
    assert all(torch.equal(official.state_dict()[k], v) for k, v in G.state_dict().items())


def _run(*args, timeout=300):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_cli_smoke_and_bad_settings(tmp_path):
    done = _run("gankit", "train", "stargan", "--smoke", "--data-dir", str(tmp_path / "d"),
                "--run-dir", str(tmp_path / "run"), "--no-progress", "--max-steps", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step 2" in done.stdout
    bad = _run("gankit", "train", "stargan", "--set", "c_dim=4", "--run-dir", str(tmp_path / "x"))
    assert bad.returncode == 2 and "selected_attrs" in bad.stderr


@pytest.mark.slow
def test_two_process_ddp_with_the_gradient_penalty(tmp_path):
    done = _run("torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", "29571", "-m", "gankit", "train", "stargan", "--smoke",
                "--data-dir", str(tmp_path / "d"), "--run-dir", str(tmp_path / "run"), "--no-progress",
                "--max-steps", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("gankit train stargan: step 4") == 1
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2
