"""refsim's command line.

``refsim config ALGORITHM --device DEVICE`` prints the RPU config that ``build_config`` makes, as
JSON; ``refsim mvm`` runs an analog matrix-vector product and prints its error against the exact
product; ``refsim info`` tells how refsim and its compiled backend are installed. Bad arguments give a
one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from refsim import __version__, fast_info
from refsim import configs


def _device_names() -> List[str]:
    return sorted(configs.PULSED_DEVICES)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refsim", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"refsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="print the RPU config of a training algorithm as JSON")
    cfg.add_argument("algorithm", help="one of: " + ", ".join(sorted(configs.ALGORITHMS)) +
                     " (or an alias)")
    cfg.add_argument("--device", default="ConstantStepDevice",
                     help="pulsed device class: " + ", ".join(_device_names()))
    cfg.add_argument("--n-devices", type=int, default=1, help="devices per cell ('sgd' only)")
    cfg.add_argument("--seed", type=int, default=0, help="construction seed")
    cfg.add_argument("--indent", type=int, default=2, help="JSON indentation")

    mvm = sub.add_parser("mvm", help="an analog matrix-vector product against the exact one")
    mvm.add_argument("--config", choices=("inference", "single"), default="inference",
                     help="InferenceRPUConfig (default) or SingleRPUConfig defaults")
    mvm.add_argument("--out-size", type=_positive, default=256)
    mvm.add_argument("--in-size", type=_positive, default=256)
    mvm.add_argument("--batch", type=_positive, default=64)
    mvm.add_argument("--seed", type=int, default=1)
    mvm.add_argument("--backend", choices=("auto", "reference", "fast"), default="auto")
    mvm.add_argument("--dtype", choices=("float32", "float64"), default="float32")

    sub.add_parser("info", help="report the installation (version, compiled backend, OpenMP)")
    return parser


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.device not in configs.PULSED_DEVICES:
        parser.error(f"--device: unknown device {args.device!r} "
                     f"(choose from {', '.join(_device_names())})")
    device = getattr(configs, args.device)
    try:
        rpu_config = configs.build_config(
            args.algorithm, device, n_devices=args.n_devices, construction_seed=args.seed
        )
    except (configs.ArgumentError, configs.ConfigError) as err:
        parser.error(str(err))
    print(rpu_config.to_json(indent=args.indent or None))
    return 0


def _mvm(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import time

    import numpy as np

    from refsim import rng
    from refsim.tile import AnalogTile

    config = configs.InferenceRPUConfig() if args.config == "inference" else \
        configs.SingleRPUConfig()
    dtype = np.dtype(args.dtype)
    try:
        tile = AnalogTile(args.out_size, args.in_size, config, seed=args.seed, dtype=dtype,
                          backend=args.backend)
        weights = (rng.uniform(args.seed, "test.a", 0, (args.out_size, args.in_size)) - 0.5)
        inputs = rng.uniform(args.seed, "test.b", 0, (args.batch, args.in_size)) * 2 - 1
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    tile.set_weights(weights.astype(dtype))
    start = time.perf_counter()
    analog = tile.forward(inputs.astype(dtype)).astype(np.float64)
    seconds = time.perf_counter() - start
    exact = inputs @ weights.T
    error = analog - exact
    backend = "fast" if tile._impl(tile.xp) is not None else "reference"
    print(f"analog forward of a {args.out_size}x{args.in_size} tile ({type(config).__name__} "
          f"defaults), batch {args.batch}, {args.dtype}, {backend} backend, seed {args.seed}:")
    print(f"  exact outputs:  rms {np.sqrt(np.mean(exact ** 2)):.4f}, "
          f"max abs {np.max(np.abs(exact)):.4f}")
    print(f"  analog error:   rms {np.sqrt(np.mean(error ** 2)):.4f} "
          f"({np.sqrt(np.mean(error ** 2) / np.mean(exact ** 2)):.2%} of the rms output), "
          f"max abs {np.max(np.abs(error)):.4f}")
    print(f"  time: {seconds * 1e3:.2f} ms")
    return 0


def _info() -> int:
    facts = {"refsim": __version__, "refsim_fast": fast_info()}
    print(json.dumps(facts, indent=2))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "config":
        return _config(args, parser)
    if args.command == "mvm":
        return _mvm(args, parser)
    return _info()
