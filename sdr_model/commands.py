"""`sdr init`, `sdr export` and `sdr info`: make, extract and inspect checkpoints from the shell.

Torch is imported inside the command functions, not at registration, so `sdr serve` stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("init", help="write a randomly initialised supernet checkpoint (for tests and trials)")
    p.add_argument("--preset", default="sdr_tiny", help="registered preset name (see `sdr info --presets`)")
    p.add_argument("--seed", type=int, default=0, help="torch seed for the random initialisation")
    p.add_argument("-o", "--output", required=True, type=Path, help="checkpoint file to write (.safetensors)")
    p.set_defaults(func=_init)

    p = subparsers.add_parser("export", help="extract one sub-net as a timm-loadable safetensors file")
    p.add_argument("checkpoint", type=Path, help="supernet checkpoint (.safetensors)")
    p.add_argument("--path", required=True, help="sub-net path, 4 digits 0-3 (e.g. 0312) or an id 0-255")
    p.add_argument("-o", "--output", required=True, type=Path, help="sub-net file to write (.safetensors)")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("info", help="print a checkpoint's config, preprocessing, provenance and clusters")
    p.add_argument("checkpoint", type=Path, nargs="?", help="supernet or sub-net file (.safetensors)")
    p.add_argument("--presets", action="store_true", help="list the registered presets instead")
    p.add_argument("--json", action="store_true", help="print the raw header as JSON")
    p.set_defaults(func=_info)


def _fail(message: str) -> int:
    print(f"sdr: error: {message}", file=sys.stderr)
    return 2


def _init(args: argparse.Namespace) -> int:
    import torch

    from sdr_model import create_model, default_preprocessing, list_models, save_checkpoint

    if args.preset not in list_models():
        return _fail(f"unknown preset {args.preset!r}; choose one of {', '.join(list_models())}")
    torch.manual_seed(args.seed)
    model = create_model(args.preset)
    provenance = {"preset": args.preset, "init": f"random (seed {args.seed})", "trained": False}
    save_checkpoint(args.output, model, preprocessing=default_preprocessing(args.preset), provenance=provenance)
    print(f"wrote {args.output} ({args.preset}, random init, {model.num_params() / 1e6:.2f}M params)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from sdr_model import CheckpointError, PathError, load_checkpoint, parse_path, save_subnet

    try:
        model, meta = load_checkpoint(args.checkpoint)
        # A digit string as long as the path is a path ("0312"); any other number is an id ("54").
        as_id = args.path.isdigit() and len(args.path) != meta.config.num_stages
        path = parse_path(int(args.path) if as_id else args.path, meta.config.num_stages, meta.config.num_groups)
    except (CheckpointError, PathError) as exc:
        return _fail(str(exc))
    sizes = (meta.clusters or {}).get("sizes", {})
    save_subnet(
        args.output,
        model,
        path,
        preprocessing=meta.preprocessing,
        provenance=meta.provenance,
        cluster_size=sizes.get(path),
    )
    print(
        f"wrote {args.output}: sub-net {path}, {model.num_params(path) / 1e6:.2f}M params, "
        f"{model.subnet_num_features}-d features"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from sdr_model import CheckpointError, list_models, preset_config, read_metadata

    if args.presets:
        for name in list_models():
            print(f"{name}: {preset_config(name)}")
        return 0
    if args.checkpoint is None:
        return _fail("give a checkpoint file, or --presets")
    try:
        meta = read_metadata(args.checkpoint)
    except CheckpointError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(meta.raw, indent=2, sort_keys=True))
        return 0
    c = meta.config
    print(f"file:          {args.checkpoint} ({meta.format})")
    if meta.path is not None:
        print(f"sub-net path:  {meta.path}")
        print(f"timm kwargs:   {json.dumps(meta.timm_kwargs)}")
    print(
        f"architecture:  {c.block}, depths {list(c.depths)}, planes {list(c.planes)}, stem {c.stem_width}, "
        f"{c.in_chans} channel(s), {c.input_size} px, G={c.num_groups}, {c.num_paths} paths"
    )
    print(f"sub-nets:      planes {list(c.subnet_planes)}, {c.subnet_num_features}-d features")
    p = meta.preprocessing
    print(
        f"preprocessing: resize {p.resize}, center crop {p.input_size}, {p.channels} channel(s), "
        f"mean {list(p.mean)}, std {list(p.std)}"
    )
    for key, value in sorted(meta.provenance.items()):
        print(f"provenance:    {key} = {value}")
    clusters = meta.clusters
    if clusters:
        sizes = list((clusters.get("sizes") or {}).values())
        summary = f"{len(sizes)} clusters, sizes {min(sizes)}-{max(sizes)}" if sizes else "no sizes"
        print(f"clusters:      mapping {clusters.get('mapping')}, {summary}")
    elif meta.format == "sdr-supernet":
        print("clusters:      none (untrained or W0-only checkpoint)")
    return 0
