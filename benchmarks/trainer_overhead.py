"""What does gankit's Trainer cost over a hand-written loop? Prints the ratio, measured side by side.

The same DCGAN steps (same models, data, seed) run twice in one process: once in a bare
``for`` loop, once through ``Trainer.fit`` with its CSV logging and checkpointing switched on.
A ratio near 1.0 means the bookkeeping that makes runs resumable is free next to the maths.

    .venv/bin/python benchmarks/trainer_overhead.py [--steps 60] [--device auto] [--image-size 32]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

import gankit
from gankit.models.dcgan import Discriminator, Generator, train_step
from gankit.training import Trainer


def build(device, image_size, width):
    gankit.seed_everything(0)
    G = Generator(100, width, 1, image_size).to(device)
    D = Discriminator(width, 1, image_size).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    return G, D, opt_g, opt_d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=32, help="ngf = ndf")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = gankit.pick_device(args.device)
    images = torch.rand(args.steps * args.batch_size, 1, args.image_size, args.image_size) * 2 - 1
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(len(images)))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Bare loop: the same batches in the same order, no bookkeeping.
    G, D, opt_g, opt_d = build(device, args.image_size, args.width)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    sync()
    start = time.perf_counter()
    for real, _ in loader:
        z = torch.randn(real.size(0), 100, device=device)
        train_step(G, D, opt_g, opt_d, real.to(device), z)
    sync()
    bare = time.perf_counter() - start

    # Trainer: progress bar off (it writes to a terminal), CSV every step, one checkpoint at the end.
    G, D, opt_g, opt_d = build(device, args.image_size, args.width)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(run_dir, {"G": G, "D": D}, {"G": opt_g, "D": opt_d}, device=device,
                          precision="fp32", progress=False, tensorboard=False)

        def step(batch):
            real = batch[0].to(device)
            return train_step(G, D, opt_g, opt_d, real, torch.randn(real.size(0), 100, device=device))

        sync()
        start = time.perf_counter()
        trainer.fit(dataset, step, batch_size=args.batch_size, epochs=1, resume=False,
                    checkpoint_every=args.steps, log_every=1)
        sync()
        managed = time.perf_counter() - start

    print(f"device {gankit.describe_device(device)}, {args.steps} steps of batch {args.batch_size} "
          f"at {args.image_size}px, width {args.width}")
    print(f"bare loop      {bare:8.3f} s  ({1000 * bare / args.steps:7.2f} ms/step)")
    print(f"gankit Trainer {managed:8.3f} s  ({1000 * managed / args.steps:7.2f} ms/step)")
    print(f"ratio Trainer / bare loop: {managed / bare:.3f}")


if __name__ == "__main__":
    main()
