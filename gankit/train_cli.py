"""``gankit train <recipe>``: paper recipes from the command line, for overnight runs on a GPU server.

    gankit train dcgan --data mnist --data-dir ~/data --run-dir runs/dcgan --device cuda:1 \\
        --epochs 25 --set lr=1e-4 --set loss=minimax

Runs resume from ``RUN_DIR/checkpoints/last.pt`` unless ``--no-resume``; SIGINT/SIGTERM save a
checkpoint and exit with 128 + the signal number (130, 143), so a wrapper script can tell an
interrupted run from a finished one (exit 0) and simply start the same command again.
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` (with one sub-command per recipe) to an ``add_subparsers()`` object."""
    train = subparsers.add_parser("train", help="train a paper recipe (resumable, headless-friendly)",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recipes = train.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    dcgan = recipes.add_parser("dcgan", help="DCGAN (Radford et al. 2016) on MNIST",
                               description="Train DCGAN; every DCGANConfig field can be set with --set.")
    dcgan.add_argument("--data", default="mnist", choices=["mnist"], help="dataset (default: mnist)")
    dcgan.add_argument("--data-dir", default=None,
                       help="dataset cache (default: $GANKIT_DATA or ~/.cache/gankit)")
    dcgan.add_argument("--run-dir", default="runs/dcgan",
                       help="checkpoints, samples, losses.csv go here (default: runs/dcgan)")
    dcgan.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    dcgan.add_argument("--epochs", type=int, default=None, help="number of epochs (default: config's 25)")
    dcgan.add_argument("--smoke", action="store_true",
                       help="a few steps on small synthetic data: checks the setup in seconds")
    dcgan.add_argument("--no-resume", dest="resume", action="store_false",
                       help="start over: delete the run's old checkpoints and losses.csv")
    dcgan.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    dcgan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a DCGANConfig field, e.g. --set lr=1e-4 --set betas=0.5,0.99 (repeatable)")
    dcgan.set_defaults(func=run_dcgan)
    return train


def run_dcgan(args: argparse.Namespace) -> int:
    """Run the DCGAN recipe for parsed ``args``; 0 when finished, 128 + signal when stopped, 2 on bad settings."""
    from gankit.device import pick_device
    from gankit.models.dcgan import DCGANConfig, train_dcgan

    try:
        config = DCGANConfig().override(args.overrides)
        if args.epochs is not None:
            config = dataclasses.replace(config, epochs=args.epochs)
        device = pick_device(args.device)
    except (ValueError, TypeError) as err:
        print(f"gankit train dcgan: {err}", file=sys.stderr)
        return 2
    from gankit.data import prepare  # after the settings are checked: no download for a typo

    data_root = prepare(args.data, args.data_dir, smoke=args.smoke, seed=config.seed)
    trainer = train_dcgan(config, data_root, args.run_dir, device, smoke=args.smoke,
                          resume=args.resume, progress=args.progress)
    result = trainer.result
    print(f"gankit train dcgan: step {result.step}, epoch {result.epoch}, checkpoint {result.checkpoint}")
    if result.stopped_by:
        print(f"gankit train dcgan: stopped by {result.stopped_by}; run the same command to resume")
        return 128 + int(signal.Signals[result.stopped_by])
    return 0
