"""Training and attribute editing for StarGAN (gankit/models/stargan.py holds the paper).

One step is one discriminator update (WGAN-GP critic + domain classifier on real images); every
``n_critic``-th step also updates the generator, as the official solver. Around it gankit's
Trainer gives checkpoints, exact resume, AMP, sample grids and SIGINT/SIGTERM handling.

Mixed precision: the forward passes run under autocast (bf16 on A100-class GPUs, fp16 with a
gradient scaler on V100s); the gradient penalty is computed in fp32 with autocast off (see
``gradient_penalty``). ``torch.compile`` applies to the generator only: the penalty needs double
backward through the discriminator, which compiled graphs do not support.

    gankit train stargan --data celeba --run-dir runs/stargan
    torchrun --nproc_per_node 2 -m gankit train stargan --data celeba --run-dir runs/stargan
"""
from __future__ import annotations

import re
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from gankit.models.stargan import (Generator, StarGANConfig, build_models, create_labels,
                                   discriminator_loss, generator_loss, random_target_labels)
from gankit.training import Trainer

SMOKE = dict(image_size=32, crop_size=178, g_conv_dim=8, d_conv_dim=8, g_repeat_num=2, d_repeat_num=5,
             batch_size=4, n_critic=2, num_iters=6, num_iters_decay=3, lr_update_step=1)


def paper_lr_multiplier(config: StarGANConfig):
    """Step -> learning-rate multiplier: 1, then linearly to 0 over the last ``num_iters_decay``
    iterations in steps of ``lr_update_step``, as the paper describes.

    (The official code subtracts lr/num_iters_decay only every lr_update_step iterations, so with its
    defaults the rate ends at 0.999 lr; ``gankit.models.stargan.lr_at`` reproduces that code.)
    """
    start = max(config.num_iters - config.num_iters_decay, 0)

    def multiplier(step: int) -> float:
        done = max(0, (step // config.lr_update_step) * config.lr_update_step - start)
        return max(0.0, 1.0 - done / config.num_iters_decay)

    return multiplier


def train_stargan(config: StarGANConfig | Mapping[str, Any] | None, data_root: str | Path,
                  run_dir: str | Path, device: str | torch.device = "auto", *, smoke: bool = False,
                  resume: bool = True, progress: bool = True, precision: str = "auto",
                  compile_generator: bool = False, num_workers: int = 4, max_steps: int | None = None,
                  sample_every: int = 1000, checkpoint_every: int = 5000, seed: int = 0) -> Trainer:
    """Train StarGAN on CelebA (``<data_root>``: images + list_attr_celeba.txt); returns the Trainer.

    ``config.num_iters`` iterations (200k in the paper). ``smoke=True``: 32x32 images, tiny nets, a
    handful of steps. Under ``torchrun`` each process takes its share of every epoch; only rank 0
    writes the run folder.
    """
    from gankit.data import CelebA
    from gankit.device import pick_device
    from gankit.distributed import init_distributed, wrap_ddp
    from gankit.seeding import seed_everything

    config = config if isinstance(config, StarGANConfig) else StarGANConfig.from_dict(dict(config or {}))
    if smoke:
        config = replace(config, **SMOKE)
        max_steps, num_workers = max_steps or config.num_iters, 0
        sample_every, checkpoint_every = min(sample_every, 3), min(checkpoint_every, 3)
    dist = init_distributed(device)
    device = dist.device if dist.world_size > 1 else pick_device(device)
    seed_everything(seed)
    dataset = CelebA(data_root, selected_attrs=config.selected_attrs, split="train",
                     image_size=config.image_size, crop_size=config.crop_size)
    nets = build_models(config)
    G, D = nets["G"].to(device), nets["D"].to(device)
    fused = device.type == "cuda"
    opt_G = torch.optim.Adam(G.parameters(), lr=config.g_lr, betas=config.betas, fused=fused)
    opt_D = torch.optim.Adam(D.parameters(), lr=config.d_lr, betas=config.betas, fused=fused)
    rule = paper_lr_multiplier(config)
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, rule) for k, o in (("G", opt_G), ("D", opt_D))}
    labels_rng = torch.Generator().manual_seed(seed + 1)   # target labels; checkpointed below
    gp_rng = torch.Generator().manual_seed(seed + 2)       # the penalty's mixing weights
    trainer = Trainer(run_dir, nets, {"G": opt_G, "D": opt_D}, device=device, precision=precision,
                      schedulers=schedulers, scheduler_interval="step", config=asdict(config),
                      progress=progress, extra_state={"rng": _GeneratorState(labels_rng, gp_rng)})
    run_G, run_D = wrap_ddp(G, dist), wrap_ddp(D, dist)
    if compile_generator:
        run_G = torch.compile(run_G)
    fixed_x, fixed_c = _fixed_batch(data_root, config, device)
    last_G = {"G_fake": 0.0, "G_cls": 0.0, "G_rec": 0.0}  # G updates every n_critic steps: carry them

    def sample_fn() -> torch.Tensor:
        with torch.no_grad():  # G stays in train mode, as the official solver (InstanceNorm statistics)
            rows = [fixed_x] + [G(fixed_x, c) for c in create_labels(fixed_c, config.c_dim, config.dataset,
                                                                      config.selected_attrs)]
        return torch.cat(rows)  # (n * (1 + c_dim), 3, S, S): one grid row per target attribute

    def step(batch) -> dict[str, float]:
        x_real, label_org = batch[0].to(device), batch[1].to(device)   # (B, 3, S, S), (B, c_dim)
        label_trg = random_target_labels(label_org.cpu(), labels_rng).to(device)
        with torch.no_grad(), trainer.autocast():
            x_fake = run_G(x_real, label_trg)
        with trainer.autocast():
            loss_D, parts_D = discriminator_loss(run_D, x_real, x_fake, label_org, config, gp_rng)
        trainer.backward(loss_D, opt_D)
        if (trainer.step + 1) % config.n_critic == 0:
            with trainer.autocast():
                loss_G, parts_G, _ = generator_loss(run_G, run_D, x_real, label_org, label_trg, config)
            trainer.backward(loss_G, opt_G)  # D's grads from this pass are cleared by D's next backward
            last_G.update({f"G_{k}": v.item() for k, v in parts_G.items()})
        return {**{f"D_{k}": v.item() for k, v in parts_D.items()}, **last_G}

    with warnings.catch_warnings():
        # G's optimiser first steps at step n_critic, while the per-step scheduler runs from step 1.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        trainer.fit(dataset, step, batch_size=config.batch_size, max_steps=max_steps or config.num_iters,
                    num_workers=num_workers, seed=seed, resume=resume, sample_fn=sample_fn,
                    sample_every=sample_every, sample_nrow=len(fixed_x), checkpoint_every=checkpoint_every)
    return trainer


