"""A small, explicit training loop shared by every paper recipe.

A recipe builds its models and optimizers, writes ``step(batch) -> {"d_loss": ..., ...}`` and
hands both to :class:`Trainer`, which owns the boring parts: the run directory, atomic and
resumable checkpoints, mixed precision, the progress bar, ``losses.csv``, sample grids and a
clean stop on Ctrl-C / SIGTERM. Run directory layout::

    run_dir/config.json  losses.csv  status.json  checkpoints/{step_000500.pt, last.pt}  samples/step_000500.png

``status.json`` (rewritten atomically every few seconds) says how far the run is: its state
(running, finished, stopped, aborted, failed), step of total, the latest losses, the speed and an
ETA. ``gankit runs`` and :func:`gankit.runs.show_run` read it, so a run can be watched from
another shell or a notebook without touching the process.

Resuming is exact: a run stopped at step k and resumed gives bit-identical weights on CPU to a
run that never stopped (tests/test_training.py checks it), because the checkpoint holds every RNG
state and the data order is a function of (seed, epoch) that can skip the batches already seen.
On a GPU that also needs deterministic kernels (``seed_everything(seed, deterministic=True)``).
With ``num_workers > 0`` it holds as long as the dataset itself draws no random numbers.

Under DistributedDataParallel (``torchrun``, see :mod:`gankit.distributed`) ``batch_size`` is per
process: each global batch of the (seed, epoch) order is split between the ranks, losses are
averaged over ranks before logging, only rank 0 writes files, and every rank resumes from the same
checkpoint with its own RNG state.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from gankit.distributed import barrier, gather_objects, rank_and_world_size, sum_over_ranks
from gankit.io import atomic_write, atomic_write_text

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """Turn ``"auto"`` into ``"bf16"`` (Ampere+ GPUs), ``"fp16"`` (older GPUs, e.g. V100) or ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    # Not torch.cuda.is_bf16_supported(): it says True on a V100 too (slow emulation).
    return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"


