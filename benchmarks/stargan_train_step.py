"""StarGAN train steps: fp32 eager (the official regime) against the fast path (AMP + channels_last
+ fused Adam + a compiled generator), side by side in one run; prints images/s and the ratio.

One step = one D update (with the gradient penalty, always in fp32) + one G update, so the ratio
measures the generator and discriminator passes alike. Only the generator is compiled: the
penalty's double backward runs through D, which torch.compile does not support.

    .venv/bin/python benchmarks/stargan_train_step.py               # GPU if there is one
    .venv/bin/python benchmarks/stargan_train_step.py --steps 3     # CPU: 64 px, small nets

On a CPU the fast path is only foreach Adam (channels_last slows the double backward there).
"""
from __future__ import annotations

import argparse

import torch

import gankit
from gankit.models.stargan import (StarGANConfig, build_models, discriminator_loss, generator_loss,
                                   random_target_labels)
from gankit.training import MixedPrecision
from timing import steps_per_second  # benchmarks/timing.py, beside this script


def run(config, device, *, fast: bool, compile_generator: bool, steps: int, warmup: int) -> float:
    gankit.seed_everything(0)
    nets = {k: v.to(device) for k, v in build_models(config).items()}
    # channels_last pays off on GPUs; on a CPU it made this step ~7x slower (the penalty's double
    # backward through channels-last convolutions), so the CPU fast path keeps NCHW.
    use_cl = fast and device.type == "cuda"
    memory = torch.channels_last if use_cl else torch.contiguous_format
    if use_cl:
        for net in nets.values():
            net.to(memory_format=torch.channels_last)
    G, D = nets["G"], nets["D"]
    run_G = torch.compile(G) if fast and compile_generator else G
    fused = fast and device.type == "cuda"
    foreach = None if fused else fast   # the official regime: one parameter at a time
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=fused, foreach=foreach)
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=fused, foreach=foreach)
    amp = MixedPrecision(device, "auto" if fast and device.type == "cuda" else "fp32")
    B, S = config.batch_size, config.image_size
    x = (torch.rand(B, 3, S, S, device=device) * 2 - 1).contiguous(memory_format=memory)
    c_org = (torch.rand(B, config.c_dim, device=device) > 0.5).float()

    def step():
        c_trg = random_target_labels(c_org)
        with torch.no_grad(), amp.autocast():
            fake = run_G(x, c_trg)
        with amp.autocast():
            loss_D, _ = discriminator_loss(D, x, fake, c_org, config)
        amp.backward(loss_D, opt_D)
        with amp.autocast():
            loss_G, _, _ = generator_loss(run_G, D, x, c_org, c_trg, config)
        amp.backward(loss_G, opt_G)

    return B * steps_per_second(step, device, steps=steps, warmup=warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="image size (default: 128 on GPU, 64 on CPU)")
    parser.add_argument("--conv-dim", type=int, default=None, help="default: 64 on GPU, 16 on CPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on GPU, 2 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on GPU, 3 on CPU)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()
    device = gankit.pick_device(args.device)
    gpu = device.type == "cuda"
    size, dim = args.size or (128 if gpu else 64), args.conv_dim or (64 if gpu else 16)
    config = StarGANConfig(image_size=size, g_conv_dim=dim, d_conv_dim=dim, batch_size=args.batch or (16 if gpu else 2))
    steps = args.steps or (20 if gpu else 3)
    compile_generator = gpu if args.compile is None else args.compile
    warmup = 5 if compile_generator else 1
    if gpu:
        torch.backends.cudnn.benchmark = True
    slow = run(config, device, fast=False, compile_generator=False, steps=steps, warmup=warmup)
    fast = run(config, device, fast=True, compile_generator=compile_generator, steps=steps, warmup=warmup)
    print(f"device {gankit.describe_device(device)}; {size}x{size}, conv_dim {dim}, batch {config.batch_size}, "
          f"{steps} timed steps (one D + one G update each)")
    print(f"official regime (fp32 eager NCHW)  {slow:8.2f} images/s")
    what = "AMP + channels_last + fused Adam" if gpu else "foreach Adam"
    print(f"fast path ({what}{' + compiled G' if compile_generator else ''})  {fast:8.2f} images/s")
    print(f"ratio fast / official: {fast / slow:.2f}")


if __name__ == "__main__":
    main()