class _GeneratorState:
    """Checkpoint adapter for the recipe's torch.Generators (Trainer's extra_state protocol)."""

    def __init__(self, *generators: torch.Generator) -> None:
        self.generators = generators

    def state_dict(self) -> dict:
        return {"states": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict) -> None:
        for g, s in zip(self.generators, state["states"]):
            g.set_state(s)


def _fixed_batch(data_root, config: StarGANConfig, device, n: int = 4):
    """The same test images in every sample grid (the official solver uses a fixed batch too)."""
    from gankit.data import CelebA

    test = CelebA(data_root, selected_attrs=config.selected_attrs, split="test",
                  image_size=config.image_size, crop_size=config.crop_size)
    items = [test[i] for i in range(min(n, len(test)))]
    return (torch.stack([x for x, _ in items]).to(device), torch.stack([c for _, c in items]).to(device))


def load_generator(checkpoint: str | Path, config: StarGANConfig | None = None) -> Generator:
    """G from a gankit run checkpoint (``last.pt``) or an official ``200000-G.ckpt``."""
    from gankit.models.stargan import load_official_state_dict

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "models" in state:
        config = StarGANConfig.from_dict(state.get("config") or {})
        net = Generator(config.g_conv_dim, config.c_dim, config.g_repeat_num)
        net.load_state_dict(state["models"]["G"])
        return net
    config = config or StarGANConfig()
    return load_official_state_dict(Generator(config.g_conv_dim, config.c_dim, config.g_repeat_num), state)


def edit_attributes(G: Generator, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Translate one image (3, S, S) in [-1, 1] to the attribute vector ``labels`` (c_dim,) in {0, 1}.

    What the notebook's attribute editor calls on every toggle. Returns (3, S, S) in [-1, 1].
    """
    device = next(G.parameters()).device
    with torch.no_grad():
        return G(image[None].to(device), labels[None].float().to(device))[0].cpu()
