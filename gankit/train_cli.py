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
    _common_arguments(dcgan, "dcgan", "mnist", ["mnist"], "a DCGANConfig field, e.g. --set lr=1e-4 --set betas=0.5,0.99")
    dcgan.add_argument("--epochs", type=int, default=None, help="number of epochs (default: config's 25)")
    dcgan.set_defaults(func=run_dcgan)

    cyclegan = recipes.add_parser("cyclegan", help="CycleGAN (Zhu et al. 2017), unpaired translation",
                                  description="Train CycleGAN; every CycleGANConfig field can be set with --set. "
                                  "Two GPUs: torchrun --nproc_per_node 2 -m gankit train cyclegan ...")
    _common_arguments(cyclegan, "cyclegan", "horse2zebra", None, "a CycleGANConfig field, e.g. --set n_blocks=6")
    _gpu_arguments(cyclegan, "torch.compile the generators")
    cyclegan.set_defaults(func=run_cyclegan)

    stargan = recipes.add_parser("stargan", help="StarGAN (Choi et al. 2018), multi-domain translation",
                                 description="Train StarGAN on CelebA; every StarGANConfig field can be set with "
                                 "--set. Two GPUs: torchrun --nproc_per_node 2 -m gankit train stargan ...")
    _common_arguments(stargan, "stargan", "celeba", ["celeba"], "a StarGANConfig field, e.g. --set batch_size=32")
    _gpu_arguments(stargan, "torch.compile the generator (not D: the penalty needs double backward)")
    stargan.set_defaults(func=run_stargan)

    compression = recipes.add_parser(
        "compression", help="learned image compression (Ballé 2017/2018), then generative (HiFiC)",
        description="Train a learned codec on random crops of any folder of photos (a registry name or a "
        "path; keep Kodak for evaluation); every CompressionConfig field can be set with --set, e.g. "
        "--set lmbda=0.0067 for a lower rate, --set stage=gan --set warm_start=RUN/checkpoints/last.pt "
        "for the generative stage. Two GPUs: torchrun --nproc_per_node 2 -m gankit train compression ...")
    _common_arguments(compression, "compression", "horse2zebra", None,
                      "a CompressionConfig field, e.g. --set model=factorized --set lmbda=0.0067")
    _gpu_arguments(compression, None, precision="fp32",
                   precision_help="transforms' precision (likelihoods stay fp32); default fp32 (TF32 convolutions): "
                   "bf16 was slower for this model on an H100 (benchmarks/compression.py)")
    compression.set_defaults(func=run_compression)
    return train


def run_compression(args: argparse.Namespace) -> int:
    """Run the compression recipe; exit codes as for DCGAN."""
    from pathlib import Path

    from gankit.models.compression import CompressionConfig
    from gankit.recipes.compression import train_compression

    try:
        config = CompressionConfig().override(args.overrides)
    except (ValueError, TypeError) as err:
        print(f"gankit train compression: {err}", file=sys.stderr)
        return 2
    from gankit.data import DataError, prepare

    try:
        data_root = Path(args.data) if Path(args.data).is_dir() else prepare(args.data, args.data_dir, smoke=args.smoke)
        trainer = train_compression(config, data_root, args.run_dir, args.device, smoke=args.smoke,
                                    resume=args.resume, progress=args.progress, precision=args.precision,
                                    num_workers=args.workers, max_steps=args.max_steps)
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"gankit train compression: {err}", file=sys.stderr)
        return 2
    return _finish("compression", trainer.result)


def add_codec_parsers(subparsers: argparse._SubParsersAction) -> None:
    """``gankit compress`` and ``gankit decompress``: real files from a trained codec."""
    for name, first, second, help_text in (
            ("compress", "image", "out", "write an RGB image as a compressed file (real entropy-coded bits)"),
            ("decompress", "file", "image", "decode a compressed file back to an image (PNG by default)")):
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument(first)
        parser.add_argument(second)
        parser.add_argument("--checkpoint", required=True,
                            help="the codec: a `gankit train compression` run's checkpoints/last.pt")
        parser.set_defaults(func=run_codec_command)


