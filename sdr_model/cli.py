"""The `sdr` console script: one entry point for the model, training, routing and the service.

Sub-command modules are imported lazily by name so that `sdr serve` (the API process) never
imports torch. Each module listed in `_COMMAND_MODULES` exposes
`register(subparsers) -> None`, adding its parser(s) with `set_defaults(func=callable)`; the
callable takes the parsed namespace and returns an exit code. Registering must not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_COMMAND_MODULES = [
    "sdr_model.commands",  # init, export, info
    "sdr_model.routing.cli",  # route
    "training.cli",  # train baseline|cluster|progressive|calibrate|all|plot
    "service.cli",  # serve, worker
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdr",
        description="SDR Router: train the 256-path supernet, route a dataset to its best sub-net, serve it.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
