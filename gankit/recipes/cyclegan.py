"""Training and test-time translation for CycleGAN (gankit/models/cyclegan.py holds the paper).

One iteration is the official ``optimize_parameters``: the generators' step (D frozen), then
both discriminators' step on images drawn from the pools of past fakes. Around it, gankit's
Trainer gives checkpoints, exact resume, AMP, sample grids and SIGINT/SIGTERM handling; this file
adds what a two-GPU student server needs: DDP under torchrun, channels_last, fused Adam and an
optional ``torch.compile`` of the generators (the image pool stays outside compiled code: it is
data-dependent Python control flow).

    gankit train cyclegan --data horse2zebra --run-dir runs/h2z            # one GPU
    torchrun --nproc_per_node 2 -m gankit train cyclegan --data horse2zebra --run-dir runs/h2z
    gankit translate --checkpoint runs/h2z/checkpoints/last.pt --input photos/ --output out/
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from gankit.models.cyclegan import (CycleGANConfig, ImagePool, ResnetGenerator, build_models,
                                    discriminator_loss, generator_loss, linear_decay_lambda,
                                    load_official_state_dict, set_requires_grad)
from gankit.training import Trainer

SMOKE = dict(load_size=36, crop_size=32, ngf=8, ndf=8, n_blocks=2, n_epochs=1, n_epochs_decay=1)


def train_cyclegan(config: CycleGANConfig | Mapping[str, Any] | None, data_root: str | Path,
                   run_dir: str | Path, device: str | torch.device = "auto", *, smoke: bool = False,
                   resume: bool = True, progress: bool = True, precision: str = "auto",
                   channels_last: bool | None = None, compile_generators: bool = False,
                   num_workers: int = 4, max_steps: int | None = None, sample_every: int = 500,
                   checkpoint_every: int = 1000, seed: int = 0) -> Trainer:
    """Train CycleGAN on ``<data_root>/trainA`` and ``trainB``; returns the Trainer.

    ``n_epochs + n_epochs_decay`` epochs (100 + 100 in the paper), the learning rate constant
    then linearly decayed to 0, stepped at the end of each epoch. ``smoke=True``: 32x32 crops,
    tiny networks, a handful of steps, no workers. Under ``torchrun`` every process trains on its
    shard of each epoch and only rank 0 writes the run folder. ``channels_last`` defaults to on
    for CUDA. Models in the checkpoint are plain (unwrapped), so ``translate_folder`` and
    ``load_official_state_dict`` read them directly.
    """
    from gankit.data import UnalignedImageFolders
    from gankit.device import pick_device
    from gankit.distributed import init_distributed, wrap_ddp
    from gankit.seeding import seed_everything

    config = config if isinstance(config, CycleGANConfig) else CycleGANConfig.from_dict(dict(config or {}))
    if smoke:
        config = replace(config, **SMOKE)
        max_steps, num_workers = max_steps or 6, 0
        sample_every, checkpoint_every = min(sample_every, 3), min(checkpoint_every, 3)
    dist = init_distributed(device)
    device = dist.device if dist.world_size > 1 else pick_device(device)
    seed_everything(seed)
    channels_last = device.type == "cuda" if channels_last is None else channels_last

    dataset = UnalignedImageFolders(data_root, split="train", load_size=config.load_size,
                                    crop_size=config.crop_size, flip=not config.no_flip,
                                    seed=None)  # Python's global RNG: seeded above, checkpointed by the Trainer
    nets = build_models(config)
    params_G = list(nets["G_A"].parameters()) + list(nets["G_B"].parameters())
    params_D = list(nets["D_A"].parameters()) + list(nets["D_B"].parameters())
    for net in nets.values():
        net.to(device)
    fused = device.type == "cuda"  # fused Adam: one kernel for the whole update
    opt_G = torch.optim.Adam(params_G, lr=config.lr, betas=config.betas, fused=fused)
    opt_D = torch.optim.Adam(params_D, lr=config.lr, betas=config.betas, fused=fused)
    rule = linear_decay_lambda(config.n_epochs, config.n_epochs_decay, config.epoch_count)
    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, rule) for name, opt in (("G", opt_G), ("D", opt_D))}
    pool_A = ImagePool(config.pool_size, torch.Generator().manual_seed(seed + 1))  # past fake A, shown to D_B
    pool_B = ImagePool(config.pool_size, torch.Generator().manual_seed(seed + 2))  # past fake B, shown to D_A
    trainer = Trainer(run_dir, nets, {"G": opt_G, "D": opt_D}, device=device, precision=precision,
                      schedulers=schedulers, scheduler_interval="epoch", config=asdict(config),
                      channels_last=channels_last, progress=progress,
                      extra_state={"pool_A": pool_A, "pool_B": pool_B})
    # What runs: DDP wrappers (gradient all-reduce) and compiled generators; the Trainer keeps
    # and checkpoints the plain modules.
    run = {name: wrap_ddp(net, dist) for name, net in nets.items()}
    if compile_generators:
        run["G_A"], run["G_B"] = torch.compile(run["G_A"]), torch.compile(run["G_B"])
    fixed = _fixed_batch(data_root, config, device)

    def sample_fn() -> torch.Tensor:
        with torch.no_grad():
            fake_B, fake_A = nets["G_A"](fixed["A"]), nets["G_B"](fixed["B"])
            rows = [fixed["A"], fake_B, nets["G_B"](fake_B), fixed["B"], fake_A, nets["G_A"](fake_A)]
        return torch.cat(rows)  # (6 * n, 3, H, W): one grid row each: A, G_A(A), rec A, B, G_B(B), rec B

    def step(batch: dict) -> dict[str, float]:
        memory = torch.channels_last if channels_last else torch.contiguous_format
        real_A = batch["A"].to(device, non_blocking=True).contiguous(memory_format=memory)  # (B, 3, H, W)
        real_B = batch["B"].to(device, non_blocking=True).contiguous(memory_format=memory)
        set_requires_grad([nets["D_A"], nets["D_B"]], False)  # G's step must not compute D's grads
        with trainer.autocast():
            loss_G, parts, fakes = generator_loss(run["G_A"], run["G_B"], run["D_A"], run["D_B"],
                                                  real_A, real_B, config)
        trainer.backward(loss_G, opt_G)
        set_requires_grad([nets["D_A"], nets["D_B"]], True)
        fake_B, fake_A = pool_B.query(fakes["fake_B"]), pool_A.query(fakes["fake_A"])
        with trainer.autocast():
            loss_D_A = discriminator_loss(run["D_A"], real_B, fake_B)
            loss_D_B = discriminator_loss(run["D_B"], real_A, fake_A)
        trainer.backward(loss_D_A + loss_D_B, opt_D)
        return {"G": loss_G.item(), **{k: v.item() for k, v in parts.items()},
                "D_A": loss_D_A.item(), "D_B": loss_D_B.item()}

    epochs = config.n_epochs + config.n_epochs_decay
    trainer.fit(dataset, step, batch_size=config.batch_size, epochs=epochs, max_steps=max_steps,
                num_workers=num_workers, seed=seed, resume=resume, sample_fn=sample_fn,
                sample_every=sample_every, sample_nrow=len(fixed["A"]), checkpoint_every=checkpoint_every)
    return trainer


def _fixed_batch(data_root: str | Path, config: CycleGANConfig, device: torch.device, n: int = 4) -> dict:
    """The same few test images for every sample grid, so grids are comparable across epochs."""
    from gankit.data import UnalignedImageFolders

    try:
        test = UnalignedImageFolders(data_root, split="test", crop_size=config.crop_size, serial=True)
    except Exception:  # some sets ship no test split: use the first training images, uncropped
        test = UnalignedImageFolders(data_root, split="train", load_size=config.crop_size,
                                     crop_size=config.crop_size, flip=False, serial=True)
    items = [test[i] for i in range(min(n, len(test)))]
    return {k: torch.stack([item[k] for item in items]).to(device) for k in ("A", "B")}


def load_generator(checkpoint: str | Path, direction: str = "AtoB", *, n_blocks: int | None = None,
                   ngf: int | None = None) -> ResnetGenerator:
    """A generator from a gankit run checkpoint (``last.pt``) or an official ``*_net_G_A.pth``.

    ``direction`` picks G_A (A to B) or G_B (B to A) from a gankit checkpoint; an official file
    holds one generator. Official 256px models have 9 blocks (``n_blocks``), 128px ones 6.
    """
    if direction not in ("AtoB", "BtoA"):
        raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "models" in state:  # a gankit checkpoint: the run's config says how the nets were built
        config = CycleGANConfig.from_dict(state.get("config") or {})
        net = ResnetGenerator(config.input_nc, config.output_nc, config.ngf, config.n_blocks, config.use_dropout)
        net.load_state_dict(state["models"]["G_A" if direction == "AtoB" else "G_B"])
        return net
    net = ResnetGenerator(ngf=ngf or 64, n_blocks=n_blocks or 9)
    return load_official_state_dict(net, state)


def translate_folder(checkpoint: str | Path, input_dir: str | Path, output_dir: str | Path, *,
                     direction: str = "AtoB", size: int = 256, device: str | torch.device = "auto",
                     batch_size: int = 8, n_blocks: int | None = None) -> list[Path]:
    """Translate every image under ``input_dir`` into ``output_dir`` (PNG, same relative names).

    Images are resized to ``size`` as the official test script does. Each output is written to a
    temporary file and renamed, so an interrupted run leaves no half-written image.
    """
    from torchvision.utils import save_image

    from gankit.data import SingleImageFolder
    from gankit.device import pick_device
    from gankit.io import atomic_write

    device = pick_device(device)
    net = load_generator(checkpoint, direction, n_blocks=n_blocks).to(device).eval()
    images = SingleImageFolder(input_dir, size=size)
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size)
    written = []
    with torch.no_grad():
        for batch, paths in loader:
            out = net(batch.to(device)).cpu()  # (B, 3, size, size) in [-1, 1]
            for image, path in zip(out, paths):
                target = (Path(output_dir) / Path(path).relative_to(images.root)).with_suffix(".png")
                with atomic_write(target) as handle:
                    save_image((image + 1) / 2, handle, format="png")
                written.append(target)
    return written