def run_codec_command(args: argparse.Namespace) -> int:
    from gankit.codec import HEADER_BYTES, CodecError, compress_file, decompress_file, load_codec

    try:
        codec = load_codec(args.checkpoint)
        if args.command == "compress":
            size = compress_file(codec, args.image, args.out)
            H, W = read_size(args.image)
            print(f"gankit compress: {args.out}: {size} bytes ({HEADER_BYTES}-byte header), "
                  f"{8 * size / (H * W):.4f} bpp for {W}x{H}")
        else:
            H, W = decompress_file(codec, args.file, args.image)
            print(f"gankit decompress: wrote {args.image} ({W}x{H})")
    except CodecError as err:
        print(f"gankit {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


def read_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.height, image.width


def run_stargan(args: argparse.Namespace) -> int:
    """Run the StarGAN recipe; exit codes as for DCGAN."""
    from gankit.models.stargan import StarGANConfig
    from gankit.recipes.stargan import train_stargan

    try:
        config = StarGANConfig().override(args.overrides)
    except (ValueError, TypeError) as err:
        print(f"gankit train stargan: {err}", file=sys.stderr)
        return 2
    from gankit.data import prepare

    data_root = prepare(args.data, args.data_dir, smoke=args.smoke)
    trainer = train_stargan(config, data_root, args.run_dir, args.device, smoke=args.smoke, resume=args.resume,
                            progress=args.progress, precision=args.precision, compile_generator=args.compile,
                            num_workers=args.workers, max_steps=args.max_steps)
    return _finish("stargan", trainer.result)


def add_translate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``gankit translate``: a folder of images through a trained or official CycleGAN generator."""
    translate = subparsers.add_parser("translate", help="translate a folder of images with a CycleGAN generator")
    translate.add_argument("--checkpoint", required=True,
                           help="a run's checkpoints/last.pt, or an official *_net_G_A.pth / horse2zebra.pth")
    translate.add_argument("--input", required=True, help="folder of images")
    translate.add_argument("--output", required=True, help="folder for the translated PNGs")
    translate.add_argument("--direction", default="AtoB", choices=["AtoB", "BtoA"])
    translate.add_argument("--size", type=int, default=256, help="images are resized to SIZE x SIZE")
    translate.add_argument("--n-blocks", type=int, default=None, help="official checkpoints: 9 (256px) or 6")
    translate.add_argument("--device", default="auto")
    translate.set_defaults(func=run_translate)
    return translate


def run_cyclegan(args: argparse.Namespace) -> int:
    """Run the CycleGAN recipe; exit codes as for DCGAN."""
    from gankit.models.cyclegan import CycleGANConfig
    from gankit.recipes.cyclegan import train_cyclegan

    try:
        config = CycleGANConfig().override(args.overrides)
    except (ValueError, TypeError) as err:
        print(f"gankit train cyclegan: {err}", file=sys.stderr)
        return 2
    from gankit.data import prepare

    data_root = prepare(args.data, args.data_dir, smoke=args.smoke)
    trainer = train_cyclegan(config, data_root, args.run_dir, args.device, smoke=args.smoke,
                             resume=args.resume, progress=args.progress, precision=args.precision,
                             compile_generators=args.compile, num_workers=args.workers,
                             max_steps=args.max_steps)
    return _finish("cyclegan", trainer.result)


def run_translate(args: argparse.Namespace) -> int:
    from gankit.recipes.cyclegan import translate_folder

    written = translate_folder(args.checkpoint, args.input, args.output, direction=args.direction,
                               size=args.size, device=args.device, n_blocks=args.n_blocks)
    print(f"gankit translate: wrote {len(written)} images to {args.output}")
    return 0


def _common_arguments(parser: argparse.ArgumentParser, recipe: str, data: str, choices: list[str] | None,
                      set_example: str) -> None:
    """The options every recipe takes: data, run folder, device, smoke, resume, --set."""
    parser.add_argument("--data", default=data, choices=choices,
                        help=f"dataset (default: {data}; `gankit data list` shows them)")
    parser.add_argument("--data-dir", default=None, help="dataset cache (default: $GANKIT_DATA or ~/.cache/gankit)")
    parser.add_argument("--run-dir", default=f"runs/{recipe}",
                        help=f"checkpoints, samples, losses.csv go here (default: runs/{recipe})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps of tiny nets on small synthetic data: checks the setup in seconds")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over: delete the run's old checkpoints and losses.csv")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override {set_example} (repeatable)")
    parser.add_argument("--background", action="store_true",
                        help="detach: keeps training after the terminal, SSH session or Jupyter kernel closes; "
                        "logs to RUN_DIR/train.log; `gankit runs` lists runs, `gankit runs --attach ID` follows one")
    parser.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                        help="with --background: run on N GPUs through torchrun (DDP)")


def _gpu_arguments(parser: argparse.ArgumentParser, compile_help: str | None, *, precision: str = "auto",
                   precision_help: str = "auto: bf16 on A100-class GPUs, fp16 + scaler on V100, fp32 on CPU") -> None:
    """Options of the recipes built for two-GPU servers (mixed precision, workers, and --compile
    where ``compile_help`` says what it compiles)."""
    parser.add_argument("--precision", default=precision, choices=["auto", "fp32", "bf16", "fp16"],
                        help=precision_help)
    if compile_help is not None:
        parser.add_argument("--compile", action="store_true", help=compile_help)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers per process")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")


def start_in_background(argv: list[str]) -> int:
    """``gankit train ... --background``: the same command, detached; print how to follow it."""
    from gankit.runs import RunError, start

    args = [a for a in argv if a != "--background"]
    nproc = 1
    for i, arg in enumerate(args):
        if arg == "--nproc-per-node" or arg.startswith("--nproc-per-node="):
            value = arg.split("=", 1)[1] if "=" in arg else args[i + 1]
            nproc = int(value)
            del args[i: i + (1 if "=" in arg else 2)]
            break
    try:
        run = start(args, nproc_per_node=nproc)
    except RunError as err:
        print(f"gankit train: {err}", file=sys.stderr)
        return 2
    print(f"gankit train: started run {run.id} in the background (pid {run.record['supervisor']['pid']}), "
          f"logging to {run.log}\n  gankit runs                 lists runs with their step, ETA and losses"
          f"\n  gankit runs --attach {run.id}   follows it (Ctrl-C detaches; the run goes on)"
          f"\n  gankit runs --stop {run.id}     saves a checkpoint and stops it")
    return 0


def add_runs_parser(subparsers: argparse._SubParsersAction) -> None:
    """``gankit runs``: background runs, their state, step, ETA and last losses."""
    parser = subparsers.add_parser("runs", help="list background training runs; attach to, stop or resume one")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--attach", metavar="ID", help="follow a run's log until it ends (Ctrl-C detaches)")
    action.add_argument("--stop", metavar="ID", help="stop a run after its current step (a checkpoint is saved)")
    action.add_argument("--resume", metavar="ID", help="start a stopped, failed or died run again from its "
                        "last checkpoint, in the background")
    parser.set_defaults(func=run_runs_command)


def run_runs_command(args: argparse.Namespace) -> int:
    from gankit import runs

    try:
        if args.attach:
            return runs.attach(args.attach)
        if args.stop:
            run = runs.find(args.stop)
            run.stop()
            print(f"gankit runs: asked run {run.id} to stop; it saves a checkpoint after its current step")
        elif args.resume:
            run = runs.resume(args.resume)
            print(f"gankit runs: resumed run {run.id} in the background; `gankit runs --attach {run.id}` follows it")
        else:
            found = runs.list_runs()
            print(runs.format_table(found) if found else f"no background runs yet (index: {runs.runs_index()})")
    except runs.RunError as err:
        print(f"gankit runs: {err}", file=sys.stderr)
        return 2
    return 0


def _finish(recipe: str, result) -> int:
    """Report the run (rank 0 only under torchrun) and turn how it ended into the exit code."""
    from gankit.distributed import is_main

    if is_main():
        print(f"gankit train {recipe}: step {result.step}, epoch {result.epoch}, checkpoint {result.checkpoint}")
        if result.stopped_by:
            print(f"gankit train {recipe}: stopped by {result.stopped_by}; run the same command to resume")
    return 128 + int(signal.Signals[result.stopped_by]) if result.stopped_by else 0


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
    return _finish("dcgan", trainer.result)
