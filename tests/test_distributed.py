"""gankit.distributed and the DDP path of gankit.training.Trainer: two CPU processes on gloo.

One spawn of two processes runs, per rank: a straight DDP run, and a run that rank 1 alone asks to
stop with SIGTERM, then rebuilt from scratch and resumed. The parent compares them with each other
and with a single-process run on the full batch.
"""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from gankit import distributed
from gankit.distributed import (DistInfo, cleanup, gather_objects, init_distributed, is_main,
                                rank_and_world_size, sum_over_ranks, wrap_ddp)
from gankit.seeding import seed_everything
from gankit.training import Trainer, _EpochBatches

# 10 samples, 2 per process and step: global batches of 4, 4, 2, so 3 steps per epoch, 8 steps
# cross two epoch boundaries, and a stop after step 4 lands in the middle of epoch 1.
_DATA_RNG = torch.Generator().manual_seed(7)
DATASET = TensorDataset(torch.randn(10, 3, generator=_DATA_RNG), torch.randn(10, generator=_DATA_RNG))
WORLD, PER_RANK, TOTAL, STOP_AFTER = 2, 2, 8, 4
FIT = dict(drop_last=False, seed=3, checkpoint_every=2, sample_every=3)
NOISE_SEED = 100  # rank r draws its noise from seed 100 + r, as a GAN script seeds each rank


def build_model():
    seed_everything(0)  # identical init everywhere (DDP would broadcast rank 0's anyway)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def loss_of(model, x, noise, y):
    return F.mse_loss(model(x + 0.1 * noise).squeeze(1), y)


def csv_rows(run_dir):
    with open(Path(run_dir) / "losses.csv", newline="") as handle:
        return list(csv.reader(handle))


# ------------------------------------------------------------------------------ the workers
def _record_writes(log: list) -> None:
    """Wrap every way gankit.training writes files, logging the paths this process writes."""
    import gankit.training as training

    def wrap(fn, name):
        def recorded(*args, **kwargs):
            log.extend([name, str(a)] for a in args if isinstance(a, (str, os.PathLike)))
            return fn(*args, **kwargs)
        return recorded

    training.atomic_write = wrap(training.atomic_write, "atomic_write")
    training.atomic_write_text = wrap(training.atomic_write_text, "atomic_write_text")
    training._link_or_copy = wrap(training._link_or_copy, "link")

    def recording_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            log.append(["open", str(path)])
        return open(path, mode, *args, **kwargs)

    training.open = recording_open  # shadows the builtin inside gankit.training only


def _ddp_run(run_dir, info, *, max_steps, kill_at=None):
    """Build everything as a fresh process would, and fit; returns (trainer, model, result)."""
    model = wrap_ddp(build_model(), info)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    seed_everything(NOISE_SEED + info.rank)
    trainer = Trainer(run_dir, {"net": model}, {"net": opt}, device=info.device, precision="fp32",
                      progress=False, tensorboard=False, config={"toy": True})
    probe = torch.linspace(-1, 1, 12).reshape(4, 3)

    def step(batch):
        x, y = batch
        # each rank gets its share of the global batch: 2 of 4, and 1 of the epoch's last 2
        assert x.shape[0] == (1 if trainer.batch_in_epoch == 2 else PER_RANK)
        if kill_at is not None and info.rank == 1 and trainer.step == kill_at - 1:
            os.kill(os.getpid(), signal.SIGTERM)  # only rank 1 is asked to stop
        loss = loss_of(model, x, torch.randn_like(x), y)
        trainer.backward(loss, opt)
        return {"loss": loss}

    result = trainer.fit(DATASET, step, batch_size=PER_RANK, max_steps=max_steps,
                         sample_fn=lambda: model(probe).reshape(1, 1, 2, 2).tanh(), **FIT)
    return trainer, model, result


