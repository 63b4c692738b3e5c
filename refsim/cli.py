"""refsim's command line.

``refsim config ALGORITHM --device DEVICE`` prints the RPU config that ``build_config`` makes, as
JSON; ``refsim info`` tells how refsim and its compiled backend are installed. Bad arguments give a
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


def _info() -> int:
    facts = {"refsim": __version__, "refsim_fast": fast_info()}
    print(json.dumps(facts, indent=2))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "config":
        return _config(args, parser)
    return _info()
