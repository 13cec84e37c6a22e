"""Training the learned codecs of gankit/models/compression.py, rate-distortion first, then generative.

Stage ``rd`` (Ballé): minimize ``lmbda * 255^2 * MSE + bpp`` on random crops of any folder of
photos, with additive noise standing in for rounding. Stage ``gan`` (HiFiC): warm-start from an rd
checkpoint, decode straight-through rounded latents, and add ``beta`` times a non-saturating GAN
term from a PatchGAN conditioned on the latents (detached, as in HiFiC); D steps once per codec
step. Around both, gankit's Trainer gives checkpoints, exact resume, optional AMP (bf16/fp16
transforms; the entropy models' likelihoods always in fp32 inside ``gankit.models.compression``),
sample grids and SIGINT/SIGTERM handling; under torchrun each GPU trains on its share (DDP).

    gankit train compression --data horse2zebra --run-dir runs/hyperprior_q4 --set lmbda=0.0130
    gankit train compression --data horse2zebra --run-dir runs/hific --set stage=gan \\
        --set warm_start=runs/hyperprior_q4/checkpoints/last.pt
    gankit rd --checkpoint runs/hyperprior_q4/checkpoints/last.pt --images kodak
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from gankit.models.compression import (CompressionConfig, ConditionalPatchDiscriminator, build_codec,
                                       discriminator_loss, generative_codec_loss, rate_distortion_loss)
from gankit.training import Trainer

SMOKE = dict(N=16, M=16, crop_size=64, batch_size=2)  # and 6 steps unless max_steps says otherwise


def load_warm_start(codec: torch.nn.Module, checkpoint: str | Path, config: CompressionConfig) -> None:
    """Copy an rd run's codec weights into ``codec``; the architectures must agree."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"warm_start={path}: no such checkpoint; train stage rd first "
                                "(gankit train compression --set stage=rd) and pass its checkpoints/last.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "codec" not in state.get("models", {}):
        raise ValueError(f"warm_start={path} is not a compression checkpoint (models: {sorted(state.get('models', {}))})")
    source = CompressionConfig.from_dict(state.get("config") or {})
    if (source.model, source.N, source.M) != (config.model, config.N, config.M):
        raise ValueError(f"warm_start={path} is a {source.model} N={source.N} M={source.M} codec; this run builds "
                         f"{config.model} N={config.N} M={config.M}: set model/N/M to match")
    codec.load_state_dict(state["models"]["codec"])