class MixedPrecision:
    """Autocast plus, for fp16, a ``GradScaler``; the two helpers a GAN step needs.

    Parameters
    ----------
    device : str or torch.device
        Where the step runs (its type picks the autocast backend).
    precision : {"auto", "fp32", "bf16", "fp16"}
        See :func:`resolve_precision`.
    """

    def __init__(self, device: str | torch.device, precision: str = "auto") -> None:
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for the forward pass; compute losses from ``.float()`` logits inside or after it."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None, *,
                 clip_grad_norm: float | None = None, retain_graph: bool = False) -> None:
        """Zero ``optimizer``'s grads, backpropagate the (scaled) loss, and step ``optimizer``.

        Without ``optimizer`` only the backward pass runs (gradient accumulation); then call
        :meth:`step_optimizer` yourself.
        """
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(retain_graph=retain_graph)
        if optimizer is not None:
            self.step_optimizer(optimizer, clip_grad_norm=clip_grad_norm)

    def step_optimizer(self, optimizer: torch.optim.Optimizer, *, clip_grad_norm: float | None = None) -> None:
        """Unscale, optionally clip, step (skipped by the scaler on inf/NaN grads) and update the scale.

        The scale is updated after every optimizer step, so two optimizers per iteration (D, then
        G) or several critic steps (WGAN) all work.
        """
        if clip_grad_norm is not None:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, clip_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: where it stopped and why."""

    step: int
    epoch: int
    stopped_by: str | None  # "SIGINT" / "SIGTERM" when a signal ended the run early, else None
    checkpoint: Path | None
    run_dir: Path


class Trainer:
    """Run directory, checkpoints, precision, logging and signals around a user ``step`` function.

    Parameters
    ----------
    run_dir : str or Path
        Created if missing. See the module docstring for its layout.
    models, optimizers : dict of str -> nn.Module / Optimizer
        Everything that is checkpointed. Models are moved to ``device`` (build optimizers after
        moving models yourself if you want to be explicit; ``.to`` keeps parameters identical).
    device : str or torch.device
        Chosen by the caller, e.g. ``gankit.pick_device("auto")``.
    precision : {"auto", "fp32", "bf16", "fp16"}
    schedulers : dict of str -> LR scheduler, optional
        Stepped by the trainer once per epoch or once per step (``scheduler_interval``).
    config : dict or dataclass, optional
        Written to ``config.json`` and into every checkpoint.
    keep_last : int
        Numbered checkpoints to keep besides ``last.pt`` (0: only ``last.pt``).
    channels_last : bool
        Put models and 4-D batch tensors in channels-last memory format (faster convs on GPUs).
    progress : bool
        Show a tqdm bar with the latest losses.
    tensorboard : bool
        Also write scalars to ``run_dir/tensorboard`` when ``torch.utils.tensorboard`` imports.
    extra_state : dict of str -> object with ``state_dict()`` / ``load_state_dict()``, optional
        Checkpointed too (per process under DDP), e.g. CycleGAN's pools of past fakes.
    status_every_s : float
        Rewrite ``status.json`` at most this often (and always at the start and the end).
    """

    def __init__(self, run_dir: str | os.PathLike, models: Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer], *, device: str | torch.device = "cpu",
                 precision: str = "auto", schedulers: Mapping[str, Any] | None = None,
                 scheduler_interval: str = "epoch", config: Any = None, keep_last: int = 3,
                 channels_last: bool = False, progress: bool = True, tensorboard: bool = True,
                 extra_state: Mapping[str, Any] | None = None, status_every_s: float = 5.0) -> None:
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.models, self.optimizers = dict(models), dict(optimizers)
        self.schedulers, self.scheduler_interval = dict(schedulers or {}), scheduler_interval
        self.extra_state = dict(extra_state or {})  # anything else with state_dict/load_state_dict
        self.amp = MixedPrecision(self.device, precision)
        self.config = _plain(config)
        self.keep_last, self.channels_last = keep_last, channels_last
        self.progress, self.tensorboard = progress, tensorboard
        self.checkpoint_dir, self.samples_dir = self.run_dir / "checkpoints", self.run_dir / "samples"
        self.csv_path = self.run_dir / "losses.csv"
        self.status_path, self.status_every_s = self.run_dir / "status.json", status_every_s
        self.step = self.epoch = self.batch_in_epoch = 0  # completed steps; batches done in this epoch
        self._saved_step: int | None = None
        self._stop_signal: str | None = None
        self._signal_seen: str | None = None  # under DDP: a signal this rank got, not yet agreed on
        self._csv_fields: list[str] | None = None
        self.result: FitResult | None = None  # what the last fit() returned
        for model in self.models.values():
            model.to(self.device)
            if channels_last:
                model.to(memory_format=torch.channels_last)

    # --- helpers for the step function ----------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """See :meth:`MixedPrecision.autocast`."""
        return self.amp.autocast()

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        """See :meth:`MixedPrecision.backward`."""
        self.amp.backward(loss, optimizer, **kwargs)

    def step_optimizer(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> None:
        """See :meth:`MixedPrecision.step_optimizer`."""
        self.amp.step_optimizer(optimizer, **kwargs)

    # --- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_NNNNNN.pt`` and ``last.pt`` atomically; prune to ``keep_last``.

        Under DDP every rank must call it (it gathers each rank's RNG state); rank 0 writes.
        """
        rank, world_size = rank_and_world_size()
        rngs = gather_objects(_rng_state())  # one per rank: each resumes its own random stream
        state = {
            "format": 1, "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "models": {k: _unwrap(m).state_dict() for k, m in self.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.amp.scaler.state_dict(), "precision": self.amp.precision,
            "rng": rngs[0], "config": self.config,
        }
        if self.extra_state:  # per rank, like the RNG: each process has its own (e.g. image pools)
            state["extra"] = gather_objects({k: obj.state_dict() for k, obj in self.extra_state.items()})
        if world_size > 1:
            state.update(rng_per_rank=rngs, world_size=world_size)
        last = self.checkpoint_dir / "last.pt"
        path = self.checkpoint_dir / f"step_{self.step:06d}.pt" if self.keep_last > 0 else last
        if rank == 0:
            with atomic_write(path, "wb") as handle:
                torch.save(state, handle)
            if path != last:
                _link_or_copy(path, last)
                for old in _numbered_checkpoints(self.checkpoint_dir)[: -self.keep_last]:
                    old.unlink(missing_ok=True)
        barrier()  # no rank reads last.pt (or returns it) before rank 0 has finished writing it
        self._saved_step = self.step
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> dict:
        """Restore models, optimizers, schedulers, scaler, counters and RNG states from ``path``."""
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        try:
            for key, model in self.models.items():
                _unwrap(model).load_state_dict(ckpt["models"][key])
            for key, optimizer in self.optimizers.items():
                optimizer.load_state_dict(ckpt["optimizers"][key])
            for key, scheduler in self.schedulers.items():
                scheduler.load_state_dict(ckpt["schedulers"][key])
        except (KeyError, RuntimeError, ValueError) as err:
            raise RuntimeError(f"{path} does not match this run ({err!r}); "
                               "use a new run_dir or resume=False") from err
        extra = ckpt.get("extra") or []
        for key, obj in self.extra_state.items():
            mine = extra[rank_and_world_size()[0]] if rank_and_world_size()[0] < len(extra) else (extra[0] if extra else None)
            if mine is None or key not in mine:
                raise RuntimeError(f"{path} has no saved state for {key!r}; use a new run_dir or resume=False")
            obj.load_state_dict(mine[key])
        if ckpt["scaler"] and self.amp.scaler.is_enabled():
            self.amp.scaler.load_state_dict(ckpt["scaler"])
        rank, world_size = rank_and_world_size()
        per_rank = ckpt.get("rng_per_rank") or [ckpt["rng"]]
        _set_rng_state(per_rank[rank] if rank < len(per_rank) else ckpt["rng"])
        if ckpt.get("world_size", 1) != world_size and rank == 0:
            tqdm.write(f"gankit: note: {path} was written by {ckpt.get('world_size', 1)} process(es), "
                       f"this run has {world_size}: the data order after it differs from the original run")
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        self._saved_step = self.step
        if ckpt.get("config") != self.config and rank == 0:
            tqdm.write(f"gankit: note: the config differs from the one in {path}")
        return ckpt

    def save_samples(self, sample_fn: Callable[[], torch.Tensor], nrow: int | None = None) -> Path:
        """Save ``sample_fn()`` (B, C, H, W) in [-1, 1] as ``samples/step_NNNNNN.png``.

        ``nrow`` images per grid row (default: a square grid).

        Under DDP every rank calls ``sample_fn`` (a DDP forward may need all ranks); rank 0 writes.
        """
        from torchvision.utils import save_image  # importing torchvision takes seconds: only when needed

        with torch.no_grad():
            images = sample_fn().detach().float().cpu()
        path = self.samples_dir / f"step_{self.step:06d}.png"
        if rank_and_world_size()[0] != 0:
            return path
        with atomic_write(path, "wb") as handle:
            save_image((images.clamp(-1, 1) + 1) / 2, handle, format="png",
                       nrow=nrow or max(1, math.ceil(math.sqrt(images.shape[0]))))
        return path

    # --- the loop --------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, step_fn: Callable[[Any], Mapping[str, Any]], *, batch_size: int,
            epochs: int | None = None, max_steps: int | None = None, shuffle: bool = True,
            drop_last: bool = True, num_workers: int = 0, seed: int = 0, resume: bool = True,
            sample_fn: Callable[[], torch.Tensor] | None = None, sample_every: int = 500, sample_nrow: int | None = None,
            checkpoint_every: int = 1000, log_every: int = 1, stop_on_nan: bool = True) -> FitResult:
        """Call ``step_fn(batch)`` until ``epochs`` epochs or ``max_steps`` total steps are done.

        ``batch`` is what the DataLoader yields, already on the device. ``step_fn`` returns a dict
        of float (or 0-d tensor) losses. ``resume=True`` continues from ``checkpoints/last.pt``
        if there is one; ``resume=False`` deletes old checkpoints and ``losses.csv`` and starts
        over. A checkpoint is saved every ``checkpoint_every`` steps, at the end, and when SIGINT
        or SIGTERM asks to stop (after the current step). A second Ctrl-C aborts at once.

        Under DDP (an initialised ``torch.distributed`` process group) ``batch_size`` is per
        process, ``step_fn`` must return the same keys on every rank (they are averaged over
        ranks), and a signal seen by any rank stops all of them after the same step.
        """
        if epochs is None and max_steps is None:
            raise ValueError("give epochs or max_steps")
        rank, world_size = rank_and_world_size()
        main = rank == 0
        self._start(resume)
        batches = _EpochBatches(len(dataset), batch_size, shuffle, drop_last, seed, rank, world_size)
        if batches.num_batches == 0:
            raise ValueError(f"{len(dataset)} samples make no batch of {batch_size} x {world_size} "
                             f"process(es) (drop_last={drop_last})")
        loader_rng = torch.Generator()  # DataLoader draws worker seeds from it, not the global RNG
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, generator=loader_rng,
                            pin_memory=self.device.type == "cuda",
                            worker_init_fn=_ignore_stop_signals if num_workers else None)
        totals = [t for t in (max_steps, epochs and epochs * batches.num_batches) if t is not None]
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
        total_steps = min(totals)
        speed = _Speed(self.step)
        if main:
            self._write_status("running", total_steps, {}, speed)
        bar = tqdm(total=total_steps, initial=self.step, disable=not (self.progress and main), dynamic_ncols=True,
                   mininterval=0.1 if interactive else 30.0, desc=self.run_dir.name)
        writer, csv_file = (self._open_tensorboard(), self._open_csv()) if main else (None, None)
        previous = self._install_handlers()
        for model in self.models.values():
            model.train()
        losses: dict[str, float] = {}
        try:
            while not ((max_steps is not None and self.step >= max_steps)
                       or (epochs is not None and self.epoch >= epochs)):
                batches.set_epoch(self.epoch, skip=self.batch_in_epoch)
                # rank << 40: each rank's workers get their own seeds (rank 0 keeps the 1-process ones)
                loader_rng.manual_seed(_epoch_seed(seed, self.epoch) + 1 + (rank << 40))
                for batch in loader:
                    losses = step_fn(self._to_device(batch))
                    losses = {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in losses.items()}
                    if world_size > 1:
                        losses = self._agree_across_ranks(losses, world_size)
                    self.step, self.batch_in_epoch = self.step + 1, self.batch_in_epoch + 1
                    if self.scheduler_interval == "step":
                        for scheduler in self.schedulers.values():
                            scheduler.step()
                    if self.step % log_every == 0 and main:
                        self._log(losses, csv_file, writer)
                    if main and speed.seconds_since_status() >= self.status_every_s:
                        self._write_status("running", total_steps, losses, speed)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
                    bar.update(1)
                    if stop_on_nan and not all(math.isfinite(v) for v in losses.values()):
                        raise FloatingPointError(f"non-finite loss at step {self.step}: {losses}; "
                                                 f"last checkpoint: {self.checkpoint_dir / 'last.pt'}")
                    if sample_fn is not None and sample_every and self.step % sample_every == 0:
                        self.save_samples(sample_fn, sample_nrow)
                    if self._stop_signal:
                        if main:
                            tqdm.write(f"gankit: got {self._stop_signal} at step {self.step}; saving a checkpoint")
                        break
                    if max_steps is not None and self.step >= max_steps:
                        break
                    if checkpoint_every and self.step % checkpoint_every == 0:
                        self.save_checkpoint()
                if self.batch_in_epoch >= batches.num_batches:  # the epoch is complete
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.scheduler_interval == "epoch":
                        for scheduler in self.schedulers.values():
                            scheduler.step()
                if self._stop_signal:
                    break
            if self._saved_step != self.step:
                self.save_checkpoint()
        except BaseException as err:
            if main:  # the run folder says how it ended even when the traceback scrolls away
                state = "aborted" if isinstance(err, KeyboardInterrupt) else "failed"
                self._write_status(state, total_steps, losses, speed,
                                   error=f"{type(err).__name__}: {err}")
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            bar.close()
            if csv_file is not None:
                csv_file.close()
            if writer is not None:
                writer.close()
        last = self.checkpoint_dir / "last.pt"
        if main:
            self._write_status("stopped" if self._stop_signal else "finished", total_steps,
                               losses, speed)
        self.result = FitResult(self.step, self.epoch, self._stop_signal, last if last.exists() else None,
                                self.run_dir)
        return self.result

    # --- internals -------------------------------------------------------------------------------
    def _start(self, resume: bool) -> None:
        """Make the run dir, resume or clear old checkpoints, drop CSV rows past the start step.

        Under DDP every rank loads the same checkpoint; only rank 0 touches files.
        """
        main = rank_and_world_size()[0] == 0
        if main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.step = self.epoch = self.batch_in_epoch = 0
        self._saved_step, self._stop_signal, self._signal_seen = None, None, None
        found = _numbered_checkpoints(self.checkpoint_dir)
        last = self.checkpoint_dir / "last.pt"
        if resume and (last.exists() or found):
            path = last if last.exists() else found[-1]
            self.load_checkpoint(path)
            if main:
                tqdm.write(f"gankit: resumed {self.run_dir} at step {self.step} from {path.name}")
        elif main and not resume and (last.exists() or found):
            for old in [*found, last]:
                old.unlink(missing_ok=True)
            tqdm.write(f"gankit: resume=False: removed old checkpoints in {self.checkpoint_dir}")
        if main:
            self._write_config_and_trim_csv()
        barrier()  # every rank has read the checkpoint before rank 0 may replace it

    def _write_config_and_trim_csv(self) -> None:
        atomic_write_text(self.run_dir / "config.json", json.dumps(self.config, indent=2) + "\n")
        if self.csv_path.exists():
            with open(self.csv_path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            keep = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= self.step]
            if keep != rows:
                with atomic_write(self.csv_path, "w") as handle:
                    csv.writer(handle, lineterminator="\n").writerows(keep if len(keep) > 1 else [])

    def _agree_across_ranks(self, losses: dict[str, float], world_size: int) -> dict[str, float]:
        """Average the losses over ranks and share stop requests, in one collective per step.

        After it every rank holds the same losses (so a NaN stops all of them) and the same
        ``_stop_signal``, so all leave the loop after the same step and save together.
        """
        flags = [float(self._signal_seen == "SIGINT"), float(self._signal_seen == "SIGTERM")]
        total = sum_over_ranks(flags + list(losses.values()))
        if total[0] or total[1]:
            self._stop_signal = "SIGTERM" if total[1] else "SIGINT"
        return {k: v / world_size for k, v in zip(losses, total[2:])}

    def _open_csv(self):
        handle = open(self.csv_path, "a", newline="", encoding="utf-8")  # appends; flushed every row
        self._csv_fields = None
        if handle.tell() > 0:
            with open(self.csv_path, newline="", encoding="utf-8") as existing:
                self._csv_fields = next(csv.reader(existing), None)
        return handle

    def _log(self, losses: dict[str, float], csv_file, writer) -> None:
        if self._csv_fields is None:
            self._csv_fields = ["step", "epoch", *losses]
            csv.writer(csv_file, lineterminator="\n").writerow(self._csv_fields)
        row = {"step": self.step, "epoch": self.epoch, **losses}
        csv.writer(csv_file, lineterminator="\n").writerow([row.get(k, "") for k in self._csv_fields])
        csv_file.flush()
        if writer is not None:
            for key, value in losses.items():
                writer.add_scalar(key, value, self.step)

    def _write_status(self, state: str, total_steps: int, losses: Mapping[str, float], speed: "_Speed",
                      error: str | None = None) -> None:
        """Rewrite ``status.json``: what ``gankit runs`` shows without asking the process."""
        rate = speed.steps_per_second(self.step)
        samples = sorted(self.samples_dir.glob("step_*.png")) if self.samples_dir.is_dir() else []
        status = {
            "state": state, "step": self.step, "total_steps": total_steps, "epoch": self.epoch,
            "losses": dict(losses), "steps_per_second": rate,
            "eta_s": (total_steps - self.step) / rate if rate and state == "running" else None,
            "checkpoint_step": self._saved_step, "latest_sample": samples[-1].name if samples else None,
            "pid": os.getpid(), "updated": time.time(), "error": error,
        }
        with contextlib.suppress(OSError):  # a full disk must not kill the run over a status file
            atomic_write_text(self.status_path, json.dumps(status, indent=1) + "\n")
        speed.status_written()

    def _open_tensorboard(self):
        if not self.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # optional: not installed, or a broken install
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1)

    def _install_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be installed from the main thread
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: Any) -> None:
        if (self._stop_signal or self._signal_seen) is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, no checkpoint
        name = signal.Signals(signum).name  # no printing here: stderr may be mid-write
        if rank_and_world_size()[1] > 1:
            # Acting on it now could stop this rank a step before the others (a deadlock);
            # the ranks agree on it after the next step (_agree_across_ranks).
            self._signal_seen = name
        else:
            self._stop_signal = name

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            batch = batch.to(self.device, non_blocking=True)
            if self.channels_last and batch.dim() == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return batch
        if isinstance(batch, Mapping):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            moved = [self._to_device(b) for b in batch]
            return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
        return batch


