"""Learned codec: train-step throughput in fp32 against bf16/fp16 transforms (likelihoods stay fp32),
and real entropy coding against the model's own forward pass, side by side in one run.

Part 1 times one rate-distortion step (forward, loss, backward, Adam) of the scale-hyperprior codec
in fp32 (TF32 convolutions on Ampere+) and with autocast, and prints images/s, the ratio, and how
far the loss of one fixed batch moves between the two (the numerical cost of the faster path).
Part 2 times ``Codec.compress`` + ``decompress`` (CPU, constriction) against the estimate
``Codec.estimate_bits`` on the same image, and prints the real size over the estimate.

    .venv/bin/python benchmarks/compression.py                  # GPU if there is one
    .venv/bin/python benchmarks/compression.py --steps 3        # CPU: small nets, 64 px

Measured on an H100 (N=128, M=192, batch 8 x 256 px): fp32 441.8 images/s, bf16 362.1 (0.82x),
and one batch's bpp moved from 1.127 to 0.916 under bf16, hence the recipe's fp32 default.
"""
from __future__ import annotations

import argparse
import time

import torch

import gankit
from gankit.models.compression import ScaleHyperpriorCodec, rate_distortion_loss
from gankit.training import MixedPrecision
from timing import steps_per_second  # benchmarks/timing.py, beside this script


def train_throughput(device, precision: str, *, N: int, M: int, batch: int, size: int, steps: int, warmup: int):
    gankit.seed_everything(0)
    codec = ScaleHyperpriorCodec(N, M).to(device)
    optimizer = torch.optim.Adam(codec.parameters(), lr=1e-4, fused=device.type == "cuda")
    amp = MixedPrecision(device, precision)
    x = torch.rand(batch, 3, size, size, device=device)

    def step():
        with amp.autocast():
            output = codec(x)
        loss, _ = rate_distortion_loss(x, output, 0.0130)
        amp.backward(loss, optimizer, clip_grad_norm=1.0)
        return loss

    rate = batch * steps_per_second(step, device, steps=steps, warmup=warmup)
    gankit.seed_everything(1)  # the same noise for both precisions
    with torch.no_grad(), amp.autocast():
        loss, parts = rate_distortion_loss(x, codec.train()(x), 0.0130)
    return rate, amp.precision, parts


def coding_speed(N: int, M: int, size: int, repeats: int = 3):
    from skimage.data import astronaut

    from gankit.codec import HEADER_BYTES, Codec

    gankit.seed_everything(0)
    codec = Codec(ScaleHyperpriorCodec(N, M))
    image = torch.from_numpy(astronaut()[:size, :size].copy()).permute(2, 0, 1).float() / 255
    start = time.perf_counter()
    for _ in range(repeats):
        bits = codec.estimate_bits(image)
    estimate_s = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        data = codec.compress(image)
        codec.decompress(data)
    coding_s = (time.perf_counter() - start) / repeats
    return estimate_s, coding_s, 8 * (len(data) - HEADER_BYTES) / bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on GPU, 3 on CPU)")
    args = parser.parse_args()
    device = gankit.pick_device(args.device)
    gpu = device.type == "cuda"
    N, M, batch, size = (128, 192, 8, 256) if gpu else (32, 48, 2, 64)
    steps = args.steps or (30 if gpu else 3)
    print(f"device {gankit.describe_device(device)}; hyperprior N={N} M={M}, batch {batch} x {size} px, {steps} steps")
    fp32, _, parts32 = train_throughput(device, "fp32", N=N, M=M, batch=batch, size=size, steps=steps, warmup=3)
    fast, precision, parts16 = train_throughput(device, "auto" if gpu else "bf16", N=N, M=M, batch=batch,
                                                size=size, steps=steps, warmup=3)
    print(f"train step fp32      {fp32:9.1f} images/s")
    print(f"train step {precision:9s} {fast:9.1f} images/s   ratio {fast / fp32:.2f}x")
    print(f"one batch, fp32 vs {precision}: bpp {parts32['bpp']:.4f} vs {parts16['bpp']:.4f}, "
          f"PSNR {parts32['psnr']:.2f} vs {parts16['psnr']:.2f} dB (untrained nets)")
    try:
        import constriction  # noqa: F401  (the GPU image may lack it; coding runs on the CPU anyway)
    except ImportError:
        print("CPU coding: skipped, constriction is not installed here")
        return
    estimate_s, coding_s, ratio = coding_speed(N, M, 512 if gpu else 256)
    print(f"CPU coding: compress + decompress {coding_s * 1e3:.0f} ms vs estimate {estimate_s * 1e3:.0f} ms "
          f"({coding_s / estimate_s:.1f}x); real payload / estimated bits {ratio:.3f}")


if __name__ == "__main__":
    main()
