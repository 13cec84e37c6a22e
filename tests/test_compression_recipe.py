"""The compression recipe end to end on tiny nets: rd stage, GAN stage warm-started from it, CLI, resume."""
from __future__ import annotations

import csv

import pytest
import torch

from gankit.cli import main as gankit_main
from gankit.codec import HEADER_BYTES, load_codec
from gankit.data.photos import write_shipped_photos
from gankit.models.compression import CompressionConfig
from gankit.recipes.compression import train_compression


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_shipped_photos(folder)
    return folder


@pytest.fixture(scope="module")
def rd_run(photos, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rd")
    trainer = train_compression({"lmbda": 0.01}, photos, run_dir, "cpu", smoke=True, progress=False)
    return run_dir, trainer


def _rows(run_dir):
    with open(run_dir / "losses.csv") as handle:
        return list(csv.DictReader(handle))


def test_rd_stage_trains_logs_and_writes_a_loadable_codec(rd_run, photos):
    run_dir, trainer = rd_run
    assert trainer.result.step == 6 and trainer.result.stopped_by is None
    rows = _rows(run_dir)
    assert {"loss", "mse", "bpp", "psnr"} <= set(rows[0])
    for row in rows:  # the logged loss is the RD objective of its own parts
        assert float(row["loss"]) == pytest.approx(0.01 * 255 ** 2 * float(row["mse"]) + float(row["bpp"]), rel=1e-4)
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    import numpy as np
    from PIL import Image
    grid = np.asarray(Image.open(run_dir / "samples" / "step_000006.png"))
    assert grid.min() < 40, "originals in [0, 1] must keep their darks in the grid (it maps [-1, 1])"
    codec = load_codec(run_dir / "checkpoints" / "last.pt")
    assert (codec.model.N, codec.model.M, codec.lmbda) == (16, 16, 0.01)
    assert codec.config.stage == "rd" and codec.config.crop_size == 64
    image = torch.rand(3, 64, 64)
    data = codec.compress(image)
    assert codec.decompress(data).shape == (3, 64, 64) and len(data) > HEADER_BYTES


def test_gan_stage_starts_from_the_rd_codec_and_trains_a_discriminator(rd_run, photos, tmp_path):
    rd_dir, _ = rd_run
    warm = rd_dir / "checkpoints" / "last.pt"
    trainer = train_compression({"stage": "gan", "warm_start": str(warm), "lmbda": 0.01}, photos, tmp_path, "cpu",
                                smoke=True, progress=False, max_steps=1)
    rd_weights = torch.load(warm, weights_only=True)["models"]["codec"]
    # after one step the codec moved away from, but started at, the rd weights (Adam's first step is ~lr)
    name = "g_a.0.weight"
    moved = (trainer.models["codec"].state_dict()[name].cpu() - rd_weights[name]).abs().max().item()
    assert 0 < moved <= 1e-4 * 1.01
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert set(state["models"]) == {"codec", "D"}
    assert {"adversarial", "D"} <= set(_rows(tmp_path)[0])


def test_warm_start_errors_name_the_checkpoint_and_the_fix(rd_run, photos, tmp_path):
    rd_dir, _ = rd_run
    warm = str(rd_dir / "checkpoints" / "last.pt")
    with pytest.raises(ValueError, match="is a hyperprior N=16 M=16 codec; this run builds factorized"):
        train_compression({"stage": "gan", "warm_start": warm, "model": "factorized"}, photos, tmp_path, "cpu",
                          smoke=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nope.pt: no such checkpoint; train stage rd first"):
        train_compression({"stage": "gan", "warm_start": str(tmp_path / "nope.pt")}, photos, tmp_path, "cpu",
                          smoke=True, progress=False)
    with pytest.raises(ValueError, match="set warm_start"):
        train_compression(CompressionConfig(stage="gan"), photos, tmp_path, "cpu", progress=False, max_steps=1)


def test_smoke_runs_take_max_steps(photos, tmp_path):
    assert train_compression({}, photos, tmp_path, "cpu", smoke=True, progress=False, max_steps=9).result.step == 9


def test_resume_continues_where_the_run_stopped(photos, tmp_path):
    tiny = {"N": 16, "M": 16, "crop_size": 64, "batch_size": 2, "steps": 6}  # the LR drops after step 4
    kw = dict(device="cpu", progress=False, num_workers=0, crops_per_epoch=8)
    first = train_compression(tiny, photos, tmp_path / "a", max_steps=3, **kw)  # stopped mid-way, as by Ctrl-C
    assert first.result.step == 3
    resumed = train_compression(tiny, photos, tmp_path / "a", **kw)
    straight = train_compression(tiny, photos, tmp_path / "b", **kw)
    assert resumed.result.step == straight.result.step == 6
    for (name, a), b in zip(resumed.models["codec"].state_dict().items(), straight.models["codec"].state_dict().values()):
        assert torch.equal(a, b), name


def test_cli_trains_in_smoke_mode_and_rejects_bad_settings(photos, tmp_path, capsys):
    assert gankit_main(["train", "compression", "--smoke", "--data", str(photos), "--run-dir", str(tmp_path / "run"),
                        "--no-progress", "--set", "model=factorized"]) == 0
    assert "gankit train compression: step 6" in capsys.readouterr().out
    assert load_codec(tmp_path / "run" / "checkpoints" / "last.pt").kind == 0
    assert gankit_main(["train", "compression", "--smoke", "--run-dir", str(tmp_path / "x"), "--set", "lmbda=-1"]) == 2
    assert "lmbda" in capsys.readouterr().err
    assert gankit_main(["train", "compression", "--smoke", "--data", str(photos), "--run-dir", str(tmp_path / "y"),
                        "--set", "stage=gan", "--set", f"warm_start={tmp_path / 'missing.pt'}"]) == 2
    assert "missing.pt: no such checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_ddp_gan_stage_under_torchrun(tmp_path):
    """Two CPU processes on gloo, as on a two-GPU server: codec and discriminator both DDP-wrapped."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", "29563", "-m", "gankit", "train",
                           "compression", "--smoke", "--data-dir", str(tmp_path / "d"), "--data", "kodak",
                           "--run-dir", str(tmp_path / "run"), "--no-progress", "--max-steps", "3",
                           "--set", "stage=gan"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("gankit train compression: step 3") == 1, "only rank 0 reports"
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and set(state["models"]) == {"codec", "D"}
    assert len((tmp_path / "run" / "losses.csv").read_text().splitlines()) == 1 + 3