class _Speed:
    """Steps per second since this ``fit`` call started (not since the run began: a resumed run
    must not count the steps it loaded as if they took no time)."""

    def __init__(self, first_step: int) -> None:
        self.first_step, self.started = first_step, time.monotonic()
        self.last_status = float("-inf")

    def steps_per_second(self, step: int) -> float | None:
        elapsed = time.monotonic() - self.started
        return (step - self.first_step) / elapsed if step > self.first_step and elapsed > 0 else None

    def seconds_since_status(self) -> float:
        return time.monotonic() - self.last_status

    def status_written(self) -> None:
        self.last_status = time.monotonic()


class _EpochBatches(Sampler):
    """Index batches of one epoch, shuffled by (seed, epoch), without the first ``skip`` batches.

    With ``world_size > 1`` a batch is this rank's slice of the global batch of
    ``batch_size * world_size`` indices (what DistributedSampler gives, but resumable), so the
    ranks together see exactly the batches a single process with the global batch size sees.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.num_batches = n // self.global_batch if drop_last else math.ceil(n / self.global_batch)
        self.epoch = self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return max(0, self.num_batches - self.skip)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            rng = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=rng).tolist()
        else:
            order = list(range(self.n))
        for b in range(self.skip, self.num_batches):
            batch = order[b * self.global_batch:(b + 1) * self.global_batch]
            if self.world_size > 1:
                # A short last batch is padded from the start of the order, as DistributedSampler
                # pads, so that every rank gets the same number of samples (DDP steps in lockstep).
                batch += [order[i % self.n] for i in range(-len(batch) % self.world_size)]
                share = len(batch) // self.world_size
                batch = batch[self.rank * share:(self.rank + 1) * share]
            yield batch


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**62


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops them cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _plain(config: Any) -> Any:
    """A JSON round trip: what config.json holds is exactly what a checkpoint holds."""
    if config is not None and hasattr(config, "__dataclass_fields__"):
        config = {name: getattr(config, name) for name in config.__dataclass_fields__}
    return json.loads(json.dumps(config if config is not None else {}, default=str))


def _numbered_checkpoints(directory: Path) -> list[Path]:
    found = [p for p in directory.glob("step_*.pt") if p.stem[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.stem[5:]))


def _link_or_copy(source: Path, target: Path) -> None:
    """Point ``target`` at ``source``'s bytes atomically: a hard link, or a copy where links fail."""
    temporary = target.with_name(f".{target.name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        with open(source, "rb") as src, atomic_write(target, "wb") as dst:
            shutil.copyfileobj(src, dst)


def _rng_state() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
