"""``gankit data ...``: list, fetch, verify and synthesise datasets from the shell.

``add_parser(subparsers)`` hangs the ``data`` command under the main ``gankit`` parser; every
leaf sets ``func(args) -> int``. Failures print the ``DataError`` message (which says what to
do) and return 1, never a traceback.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from gankit.data.fetch import dataset_dir, fetch, is_verified, verify
from gankit.data.registry import REGISTRY, DataError, get_spec


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable; keeps type checkers calm


def _state(name: str, root: str | None) -> str:
    """Cheap state for `list`: stats only, no hashing."""
    spec = get_spec(name)
    d = dataset_dir(name, root)
    if is_verified(name, root):
        return "verified"
    if not d.is_dir():
        return "missing"
    present = [f for f in spec.files
               if (d / f.filename).is_file() and (d / f.filename).stat().st_size == f.size]
    if len(present) == len(spec.files):
        return "present, not verified"
    partial = any((d / f"{f.filename}.part").exists() for f in spec.files)
    return f"incomplete ({len(present)}/{len(spec.files)} files{', resumable' if partial else ''})"


def _friendly(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (DataError, ValueError) as err:  # ValueError: bad --seed / --n-train values
            print(f"error: {err}", file=sys.stderr)
            return 1
    return wrapper


@_friendly
def _cmd_list(args: argparse.Namespace) -> int:
    rows = [(name, _human(spec.size), _state(name, args.root), spec.layout)
            for name, spec in REGISTRY.items()]
    header = ("name", "size", "state", "layout")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\nroot: {dataset_dir(next(iter(REGISTRY)), args.root).parent}")
    return 0


@_friendly
def _cmd_fetch(args: argparse.Namespace) -> int:
    path = fetch(args.name, args.root, progress=not args.quiet)
    print(path)
    return 0


@_friendly
def _cmd_verify(args: argparse.Namespace) -> int:
    problems = verify(args.name, args.root)
    if problems:
        print(f"{args.name}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{args.name}: ok ({dataset_dir(args.name, args.root)}, sha256 and layout checked)")
    return 0


@_friendly
def _cmd_synthetic(args: argparse.Namespace) -> int:
    from gankit.data.synthetic import write_synthetic  # numpy/PIL only when needed

    get_spec(args.name)
    path = write_synthetic(args.name, args.dest, seed=args.seed, n_train=args.n_train,
                           n_test=args.n_test)
    print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data`` and its subcommands to the main CLI's ``subparsers``.

    Returns the ``data`` parser. Each leaf parser sets ``func(args) -> int`` (the exit code).
    """
    parser = subparsers.add_parser(
        "data", help="list, download, verify or synthesise datasets",
        description="Datasets live in <root>/<name>; root is --root, else $GANKIT_DATA, else "
                    "$XDG_CACHE_HOME/gankit or ~/.cache/gankit.")
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="known datasets, their size and local state")
    p.add_argument("--root", help="cache root (default: $GANKIT_DATA or ~/.cache/gankit)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("fetch", help="download (resuming), verify and unpack a dataset")
    p.add_argument("name", help="dataset name, see `gankit data list`")
    p.add_argument("--root", help="cache root (default: $GANKIT_DATA or ~/.cache/gankit)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("verify", help="recompute checksums and check the unpacked layout")
    p.add_argument("name", help="dataset name, see `gankit data list`")
    p.add_argument("--root", help="cache root (default: $GANKIT_DATA or ~/.cache/gankit)")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("synthetic", help="write a small offline stand-in in the same layout")
    p.add_argument("name", help="dataset name, see `gankit data list`")
    p.add_argument("dest", help="parent folder; the copy goes to DEST/NAME")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=None, help="training examples")
    p.add_argument("--n-test", type=int, default=None, help="test examples")
    p.set_defaults(func=_cmd_synthetic)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m gankit.data.cli data list``."""
    parser = argparse.ArgumentParser(prog="gankit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
