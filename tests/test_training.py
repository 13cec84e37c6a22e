"""gankit.training: run directory, exact resume, signals, precision helpers."""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from gankit.seeding import seed_everything
from gankit.training import MixedPrecision, Trainer, resolve_precision

# 10 samples, batches of 4 without drop_last: 3 batches per epoch (4, 4, 2), so 8 steps cross
# two epoch boundaries and a stop at step 4 or 5 lands in the middle of epoch 1.
_DATA_RNG = torch.Generator().manual_seed(7)
DATASET = TensorDataset(torch.randn(10, 3, generator=_DATA_RNG), torch.randn(10, generator=_DATA_RNG))
FIT = dict(batch_size=4, drop_last=False, seed=3)
TOTAL = 8


def build(run_dir, **trainer_kwargs):
    """A small model touching every kind of state: BN buffers, dropout, Adam, a scheduler, all three RNGs."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    options = dict(device="cpu", precision="fp32", schedulers={"net": sched}, scheduler_interval="step",
                   config={"lr": 1e-2, "name": "toy"}, progress=False)
    trainer = Trainer(run_dir, {"net": model}, {"net": opt}, **{**options, **trainer_kwargs})

    def step(batch):
        x, y = batch
        x = x + 0.01 * torch.randn_like(x) + random.random() * 1e-3 + float(np.random.rand()) * 1e-3
        with trainer.autocast():
            loss = F.mse_loss(model(x).squeeze(1), y)
        trainer.backward(loss, opt)
        return {"loss": loss, "x_mean": float(x.mean())}

    return trainer, model, opt, step


def csv_rows(run_dir):
    with open(run_dir / "losses.csv", newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: TOTAL steps without interruption."""
    run_dir = tmp_path_factory.mktemp("straight")
    trainer, model, opt, step = build(run_dir)
    result = trainer.fit(DATASET, step, max_steps=TOTAL, **FIT)
    assert result.step == TOTAL and result.stopped_by is None
    return model.state_dict(), opt.state_dict(), csv_rows(run_dir)


def assert_same_as(straight, model, opt, run_dir):
    ref_model, ref_opt, ref_rows = straight
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref_model[key]), key
    for index, state in opt.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], ref_opt["state"][index]["exp_avg"])
    rows = csv_rows(run_dir)
    assert [r[0] for r in rows[1:]] == [str(s) for s in range(1, TOTAL + 1)], "one row per step, no duplicates"
    assert rows == ref_rows, "the resumed run logs exactly the losses of the straight run"


def test_resume_is_bit_identical(straight, tmp_path):
    trainer, _, _, step = build(tmp_path)
    first = trainer.fit(DATASET, step, max_steps=TOTAL // 2, **FIT)
    assert first.step == TOTAL // 2 and (tmp_path / "checkpoints" / "last.pt").exists()
    random.random(), np.random.rand(), torch.randn(3)  # the process moves on; the checkpoint must not care
    trainer, model, opt, step = build(tmp_path)  # everything rebuilt, as in a new process
    result = trainer.fit(DATASET, step, max_steps=TOTAL, **FIT)
    assert result.step == TOTAL and result.epoch == TOTAL // 3
    assert_same_as(straight, model, opt, tmp_path)


def test_crash_then_resume_drops_rows_after_the_checkpoint(straight, tmp_path):
    trainer, _, _, step = build(tmp_path)

    def crashing(batch):
        if trainer.step == 5:
            raise RuntimeError("power cut")
        return step(batch)

    with pytest.raises(RuntimeError, match="power cut"):
        trainer.fit(DATASET, crashing, max_steps=TOTAL, checkpoint_every=2, **FIT)
    assert [r[0] for r in csv_rows(tmp_path)[1:]] == ["1", "2", "3", "4", "5"]
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    trainer, model, opt, step = build(tmp_path)
    trainer.fit(DATASET, step, max_steps=TOTAL, checkpoint_every=2, **FIT)
    assert_same_as(straight, model, opt, tmp_path)


def test_sigterm_finishes_the_step_saves_and_returns(straight, tmp_path):
    sentinel = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, sentinel)
    try:
        trainer, _, _, step = build(tmp_path)
        calls = []

        def step_with_kill(batch):
            calls.append(trainer.step)
            if trainer.step == 4:  # the fifth step asks the process to stop, then completes
                os.kill(os.getpid(), signal.SIGTERM)
            return step(batch)

        result = trainer.fit(DATASET, step_with_kill, max_steps=TOTAL, checkpoint_every=100, **FIT)
        assert signal.getsignal(signal.SIGTERM) is sentinel, "the previous handler is restored"
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.stopped_by == "SIGTERM" and result.step == 5 and calls == [0, 1, 2, 3, 4]
    assert (tmp_path / "checkpoints" / "step_000005.pt").exists()
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["step"], status["total_steps"], status["checkpoint_step"]) == ("stopped", 5, 8, 5)
    assert torch.load(result.checkpoint, weights_only=True)["step"] == 5
    trainer, model, opt, step = build(tmp_path)
    assert trainer.fit(DATASET, step, max_steps=TOTAL, **FIT).stopped_by is None
    assert_same_as(straight, model, opt, tmp_path)