def _worker(rank: int, port: int, root: str) -> None:
    root = Path(root)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    info = init_distributed(device="cpu", timeout=timedelta(seconds=60))
    assert (info.rank, info.world_size, info.is_main, info.device) == (rank, WORLD, rank == 0, torch.device("cpu"))
    assert dist.get_backend() == "gloo" and is_main() == (rank == 0)
    assert init_distributed(device="cpu") == info, "a second call describes the same group"
    assert sum_over_ranks([1.0, float(rank)]) == [2.0, 1.0]
    assert gather_objects({"r": rank}) == [{"r": 0}, {"r": 1}]

    writes: list = []
    _record_writes(writes)
    report: dict = {}

    _, model, result = _ddp_run(root / "straight", info, max_steps=TOTAL)
    assert isinstance(model, nn.parallel.DistributedDataParallel)
    report["straight"] = [result.step, result.stopped_by]
    torch.save(model.module.state_dict(), root / f"straight_rank{rank}.pt")

    _, _, first = _ddp_run(root / "resumed", info, max_steps=TOTAL, kill_at=STOP_AFTER)
    report["interrupted"] = [first.step, first.epoch, first.stopped_by]
    random.random(), np.random.rand(), torch.randn(5)  # the process moves on; the checkpoint must not care
    _, model, result = _ddp_run(root / "resumed", info, max_steps=TOTAL)
    report["resumed"] = [result.step, result.stopped_by]
    torch.save(model.module.state_dict(), root / f"resumed_rank{rank}.pt")

    report["writes"] = writes
    (root / f"report_rank{rank}.json").write_text(json.dumps(report))
    cleanup()
    assert not dist.is_initialized()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(root)), nprocs=WORLD, join=True)
    reports = [json.loads((root / f"report_rank{r}.json").read_text()) for r in range(WORLD)]
    return root, reports


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The same training in one process on the full batch of 4, with each rank's noise stream."""
    run_dir = tmp_path_factory.mktemp("single")
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    noise_rngs = [torch.Generator().manual_seed(NOISE_SEED + r) for r in range(WORLD)]
    trainer = Trainer(run_dir, {"net": model}, {"net": opt}, device="cpu", precision="fp32",
                      progress=False, tensorboard=False)

    def step(batch):
        x, y = batch
        share = x.shape[0] // WORLD  # rank r held rows [r * share, (r + 1) * share) of this batch
        noise = torch.cat([torch.randn(share, 3, generator=g) for g in noise_rngs])
        loss = loss_of(model, x, noise, y)
        trainer.backward(loss, opt)
        return {"loss": loss}

    trainer.fit(DATASET, step, batch_size=PER_RANK * WORLD, max_steps=TOTAL, **FIT)
    return model.state_dict(), csv_rows(run_dir)


# ------------------------------------------------------------------------------ the checks
@pytest.mark.timeout(180)
def test_ranks_agree_and_match_one_process_on_the_full_batch(ddp_runs, single_process):
    root, reports = ddp_runs
    rank0, rank1 = (torch.load(root / f"straight_rank{r}.pt", weights_only=True) for r in range(WORLD))
    reference, reference_rows = single_process
    for key in reference:
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between ranks"
        torch.testing.assert_close(rank0[key], reference[key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(rank0["0.weight"], build_model().state_dict()["0.weight"]), "it trained"
    assert all(r["straight"] == [TOTAL, None] for r in reports)
    rows = csv_rows(root / "straight")
    assert [r[0] for r in rows[1:]] == [str(s) for s in range(1, TOTAL + 1)], "one row per step"
    # the logged loss is the mean over ranks, i.e. the loss of the full batch
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]],
                               [float(r[2]) for r in reference_rows[1:]], rtol=1e-5)


def test_only_rank_0_writes(ddp_runs):
    root, reports = ddp_runs
    assert reports[1]["writes"] == [], "rank 1 wrote files"
    written = {Path(path).name for _, path in reports[0]["writes"]}
    assert {"config.json", "losses.csv", "step_000002.pt", "last.pt", "step_000003.png"} <= written
    straight = root / "straight"
    assert sorted(p.name for p in (straight / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    ckpt = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == TOTAL and ckpt["world_size"] == WORLD and len(ckpt["rng_per_rank"]) == WORLD
    assert not any(k.startswith("module.") for k in ckpt["models"]["net"]), "saved unwrapped"


def test_a_signal_on_one_rank_stops_both_and_resume_is_exact(ddp_runs):
    root, reports = ddp_runs
    for report in reports:  # rank 0 never got the signal, yet stopped after the same step
        assert report["interrupted"] == [STOP_AFTER, 1, "SIGTERM"]
        assert report["resumed"] == [TOTAL, None]
    for rank in range(WORLD):
        straight = torch.load(root / f"straight_rank{rank}.pt", weights_only=True)
        resumed = torch.load(root / f"resumed_rank{rank}.pt", weights_only=True)
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), f"rank {rank}: {key} differs after resume"
    assert csv_rows(root / "resumed") == csv_rows(root / "straight")


# ------------------------------------------------------------------------------ no processes
def test_epoch_batches_split_the_global_batch():
    def batches(world_size, rank=0, epoch=0, skip=0):
        sampler = _EpochBatches(9, 4 // world_size, True, False, 5, rank=rank, world_size=world_size)
        sampler.set_epoch(epoch, skip=skip)
        assert sampler.num_batches == 3
        return list(sampler)

    for epoch in (0, 1):
        full = batches(1, epoch=epoch)
        assert [len(b) for b in full] == [4, 4, 1]
        part0, part1 = batches(2, 0, epoch), batches(2, 1, epoch)
        assert [a + b for a, b in zip(part0[:2], part1[:2])] == full[:2], "rank 0 first half, rank 1 second"
        # the short last batch is padded with the epoch's first sample: both ranks step once more
        assert part0[2] == full[2] and part1[2] == [full[0][0]]
        assert batches(2, 1, epoch, skip=1) == part1[1:], "skipping seen batches still works"
    assert batches(1, epoch=0) != batches(1, epoch=1)


def test_single_process_fallbacks(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed(device="cpu")
    assert info == DistInfo(0, 0, 1, torch.device("cpu"), True) and not info.distributed
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model
    assert rank_and_world_size() == (0, 1) and is_main()
    assert sum_over_ranks([1.5]) == [1.5] and gather_objects("x") == ["x"]
    distributed.barrier()
    cleanup()  # no group: nothing to do, no error
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed(device="cpu")
