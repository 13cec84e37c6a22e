"""Data-parallel training on several GPUs of one machine, launched with ``torchrun``.

One process per GPU; each holds a full copy of the models, reads its own shard of every batch,
and DistributedDataParallel (DDP) averages the gradients, so two GPUs with ``batch_size=32`` each
train like one GPU with batch 64. ``gankit.training.Trainer`` notices an initialised process
group by itself: it shards the batches, averages the logged losses over processes, and lets
only rank 0 write checkpoints, ``losses.csv``, samples and the progress bar. A script::

    info = init_distributed()                         # no-op without torchrun
    seed_everything(SEED + info.rank)                 # different noise on every GPU
    G, D = wrap_ddp(build_G(), info), wrap_ddp(build_D(), info)   # rank 0's init is broadcast
    trainer = Trainer(run_dir, {"G": G, "D": D}, optimizers, device=info.device)
    trainer.fit(dataset, step, batch_size=32, ...)    # 32 per process
    cleanup()

run as ``torchrun --standalone --nproc_per_node 2 train.py`` (or plain ``python train.py`` on
one device: the same script). ``run_dir`` must be on a file system every process sees.

GAN notes: step every DDP-wrapped model on every rank in the same order; a model used several
times per step (D on real and on fake) is best called once on the concatenated batch. If
BatchNorm buffers trip "modified by an inplace operation" errors, pass
``broadcast_buffers=False`` to :func:`wrap_ddp`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes
    ----------
    rank : int
        0 .. world_size - 1, unique over the job.
    local_rank : int
        Index on this machine; picks the GPU.
    world_size : int
        Number of processes (1 without torchrun).
    device : torch.device
        This process's device (``cuda:<local_rank>`` under torchrun on GPUs).
    is_main : bool
        ``rank == 0``: the process that writes files and prints.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except KeyError:
        raise RuntimeError(f"WORLD_SIZE is set but {name} is not: launch with torchrun, "
                           "which sets RANK, LOCAL_RANK and WORLD_SIZE together") from None


def init_distributed(device: str | torch.device | None = "auto", backend: str | None = None,
                     timeout: timedelta | None = None) -> DistInfo:
    """Join the process group torchrun set up, or describe the single process when there is none.

    Parameters
    ----------
    device : str or torch.device, optional
        ``"auto"``: under torchrun ``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``;
        without torchrun ``gankit.pick_device("auto")``. ``"cpu"`` forces CPU processes (gloo).
    backend : str, optional
        Default ``"nccl"`` for CUDA devices, ``"gloo"`` for CPU.
    timeout : timedelta, optional
        How long collectives wait for a missing peer before failing (torch's default: 10 min).

    Returns
    -------
    DistInfo
        With ``world_size == 1`` (and no process group) when ``WORLD_SIZE`` is unset or 1.
        Calling it again returns the same description without re-initialising.

    Raises
    ------
    RuntimeError
        If torchrun's variables are inconsistent, or there are fewer GPUs than processes.
    """
    from gankit.device import pick_device

    if dist.is_available() and dist.is_initialized():  # already joined (a second call, or by hand)
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    else:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return DistInfo(0, 0, 1, pick_device(device or "auto"), True)
        _env_int("RANK")
        local_rank = _env_int("LOCAL_RANK")
    wanted = str(device or "auto")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(wanted)
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) "
                               "are visible: use --nproc_per_node <= the number of GPUs")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)  # collectives and bare .cuda() calls use this GPU
    elif chosen.type != "cpu":
        raise RuntimeError(f"distributed training supports cuda and cpu devices, not {chosen}")
    if not dist.is_initialized():  # reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (env://)
        options: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        if chosen.type == "cuda":
            options["device_id"] = chosen  # binds NCCL to this GPU at once (no device guessing)
        dist.init_process_group(backend or ("nccl" if chosen.type == "cuda" else "gloo"), **options)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, local_rank, world_size, chosen, rank == 0)


def wrap_ddp(model: nn.Module, info: DistInfo, **ddp_kwargs: Any) -> nn.Module:
    """Move ``model`` to ``info.device`` and wrap it in DistributedDataParallel when distributed.

    Without a process group the model is only moved, so the same script runs on one device.
    Build the optimizer from the returned module's parameters (the same tensors either way).
    Checkpoints written by ``Trainer`` hold the inner module's state dict, loadable without DDP.

    Parameters
    ----------
    model : nn.Module
    info : DistInfo
        From :func:`init_distributed`.
    **ddp_kwargs
        Passed to ``DistributedDataParallel`` (e.g. ``broadcast_buffers=False``,
        ``find_unused_parameters=True``).
    """
    model = model.to(info.device)
    if not (info.distributed and dist.is_initialized()):
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0, and always in a single process: the one that writes files and prints."""
    return rank_and_world_size()[0] == 0


def barrier() -> None:
    """Wait until every process gets here; nothing to do in a single process."""
    if rank_and_world_size()[1] > 1:
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (every rank must pass the same length)."""
    if rank_and_world_size()[1] == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every process, in rank order (picklable objects; a list of one without DDP)."""
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def cleanup() -> None:
    """Leave the process group (at the end of a script); nothing to do without one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