def test_run_directory_layout(tmp_path):
    trainer, _, _, step = build(tmp_path, keep_last=2)
    sample_fn = lambda: torch.linspace(-1, 1, 6 * 3 * 5 * 7).reshape(6, 3, 5, 7)  # noqa: E731
    result = trainer.fit(DATASET, step, max_steps=5, checkpoint_every=1, sample_fn=sample_fn,
                         sample_every=2, **FIT)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_000004.pt", "step_000005.pt"]
    assert result.checkpoint == tmp_path / "checkpoints" / "last.pt"
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["step"] == 5 and (ckpt["epoch"], ckpt["batch_in_epoch"]) == (1, 2)
    assert set(ckpt) >= {"models", "optimizers", "schedulers", "scaler", "rng", "config"}
    assert ckpt["config"] == {"lr": 1e-2, "name": "toy"}
    assert json.loads((tmp_path / "config.json").read_text()) == ckpt["config"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    with Image.open(tmp_path / "samples" / "step_000004.png") as image:  # 3 x 2 grid of 5 x 7 images, padding 2
        assert image.size == (3 * (7 + 2) + 2, 2 * (5 + 2) + 2)
    rows = csv_rows(tmp_path)
    assert rows[0] == ["step", "epoch", "loss", "x_mean"] and len(rows) == 6
    assert all(np.isfinite(float(r[2])) for r in rows[1:])
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["step"], status["total_steps"], status["epoch"]) == ("finished", 5, 5, 1)
    assert status["losses"]["loss"] == pytest.approx(float(rows[-1][2]))
    assert status["latest_sample"] == "step_000004.png" and status["eta_s"] is None
    assert status["steps_per_second"] > 0 and status["pid"] == os.getpid()


def test_status_while_running_and_after_a_crash(tmp_path):
    trainer, _, _, step = build(tmp_path, status_every_s=0.0)  # rewritten after every step
    seen = []

    def step_then_read(batch):
        if trainer.step == 3:
            raise RuntimeError("CUDA out of memory (pretend)")
        losses = step(batch)
        seen.append(json.loads((tmp_path / "status.json").read_text()))
        return losses

    with pytest.raises(RuntimeError, match="pretend"):
        trainer.fit(DATASET, step_then_read, max_steps=TOTAL, **FIT)
    # status.json is written after the step that read it: the reader sees the previous step
    assert [s["step"] for s in seen] == [0, 1, 2] and all(s["state"] == "running" for s in seen)
    assert seen[2]["eta_s"] == pytest.approx((TOTAL - 2) / seen[2]["steps_per_second"])
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == 3
    assert status["error"] == "RuntimeError: CUDA out of memory (pretend)"


def test_no_resume_starts_over(tmp_path):
    trainer, _, _, step = build(tmp_path)
    trainer.fit(DATASET, step, max_steps=6, checkpoint_every=1, **FIT)
    trainer, _, _, step = build(tmp_path)
    result = trainer.fit(DATASET, step, max_steps=2, resume=False, checkpoint_every=100, **FIT)
    assert result.step == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "step_000002.pt"]
    assert [r[0] for r in csv_rows(tmp_path)] == ["step", "1", "2"]


def test_epochs_and_epoch_schedulers(tmp_path):
    trainer, _, opt, step = build(tmp_path, scheduler_interval="epoch")
    result = trainer.fit(DATASET, step, epochs=2, **FIT)
    assert (result.step, result.epoch) == (6, 2)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.9**2)
    again = trainer.fit(DATASET, step, epochs=2, **FIT)  # already done: resumes and stops at once
    assert (again.step, again.epoch) == (6, 2)


def test_non_finite_loss_stops_the_run(tmp_path):
    trainer, _, _, _ = build(tmp_path, schedulers={})
    with pytest.raises(FloatingPointError, match="step 1"):
        trainer.fit(DATASET, lambda batch: {"loss": float("nan")}, max_steps=3, **FIT)


def test_fit_outside_the_main_thread_skips_signal_handlers(tmp_path):
    trainer, _, _, step = build(tmp_path)
    before = signal.getsignal(signal.SIGINT)
    results = []
    thread = threading.Thread(target=lambda: results.append(trainer.fit(DATASET, step, max_steps=2, **FIT)))
    thread.start()
    thread.join(30)
    assert results and results[0].step == 2
    assert signal.getsignal(signal.SIGINT) is before


def test_resolve_precision(monkeypatch):
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half", "cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # V100
    assert resolve_precision("auto", "cuda:0") == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100
    assert resolve_precision("auto", "cuda:1") == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_mixed_precision_steps_two_optimizers(precision):
    torch.manual_seed(0)
    amp = MixedPrecision("cpu", precision)
    assert amp.scaler.is_enabled() == (precision == "fp16")
    first, second = nn.Linear(4, 4), nn.Linear(4, 1)
    opt1, opt2 = torch.optim.SGD(first.parameters(), lr=0.1), torch.optim.SGD(second.parameters(), lr=0.1)
    before = [p.detach().clone() for p in [*first.parameters(), *second.parameters()]]
    x = torch.randn(8, 4)
    for _ in range(3):  # two losses, two optimizers per iteration, as in a GAN step
        with amp.autocast():
            hidden = first(x)
            out = second(hidden.detach())
        assert hidden.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        amp.backward(out.float().pow(2).mean(), opt2)
        with amp.autocast():
            loss = second(first(x)).float().pow(2).mean()
        amp.backward(loss, opt1, clip_grad_norm=1.0)
    after = [*first.parameters(), *second.parameters()]
    assert all(torch.isfinite(p).all() for p in after)
    assert all(not torch.equal(a, b) for a, b in zip(before, after)), "every parameter moved"