def train_compression(config: CompressionConfig | Mapping[str, Any] | None, data_root: str | Path,
                      run_dir: str | Path, device: str | torch.device = "auto", *, smoke: bool = False,
                      resume: bool = True, progress: bool = True, precision: str = "fp32",
                      num_workers: int = 4, max_steps: int | None = None, sample_every: int = 1000,
                      checkpoint_every: int = 5000, seed: int = 0, crops_per_epoch: int = 4096) -> Trainer:
    """Train a codec on random crops of every image under ``data_root``; returns the Trainer.

    ``config.steps`` steps in total (``max_steps`` stops earlier); the learning rate drops 10x
    for the last 20% (both stages). ``precision`` defaults to fp32 (TF32 convolutions on Ampere+):
    on an H100, bf16 autocast made the hyperprior's step 0.82x as fast and moved one batch's rate
    by 20% (benchmarks/compression.py), so it is opt-in. The checkpoint's ``models["codec"]`` is what
    ``gankit.codec.load_codec`` reads. ``smoke=True``: tiny nets, 64 px crops, 6 steps (or ``max_steps``), no workers.
    """
    from gankit.data.photos import PhotoCrops
    from gankit.device import pick_device
    from gankit.distributed import init_distributed, wrap_ddp
    from gankit.seeding import seed_everything

    config = config if isinstance(config, CompressionConfig) else CompressionConfig.from_dict(dict(config or {}))
    if smoke:
        config = replace(config, **SMOKE, steps=max_steps or 6)
        max_steps, num_workers = config.steps, 0
        sample_every, checkpoint_every, crops_per_epoch = min(sample_every, 3), min(checkpoint_every, 3), 8
    dist = init_distributed(device)
    device = dist.device if dist.world_size > 1 else pick_device(device)
    seed_everything(seed)

    dataset = PhotoCrops(data_root, config.crop_size, length=crops_per_epoch)
    codec = build_codec(config)
    if config.warm_start:  # stage gan from an rd run; stage rd: continue or move to a new lambda
        load_warm_start(codec, config.warm_start, config)
    elif config.stage == "gan" and not smoke:
        raise ValueError("stage=gan starts from a trained rd codec: set warm_start=RUN/checkpoints/last.pt")
    fused = device.type == "cuda"
    models = {"codec": codec}
    optimizers = {"codec": torch.optim.Adam(codec.parameters(), lr=config.lr, fused=fused)}
    if config.stage == "gan":
        models["D"] = ConditionalPatchDiscriminator(config.M)
        optimizers["D"] = torch.optim.Adam(models["D"].parameters(), lr=config.lr_D, betas=(0.5, 0.999), fused=fused)
    milestone = int(0.8 * config.steps)
    schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, [milestone], 0.1) for name, opt in optimizers.items()}
    trainer = Trainer(run_dir, models, optimizers, device=device, precision=precision, schedulers=schedulers,
                      scheduler_interval="step", config=asdict(config), progress=progress)
    run = {name: wrap_ddp(net, dist) for name, net in models.items()}
    perceptual = None
    if config.perceptual_weight > 0:
        from gankit.perceptual import VGGPerceptualLoss
        perceptual = VGGPerceptualLoss(config.perceptual_weights).to(device)
    fixed = torch.stack(list(PhotoCrops(data_root, config.crop_size, length=4, seed=seed))).to(device)

    def sample_fn() -> torch.Tensor:
        codec.eval()
        with torch.no_grad():
            x_hat = codec(fixed)["x_hat"].clamp(0, 1)  # rounded latents: what a real file decodes to
        codec.train()
        return torch.cat([fixed, x_hat]) * 2 - 1  # row 1: originals, row 2: reconstructions; the grid takes [-1, 1]

    def rd_step(x: torch.Tensor) -> dict[str, float]:
        with trainer.autocast():
            output = run["codec"](x)
        loss, parts = rate_distortion_loss(x, output, config.lmbda)
        trainer.backward(loss, optimizers["codec"], clip_grad_norm=config.clip_grad_norm)
        return {"loss": loss.item(), **parts}

    def gan_step(x: torch.Tensor) -> dict[str, float]:
        with trainer.autocast():
            output = run["codec"](x, decoder_quantizer="ste")
            latents = output["y_hat"].detach()  # D is conditioned on the latents, not trained through them
            real_logits = run["D"](x, latents)
            fake_logits = run["D"](output["x_hat"].detach(), latents)
        loss_D = discriminator_loss(real_logits, fake_logits)
        trainer.backward(loss_D, optimizers["D"])
        models["D"].requires_grad_(False)  # the codec's step must not compute D's gradients
        with trainer.autocast():
            fake_logits = run["D"](output["x_hat"], latents)
            distance = perceptual(x, output["x_hat"]) if perceptual is not None else None
        loss, parts = generative_codec_loss(x, output, fake_logits, config.lmbda, config.beta, distance,
                                            config.perceptual_weight)
        trainer.backward(loss, optimizers["codec"], clip_grad_norm=config.clip_grad_norm)
        models["D"].requires_grad_(True)
        return {"loss": loss.item(), **parts, "D": loss_D.item()}

    trainer.fit(dataset, rd_step if config.stage == "rd" else gan_step, batch_size=config.batch_size,
                max_steps=min(config.steps, max_steps or config.steps), num_workers=num_workers, seed=seed,
                resume=resume, sample_fn=sample_fn, sample_every=sample_every, sample_nrow=len(fixed),
                checkpoint_every=checkpoint_every)
    return trainer
