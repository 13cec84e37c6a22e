"""The `gankit` command: doctor, data, train, runs, translate, compress, decompress, fid, rd, and the
commands other packages register (`grade`, from the course's grading package). `gankit --help` lists
everything.

gankit is the library and never imports the course application: a package adds a subcommand by
naming a function in the ``gankit.commands`` entry-point group (grading does so in pyproject.toml).
The entry point's name is the subcommand; the function is called as ``register(subparsers, full)``
and adds that subcommand, with its options and a ``func`` default only when ``full``, so that
registering it costs no heavy import when another command runs.
"""
from __future__ import annotations

import argparse
import sys

COMMANDS_GROUP = "gankit.commands"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given ``argv``, subcommands that import torch are only loaded when
    they are the one being run, so that `gankit runs` or `gankit grade` answer at once."""
    parser = argparse.ArgumentParser(prog="gankit", description="The GAN course lab kit.")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="is this server ready? GPU, driver, torch build, data, exchange")
    doctor.add_argument("--role", choices=("student", "instructor"), default=None,
                        help="whose server this is, for the checks packages add (the course's exchange): "
                        "default guessed by them; sets GANKIT_ROLE")

    def run_doctor(args):
        from gankit.doctor import main
        return main(args)

    doctor.set_defaults(func=run_doctor)
    fid = sub.add_parser("fid", help="FID between two folders of images (Inception weights from a local file)")
    fid.add_argument("first", help="folder of images, or an .npz with mu and sigma")
    fid.add_argument("second", help="folder of images, or an .npz with mu and sigma")
    fid.add_argument("--weights", default=None, help="Inception weights file (default: $GANKIT_INCEPTION_WEIGHTS "
                     "or the gankit cache); never downloaded")
    fid.add_argument("--device", default="auto")

    def run_fid(args):
        from gankit.data import DataError
        from gankit.device import pick_device
        from gankit.metrics import fid as compute_fid

        try:
            value = compute_fid(args.first, args.second, weights_path=args.weights, device=pick_device(args.device))
        except DataError as err:  # a missing weights file or folder: the message says what to do
            print(f"gankit fid: {err}", file=sys.stderr)
            return 2
        print(f"FID {value:.3f}")
        return 0

    fid.set_defaults(func=run_fid)
    from gankit.data.cli import add_parser as add_data
    add_data(sub)
    from gankit.train_cli import add_codec_parsers, add_parser as add_train, add_runs_parser, add_translate_parser
    add_train(sub)
    add_runs_parser(sub)
    add_translate_parser(sub)
    add_codec_parsers(sub)
    command = next((word for word in argv if not word.startswith("-")), None) if argv is not None else "rd"
    if command == "rd":
        from gankit.rd import add_rd_parser   # imports torch: seconds
        add_rd_parser(sub)
    else:
        sub.add_parser("rd", help="rate-distortion curves: learned codecs vs JPEG and WebP on real files")
    if argv is not None and command in sub.choices:
        return parser   # one of ours: reading the installed packages' entry points would only cost time
    for entry in registered_commands():
        full = argv is None or command == entry.name
        try:
            entry.load()(sub, full=full)
        except Exception as err:   # a broken or half-installed plugin must not take `gankit runs` down
            if full:
                print(f"gankit {entry.name}: the command registered as {entry.value} cannot be loaded "
                      f"({type(err).__name__}: {err}); reinstall the kit with `make setup`", file=sys.stderr)
                raise SystemExit(2) from None
    return parser


def registered_commands() -> list:
    """The ``gankit.commands`` entry points of the installed packages, one per name, sorted by name."""
    from importlib.metadata import entry_points

    by_name = {}
    for entry in entry_points(group=COMMANDS_GROUP):
        by_name.setdefault(entry.name, entry)   # a package seen twice on sys.path lists its commands twice
    return [by_name[name] for name in sorted(by_name)]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)  # checks a --background command before detaching it
    if args.command == "train" and getattr(args, "background", False):
        from gankit.train_cli import start_in_background
        return start_in_background(argv[argv.index("train") + 1:])
    if args.command == "train" and args.nproc_per_node > 1:
        print("gankit train: --nproc-per-node goes with --background; in the foreground use "
              "torchrun --nproc_per_node N -m gankit train ...", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
