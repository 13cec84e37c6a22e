"""CycleGAN train steps: the official regime (fp32, eager, NCHW, for-each Adam) against gankit's
fast path (AMP + channels_last + fused Adam + torch.compile of the generators), side by side in
one run. Prints images/s of each and the ratio.

    .venv/bin/python benchmarks/cyclegan_train_step.py                 # GPU if there is one
    .venv/bin/python benchmarks/cyclegan_train_step.py --size 64 --ngf 16 --steps 4   # quick, CPU

On a CPU "fast" means channels_last and, with --compile, inductor; autocast is left off there
(bf16 on CPUs without AMX is slower, not faster). The goal on an A100/H100 is a ratio >= 2.
"""
from __future__ import annotations

import argparse

import torch

import gankit
from gankit.models.cyclegan import (CycleGANConfig, build_models, discriminator_loss,
                                    generator_loss, set_requires_grad)
from gankit.training import MixedPrecision
from timing import steps_per_second  # benchmarks/timing.py, beside this script


def run(config, device, *, fast: bool, compile_generators: bool, steps: int, warmup: int, batch: int) -> float:
    """Images per second over ``steps`` timed iterations, after ``warmup`` untimed ones."""
    gankit.seed_everything(0)
    nets = {k: v.to(device) for k, v in build_models(config).items()}
    memory = torch.channels_last if fast else torch.contiguous_format
    if fast:
        for net in nets.values():
            net.to(memory_format=torch.channels_last)
    run_nets = dict(nets)
    if fast and compile_generators:
        run_nets["G_A"], run_nets["G_B"] = torch.compile(nets["G_A"]), torch.compile(nets["G_B"])
    fused = fast and device.type == "cuda"
    params_G = [p for k in ("G_A", "G_B") for p in nets[k].parameters()]
    params_D = [p for k in ("D_A", "D_B") for p in nets[k].parameters()]
    opt_G = torch.optim.Adam(params_G, lr=2e-4, betas=(0.5, 0.999), fused=fused, foreach=None if fused else False)
    opt_D = torch.optim.Adam(params_D, lr=2e-4, betas=(0.5, 0.999), fused=fused, foreach=None if fused else False)
    amp = MixedPrecision(device, "auto" if fast and device.type == "cuda" else "fp32")
    real_A = torch.rand(batch, 3, config.crop_size, config.crop_size, device=device).mul(2).sub(1)
    real_B = torch.rand_like(real_A)
    real_A, real_B = real_A.contiguous(memory_format=memory), real_B.contiguous(memory_format=memory)

    def step():
        set_requires_grad([nets["D_A"], nets["D_B"]], False)
        with amp.autocast():
            loss_G, _, fakes = generator_loss(run_nets["G_A"], run_nets["G_B"], nets["D_A"], nets["D_B"],
                                              real_A, real_B, config)
        amp.backward(loss_G, opt_G)
        set_requires_grad([nets["D_A"], nets["D_B"]], True)
        with amp.autocast():
            loss_D = (discriminator_loss(nets["D_A"], real_B, fakes["fake_B"])
                      + discriminator_loss(nets["D_B"], real_A, fakes["fake_A"]))
        amp.backward(loss_D, opt_D)

    return batch * steps_per_second(step, device, steps=steps, warmup=warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="crop size (default: 256 on GPU, 64 on CPU)")
    parser.add_argument("--ngf", type=int, default=None, help="ngf = ndf (default: 64 on GPU, 16 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="default: 4 on GPU, 1 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on GPU, 4 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (compilation happens here)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()
    device = gankit.pick_device(args.device)
    gpu = device.type == "cuda"
    size, ngf = args.size or (256 if gpu else 64), args.ngf or (64 if gpu else 16)
    batch, steps = args.batch or (4 if gpu else 1), args.steps or (30 if gpu else 4)
    compile_generators = gpu if args.compile is None else args.compile
    warmup = args.warmup if args.warmup is not None else (5 if compile_generators else 2)
    config = CycleGANConfig(crop_size=size, load_size=size, ngf=ngf, ndf=ngf)
    if gpu:
        torch.backends.cudnn.benchmark = True
    common = dict(steps=steps, warmup=warmup, batch=batch)
    slow = run(config, device, fast=False, compile_generators=False, **common)
    fast = run(config, device, fast=True, compile_generators=compile_generators, **common)
    print(f"device {gankit.describe_device(device)}; {size}x{size}, ngf=ndf={ngf}, batch {batch}, "
          f"{steps} timed steps after {warmup} warm-up")
    print(f"official regime (fp32 eager NCHW)      {slow:8.2f} images/s")
    what = "AMP + channels_last + fused Adam" if gpu else "channels_last"
    print(f"fast path ({what}{' + compile' if compile_generators else ''}) {fast:8.2f} images/s")
    print(f"ratio fast / official: {fast / slow:.2f}")


if __name__ == "__main__":
    main()
