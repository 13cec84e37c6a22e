"""The `gankit` command: doctor, data, train. `gankit --help` lists everything."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gankit", description="The GAN course lab kit.")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="is this server ready? GPU, driver, torch build, data, exchange")

    def run_doctor(args):
        from gankit.doctor import main
        return main(args)

    doctor.set_defaults(func=run_doctor)
    from gankit.data.cli import add_parser as add_data
    add_data(sub)
    from gankit.train_cli import add_parser as add_train
    add_train(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
