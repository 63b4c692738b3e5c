"""refsim's command line.

``refsim demo`` trains a small MLP on analog tiles to classify the 8×8 handwritten digits (the
main job; see :func:`_demo`); ``refsim config ALGORITHM --device DEVICE`` prints the RPU config that
``build_config`` makes, as JSON; ``refsim mvm`` runs an analog matrix-vector product and prints its
error against the exact product; ``refsim info`` tells how refsim and its compiled backend are
installed; ``refsim verify`` checks another implementation of analog tiles against refsim's spec
(:func:`_verify`, refsim/verify.py); ``refsim sweep SPEC --out DIR`` runs the demo at every point
of a grid as Dask tasks and ``refsim sweep --plot DIR METRIC PARAM`` draws a result
(:func:`_sweep`, refsim/sweep.py).

Errors are one line on stderr, the same for every subcommand (:func:`_error_text`):
``refsim SUBCOMMAND: error: WHAT, see 'refsim SUBCOMMAND --help'``. Exit codes (:data:`EXIT_CODES`):
0 done; 2 bad arguments, including a ``--plot`` file that cannot be written (checked before the
demo trains); 1 a valid demo run that the simulator cannot do yet (an algorithm whose update is not
implemented); 141 the reader of the output went away (``refsim config ... | head``): the output
stops quietly, without a traceback, as for a Unix tool that SIGPIPE ends (128 + 13).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, NoReturn, Optional

from refsim import __version__, fast_info
from refsim import configs
from refsim.stages import io as io_stage


#: The demo's default hyperparameters, the same for every algorithm: with these (and
#: DEMO_TUNING), sgd, c-ttv2 and agad on SoftBoundsReferenceDevice reach 93-97 % test accuracy
#: (README, "Training: refsim.nn and the demo", has the table).
DEMO_DEFAULTS: Dict[str, Any] = {"epochs": 10, "lr": 0.1, "batch_size": 16, "hidden": 64}

#: Changes the demo makes to build_config's RPU config, per algorithm (dotted field -> value;
#: ``--stock-config`` turns them off). The data set is small (1500 update rows per epoch for a
#: 64-column tile, i.e. about 23 transfer reads per column and epoch), so with build_config's
#: settings c-ttv2 and agad stay near 35-45 % after 10 epochs, in aihwkit 1.1.0 as in refsim:
#: * fast_lr 0.1 -> 1.0: the auto-scaled fast device A gets about fast_lr·desired_bl pulses per
#:   row at the largest |x·d|; with 0.1 it integrates over thousands of rows, far longer than a
#:   chopper period, so the de-chopped reads are dominated by A's lag and change sign at random;
#: * transfer_update desired_bl 1 -> 5 with update and BL management on (the management settings
#:   build_config gives agad's transfer writes): a transfer may write up to 5 pulses per element
#:   instead of 1, otherwise C moves at most dw_min per 64 rows;
#: * c-ttv2 only: in_chop_prob 0.1 -> 0.02, about one input-chopper flip per 3200 update rows
#:   (with 0.1 a column flips every ~640 rows here, against ~7800 for MNIST's 784-column first
#:   layer, too short for the plain chopped buffer; agad's dynamic reference copes with 0.1).
DEMO_TUNING: Dict[str, Dict[str, Any]] = {
    "c-ttv2": {"device.fast_lr": 1.0, "device.in_chop_prob": 0.02,
               "device.transfer_update.desired_bl": 5,
               "device.transfer_update.update_management": True,
               "device.transfer_update.update_bl_management": True},
    "agad": {"device.fast_lr": 1.0, "device.transfer_update.desired_bl": 5},
}


def demo_config(algorithm: str, device: Any, *, stock: bool = False) -> Any:
    """The demo's RPU config: ``build_config(algorithm, device)`` with the changes of
    :data:`DEMO_TUNING` for the algorithm (none when ``stock``), validated."""
    name = configs.canonical_algorithm(algorithm)
    rpu_config = configs.build_config(name, device)
    for field, value in ({} if stock else DEMO_TUNING.get(name, {})).items():
        *path, last = field.split(".")
        obj = rpu_config
        for part in path:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    return rpu_config.validate()


def _device_names() -> List[str]:
    return sorted(configs.PULSED_DEVICES)


def _integer(lo: int, hi: Optional[int], what: str) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (no upper bound when hi is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive = _integer(1, None, "a positive integer")
_non_negative = _integer(0, None, "a non-negative integer")
_seed = _integer(0, 2**32 - 1, "an integer seed in [0, 2**32 - 1]")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def _tuning_text(algorithm: str) -> str:
    return ", ".join(f"{k.replace('device.', '')}={v}" for k, v in DEMO_TUNING[algorithm].items())


#: Exit status when the reader of the output closes the pipe early (128 + SIGPIPE, as a shell
#: reports a Unix tool that SIGPIPE ends).
EXIT_BROKEN_PIPE = 141

#: The exit codes, as the help of every subcommand states them.
EXIT_CODES = ("exit codes: 0 done; 2 bad arguments (one line on stderr; for demo also a --plot file "
              "that cannot be written, checked before training); 1 a valid demo run that the "
              "simulator cannot do yet; 141 the reader of the output closed the pipe early (e.g. "
              "'| head'): the output stops quietly")


#: The exit codes of ``refsim verify`` and its default number of probes.
VERIFY_EXIT_CODES = ("exit codes: 0 every case exact or within tolerance; 1 a case differs (or the "
                     "adapter failed a request); 2 bad arguments (one line on stderr); 141 the "
                     "reader of the output closed the pipe early")
VERIFY_PROBES = 150

#: The exit codes of ``refsim sweep``.
SWEEP_EXIT_CODES = ("exit codes: 0 every point ok (or the plot written); 1 the sweep finished but "
                    "some points failed (their rows say why); 2 bad arguments or a bad SPEC (one "
                    "line on stderr, naming the SPEC key), Dask or matplotlib missing; 130 "
                    "interrupted (Ctrl-C): the finished rows are kept, --resume continues; 141 "
                    "the reader of the output closed the pipe early")


def _error_text(prog: str, message: str) -> str:
    """The one form of every command-line error, one line:
    ``PROG: error: MESSAGE, see 'PROG --help'`` (PROG is e.g. ``refsim demo``)."""
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    return f"{prog}: error: {message}, see '{prog} --help'\n"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line of :func:`_error_text` naming this (sub)parser's own
    prog, exit code 2. Subparsers are made with this class too, so ``refsim demo --epochs 0``
    names ``refsim demo --help``; the subcommands' own checks call ``args.subparser.error``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, _error_text(self.prog, message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="refsim", description=__doc__.splitlines()[0], epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"refsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cfg = sub.add_parser("config", help="print the RPU config of a training algorithm as JSON",
                         description="Print the RPU config that build_config makes for a training "
                                     "algorithm and a pulsed device, as JSON.", epilog=EXIT_CODES)
    cfg.add_argument("algorithm", help="one of: " + ", ".join(sorted(configs.ALGORITHMS)) +
                     " (or an alias)")
    cfg.add_argument("--device", default="ConstantStepDevice",
                     help="pulsed device class: " + ", ".join(_device_names()))
    cfg.add_argument("--n-devices", type=int, default=1, help="devices per cell ('sgd' only)")
    cfg.add_argument("--seed", type=int, default=0, help="construction seed")
    cfg.add_argument("--indent", type=int, default=2, help="JSON indentation")
    cfg.set_defaults(subparser=cfg)

    mvm = sub.add_parser("mvm", help="an analog matrix-vector product against the exact one",
                         description="Run an analog matrix-vector product on a tile with random "
                                     "weights and print its error against the exact product.",
                         epilog=EXIT_CODES)
    mvm.add_argument("--config", choices=("inference", "single"), default="inference",
                     help="InferenceRPUConfig (default) or SingleRPUConfig defaults")
    mvm.add_argument("--out-size", type=_positive, default=256)
    mvm.add_argument("--in-size", type=_positive, default=256)
    mvm.add_argument("--batch", type=_positive, default=64)
    mvm.add_argument("--seed", type=int, default=1)
    mvm.add_argument("--backend", choices=("auto", "reference", "fast"), default="auto")
    mvm.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    mvm.set_defaults(subparser=mvm)

    info = sub.add_parser("info", help="report the installation (version, compiled backend, OpenMP)",
                          description="Report how refsim and its compiled backend are installed "
                                      "(JSON).", epilog=EXIT_CODES)
    info.set_defaults(subparser=info)

    demo = sub.add_parser(
        "demo", help="train an MLP on analog tiles to classify the 8x8 handwritten digits",
        description="Train a 64-H-10 MLP (AnalogLinear layers, digital biases, ReLU) with SGD on "
                    "analog tiles to classify the 8x8 handwritten digits (1500 training, 297 test "
                    "images, standardized features). Prints one line per epoch and a JSON summary "
                    "line. For c-ttv2 and agad the demo adjusts build_config's config (see "
                    "--stock-config).", epilog=EXIT_CODES)
    demo.add_argument("--algorithm", default="c-ttv2",
                      help="training algorithm (build_config): " +
                      ", ".join(sorted(configs.ALGORITHMS)) + " or an alias; default c-ttv2")
    demo.add_argument("--device", default="SoftBoundsReferenceDevice",
                      help="pulsed device class: " + ", ".join(_device_names()) +
                      "; default SoftBoundsReferenceDevice")
    demo.add_argument("--backend", choices=("auto", "reference", "fast"), default="auto",
                      help="tile backend (default auto: the compiled one when installed)")
    demo.add_argument("--seed", type=_seed, default=1,
                      help="seed of the weights, the tiles' noise and the shuffling (default 1)")
    demo.add_argument("--epochs", type=_positive, default=DEMO_DEFAULTS["epochs"],
                      help=f"training epochs (default {DEMO_DEFAULTS['epochs']})")
    demo.add_argument("--lr", type=_positive_float, default=DEMO_DEFAULTS["lr"],
                      help=f"learning rate (default {DEMO_DEFAULTS['lr']})")
    demo.add_argument("--batch-size", type=_positive, default=DEMO_DEFAULTS["batch_size"],
                      help=f"mini-batch size (default {DEMO_DEFAULTS['batch_size']})")
    demo.add_argument("--hidden", type=_positive, default=None,
                      help=f"hidden units (default {DEMO_DEFAULTS['hidden']}; "
                      f"--task inference: 32)")
    demo.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    demo.add_argument("--analog-bias", action="store_true",
                      help="put the biases on the tiles (mapping.digital_bias = False)")
    demo.add_argument("--stock-config", action="store_true",
                      help="use build_config's RPU config unchanged; by default the demo sets, "
                      "for c-ttv2: " + _tuning_text("c-ttv2") + "; for agad: " +
                      _tuning_text("agad") + " (see the README)")
    demo.add_argument("--plot", metavar="PATH",
                      help="write a PNG of the training curve (needs matplotlib: pip install "
                      "'refsim[plot]'); a plot that cannot be written is an error (exit 2) "
                      "before training starts")
    demo.add_argument("--quiet", action="store_true",
                      help="print only the JSON summary (no progress bar, no epoch lines)")
    demo.add_argument("--task", choices=("train", "inference"), default="train",
                      help="train: train with --algorithm on pulsed devices (default); "
                      "inference: train on InferenceRPUConfig tiles with and without "
                      "hardware-aware training, program them onto PCM-like devices, drift to "
                      "1 s ... 1 year and print the test accuracy with and without drift "
                      "compensation (--plot: accuracy against time); --algorithm, --device, "
                      "--stock-config and --analog-bias do not apply there")
    demo.add_argument("--repeats", type=_positive, default=None,
                      help="--task inference: programmings per variant (default 5)")
    demo.add_argument("--limit", type=_positive, default=None, help=argparse.SUPPRESS)
    demo.set_defaults(subparser=demo)

    ver = sub.add_parser(
        "verify", help="check another implementation of analog tiles against refsim's spec",
        description="Check another implementation of analog tiles against refsim's spec on "
                    "deterministic cases (noise off, device spreads 0, DeterministicImplicit "
                    "pulses): the deterministic golden vectors of spec/vectors/ and randomized "
                    "probes that vary one parameter at a time. Reports per stage and parameter: "
                    "exact / within tolerance / differs, with the first differing case minimised "
                    "and its spec section (spec/verify.md).", epilog=VERIFY_EXIT_CODES)
    ver.add_argument("--against", metavar="refsim|refsim-fast|aihwkit|MODULE:ATTR", default=None,
                     help="the implementation as a Python adapter: 'refsim' (refsim's reference "
                     "backend, the default), 'refsim-fast' (its compiled backend), 'aihwkit' "
                     "(aihwkit in its own environment, needs --python) or "
                     "MODULE:ATTR, an object (or a factory of one) with forward, backward and "
                     "update methods")
    ver.add_argument("--python", metavar="PATH", default=None,
                     help="with --against aihwkit: the Python of aihwkit's environment, which "
                     "runs refsim's aihwkit adapter script (refsim/adapters/aihwkit_adapter.py)")
    ver.add_argument("--command", metavar="CMD", default=None, dest="command_adapter",
                     help="the implementation as a command adapter: run once per request, one "
                     "JSON request on stdin, one JSON result on stdout")
    ver.add_argument("--lines", action="store_true",
                     help="with --command: start the command once and send it one JSON request "
                     "per line, reading one JSON answer per line (the line mode)")
    ver.add_argument("--dtype", choices=("float64", "float32"), default=None,
                     help="the dtype of refsim's tiles that compute the expected results, with "
                     "its tolerance (default float64; for --against aihwkit float64 when its "
                     "tiles have it, else float32)")
    ver.add_argument("--probes", type=_non_negative, default=VERIFY_PROBES,
                     help=f"number of randomized probes (default {VERIFY_PROBES})")
    ver.add_argument("--seed", type=_seed, default=0, help="seed of the probes (default 0)")
    ver.add_argument("--json", action="store_true", help="write the report as JSON "
                     "(default Markdown)")
    ver.add_argument("--out", metavar="FILE", default=None,
                     help="write the report to FILE instead of stdout")
    ver.set_defaults(subparser=ver)

    sw = sub.add_parser(
        "sweep", help="run the demo over a grid of options and config fields as Dask tasks",
        description="Run refsim demo (or demo --task inference) at every point of a grid of demo "
                    "options and RPU-config fields (SPEC, a JSON file; format: spec/sweep.md, "
                    "README 'Sweeps on Dask'), each point a Dask task on a local cluster of "
                    "worker processes or an existing cluster, appending one row per finished "
                    "point to DIR/results.csv. Prints one line per point and a JSON summary. "
                    "Or, with --plot, draw a metric against a swept parameter.",
        epilog=SWEEP_EXIT_CODES)
    sw.add_argument("spec", nargs="?", metavar="SPEC", help="the sweep's spec (a JSON file)")
    sw.add_argument("--out", metavar="DIR", help="output folder: spec.json, configs/, "
                    "results.csv (created when missing)")
    where = sw.add_mutually_exclusive_group()
    where.add_argument("--workers", metavar="N", type=_non_negative, default=None,
                       help="worker processes of a local Dask cluster (default: one per CPU); "
                       "0: run the points one after another in this process, without Dask")
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run on an existing Dask cluster, e.g. tcp://host:8786 (its workers "
                       "need the same refsim installed)")
    sw.add_argument("--resume", action="store_true",
                    help="continue the sweep in DIR: skip the points that have a complete row")
    sw.add_argument("--retry-failed", action="store_true",
                    help="with --resume: run the points whose row says failed again")
    sw.add_argument("--quiet", action="store_true",
                    help="print only the JSON summary (no progress bar, no lines per point)")
    sw.add_argument("--plot", nargs=3, metavar=("DIR", "METRIC", "PARAM"), default=None,
                    help="draw METRIC (a final metric, e.g. test_accuracy) of the sweep in DIR "
                    "against the grid key PARAM, one line per other grid value (mean and std "
                    "over the seeds); needs matplotlib: pip install 'refsim[plot]'")
    sw.add_argument("--image", metavar="PATH", default=None,
                    help="with --plot: the image file (default DIR/METRIC-vs-PARAM.png)")
    sw.add_argument("--average", metavar="KEY", action="append", default=None,
                    help="with --plot: a grid key to average over (repeatable; default seed)")
    sw.set_defaults(subparser=sw)
    return parser


def _config(args: argparse.Namespace) -> int:
    parser = args.subparser
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


def _mvm(args: argparse.Namespace) -> int:
    import numpy as np

    from refsim import rng
    from refsim.tile import AnalogTile

    parser = args.subparser
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
    exact = io_stage.matmul(inputs, weights.T)  # one BLAS thread, as the tile (agreement rule 5)
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
    facts = {"refsim": __version__, "refsim_fast": fast_info(),
             "thread_count_independent": io_stage.blas_threads_held()}
    print(json.dumps(facts, indent=2))
    return 0


class _Progress:
    """A plain-text progress bar on stderr (only when it is a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.label = ""

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done}/{total}")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


def _plot_format(path: str) -> str:
    """The image format of a plot path: its suffix, PNG when it has none."""
    return os.path.splitext(path)[1][1:].lower() or "png"


def _check_plot(parser: argparse.ArgumentParser, path: Optional[str]) -> None:
    """A usage error naming ``--plot`` when a plot was asked for and cannot be written."""
    problem = _plot_problem(path) if path else None
    if problem:
        parser.error(f"--plot: {problem}")


def _plot_problem(path: str) -> Optional[str]:
    """Why the demo could not write its plot to ``path``, or None when it can: the directory
    exists and takes a new file, an existing file there is writable, matplotlib is importable
    and writes the format. Checked before training, so a bad ``--plot`` fails at once."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return f"{path} is a directory"
    if not os.path.isdir(folder):
        return f"directory {folder} does not exist"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"cannot write in directory {folder}: {err.strerror or err}"
    if os.path.exists(target) and not os.access(target, os.W_OK):
        return f"{path} is not writable"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return ("matplotlib is not installed (install the plot extra: pip install "
                "'refsim[plot]')")
    except Exception as err:   # a broken installation
        return f"matplotlib cannot be imported: {type(err).__name__}: {err}"
    formats = FigureCanvasBase.get_supported_filetypes()
    if _plot_format(path) not in formats:
        return (f"cannot write a {_plot_format(path)!r} image to {path} (matplotlib writes "
                f"{', '.join(sorted(formats))})")
    return None


def _plot(path: str, history: List[Dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["loss"] for h in history], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (cross-entropy)")
    ax2.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o", label="train")
    ax2.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="s", label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format=_plot_format(path))
    plt.close(fig)


def _demo(args: argparse.Namespace) -> int:
    """Train the MLP; see the ``demo`` subcommand's description."""
    import numpy as np

    from refsim import nn
    from refsim.data import load_digits

    parser = args.subparser
    if args.task == "inference":
        if args.hidden is None:
            args.hidden = 32   # small enough that a year of drift shows (README "Inference")
        return _inference_demo(args)
    if args.hidden is None:
        args.hidden = DEMO_DEFAULTS["hidden"]
    if args.repeats is not None:
        parser.error("--repeats goes with --task inference")
    try:
        algorithm = configs.canonical_algorithm(args.algorithm)
    except configs.ArgumentError:
        parser.error(f"--algorithm: unknown algorithm {args.algorithm!r} (choose from "
                     f"{', '.join(sorted(configs.ALGORITHMS))} or an alias)")
    if args.device not in configs.PULSED_DEVICES:
        parser.error(f"--device: unknown device {args.device!r} "
                     f"(choose from {', '.join(_device_names())})")
    _check_plot(parser, args.plot)
    try:
        rpu_config = demo_config(algorithm, getattr(configs, args.device),
                                 stock=args.stock_config)
        rpu_config.mapping.digital_bias = not args.analog_bias
        dtype = np.dtype(args.dtype)
        model = nn.mlp([64, args.hidden, 10], rpu_config, activation="relu", seed=args.seed,
                       dtype=dtype, backend=args.backend)
    except (ValueError, TypeError, configs.ArgumentError, configs.ConfigError) as err:
        parser.error(str(err))
    data = load_digits(standardize=True, dtype=dtype)
    x_train, y_train, x_test, y_test = data
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    tile = model[0].tiles[0][0]
    backend = "fast" if tile._impl(tile.xp) is not None else "reference"

    def say(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    say(f"refsim demo: 64-{args.hidden}-10 MLP (ReLU) on the 8x8 digits, {algorithm} on "
        f"{args.device} ({type(rpu_config).__name__}), {backend} backend, {args.dtype}, "
        f"{len(x_train)} training / {len(x_test)} test images, lr {args.lr}, batch "
        f"{args.batch_size}, seed {args.seed}")
    changes = {} if args.stock_config else DEMO_TUNING.get(algorithm, {})
    if changes:
        say("config changes (--stock-config: none): " + _tuning_text(algorithm))
    progress = _Progress(sys.stderr.isatty() and not args.quiet)
    history: List[Dict[str, Any]] = []
    start = time.perf_counter()
    try:
        for epoch in range(args.epochs):
            progress.label = f"epoch {epoch + 1}/{args.epochs}"
            loss = nn.train_epoch(model, x_train, y_train, args.lr, args.batch_size, args.seed,
                                  epoch=epoch, progress=progress)
            progress.clear()
            train_acc = nn.accuracy(model, x_train, y_train)
            test_acc = nn.accuracy(model, x_test, y_test)
            elapsed = time.perf_counter() - start
            history.append({"epoch": epoch + 1, "loss": round(loss, 6),
                            "train_accuracy": round(train_acc, 6),
                            "test_accuracy": round(test_acc, 6), "seconds": round(elapsed, 3)})
            say(f"epoch {epoch + 1:3d}/{args.epochs}  loss {loss:.4f}  "
                f"train {100 * train_acc:6.2f} %  test {100 * test_acc:6.2f} %  "
                f"{elapsed:7.1f} s")
    except NotImplementedError as err:
        progress.clear()
        sys.stderr.write(_error_text(parser.prog, f"{algorithm} cannot train yet: {err}"))
        return 1
    except KeyboardInterrupt:
        progress.clear()
        print("refsim demo: interrupted", file=sys.stderr)
        return 130
    last = history[-1]
    summary = {"algorithm": algorithm, "device": args.device, "backend": backend,
               "dtype": args.dtype, "seed": args.seed, "epochs": args.epochs, "lr": args.lr,
               "batch_size": args.batch_size, "hidden": args.hidden,
               "bias": "analog" if args.analog_bias else "digital",
               "config_changes": dict(changes),
               "train_samples": len(x_train), "test_samples": len(x_test),
               "loss": last["loss"], "train_accuracy": last["train_accuracy"],
               "test_accuracy": last["test_accuracy"], "seconds": last["seconds"],
               "history": history}
    return _summary_and_plot(parser, summary, args.plot, lambda path: _plot(
        path, history, f"refsim demo: {algorithm} on {args.device}, seed {args.seed}"))


def _summary_and_plot(parser: argparse.ArgumentParser, summary: Dict[str, Any],
                      path: Optional[str], draw: Callable[[str], None]) -> int:
    """Draw the plot to ``path`` (when asked; checked up front by :func:`_plot_problem`), then
    print the JSON summary; exit status 2 with a one-line error if the plot could not be
    written after all (e.g. the disk filled up since), else 0."""
    plot_error = None
    if path:
        try:
            draw(path)
            summary["plot"] = path
        except (OSError, ValueError) as err:
            plot_error = f"--plot: could not write {path}: {err}"
    print(json.dumps(summary))
    if plot_error:
        sys.stdout.flush()
        sys.stderr.write(_error_text(parser.prog, plot_error))
        return 2
    return 0


def _inference_demo(args: argparse.Namespace) -> int:
    """``refsim demo --task inference`` (refsim/nn/inference_demo.py)."""
    import numpy as np

    from refsim.nn import inference_demo

    parser = args.subparser
    defaults = {"algorithm": "c-ttv2", "device": "SoftBoundsReferenceDevice",
                "stock_config": False, "analog_bias": False}
    for name, default in defaults.items():
        if getattr(args, name) != default:
            parser.error(f"--{name.replace('_', '-')}: does not apply to --task inference "
                         f"(InferenceRPUConfig tiles, digital biases)")
    _check_plot(parser, args.plot)

    def say(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    repeats = 5 if args.repeats is None else args.repeats
    say(f"refsim demo --task inference: 64-{args.hidden}-10 MLP on the digits, "
        f"InferenceRPUConfig (PCMLikeNoiseModel), {args.epochs} epochs, lr {args.lr}, batch "
        f"{args.batch_size}, seed {args.seed}; hardware-aware training: "
        + ", ".join(f"{k} = {v}" for k, v in inference_demo.HWA.items())
        + f"; {repeats} programmings per variant")
    try:
        result = inference_demo.run(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                    hidden=args.hidden, seed=args.seed, repeats=repeats,
                                    dtype=np.dtype(args.dtype).type, backend=args.backend,
                                    limit=args.limit, say=say)
    except KeyboardInterrupt:
        print("refsim demo: interrupted", file=sys.stderr)
        return 130
    say("test accuracy (%), mean ± std over the programmings:")
    say(inference_demo.table(result))
    summary = dict(result)
    summary["accuracy"] = {v: {str(t): [round(a, 6) for a in accs] for t, accs in per.items()}
                           for v, per in result["accuracy"].items()}
    summary["trained"] = {v: round(a, 6) for v, a in result["trained"].items()}
    summary["loss"] = {v: [round(x, 6) for x in losses] for v, losses in result["loss"].items()}
    return _summary_and_plot(parser, summary, args.plot, lambda path: inference_demo.plot(
        path, result, "refsim demo --task inference: digits MLP"))


def _verify(args: argparse.Namespace) -> int:
    """Check an adapter against refsim (refsim/verify.py, spec/verify.md)."""
    from refsim import verify

    parser = args.subparser
    if args.against is not None and args.command_adapter is not None:
        parser.error("give either --against or --command, not both")
    if args.against == "aihwkit" and args.python is None:
        parser.error("--against aihwkit needs --python PATH, the Python of aihwkit's environment")
    if args.python is not None and args.against != "aihwkit":
        parser.error("--python goes with --against aihwkit")
    if args.lines and args.command_adapter is None:
        parser.error("--lines goes with --command")
    if args.out:
        target = os.path.abspath(args.out)
        if os.path.isdir(target):
            parser.error(f"--out: {args.out} is a directory")
        if not os.path.isdir(os.path.dirname(target)):
            parser.error(f"--out: directory {os.path.dirname(target)} does not exist")
    try:
        if args.command_adapter is not None:
            adapter = verify.CommandAdapter(args.command_adapter, lines=args.lines,
                                            dtype=args.dtype or "float64")
        elif args.against == "aihwkit":
            adapter = verify.aihwkit_adapter(args.python, args.dtype)
        else:
            adapter = verify.load_adapter(args.against or "refsim", args.dtype or "float64")
    except ValueError as err:
        parser.error(str(err))
    dtype = getattr(adapter, "dtype", None) if args.against == "aihwkit" else args.dtype
    try:
        report = verify.run(adapter, probes=args.probes, seed=args.seed,
                            dtype=dtype or "float64")
    finally:
        if hasattr(adapter, "close"):
            adapter.close()
    text = json.dumps(report, indent=1) + "\n" if args.json else verify.markdown(report)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as err:
            sys.stderr.write(_error_text(parser.prog, f"--out: cannot write {args.out}: "
                                                      f"{err.strerror or err}"))
            return 2
        t = report["totals"]
        print(f"refsim verify: {t['cases']} cases, {t['exact']} exact, {t['within']} within "
              f"tolerance, {t['differs']} differ; report in {args.out}")
    else:
        sys.stdout.write(text)
    return verify.exit_status(report)


def _sweep(args: argparse.Namespace) -> int:
    """``refsim sweep``: run a sweep or plot one (refsim/sweep.py)."""
    from refsim import sweep

    parser = args.subparser
    if args.plot is not None:
        return _sweep_plot(args)
    for flag, given in (("--image", args.image), ("--average", args.average)):
        if given is not None:
            parser.error(f"{flag} goes with --plot")
    if args.spec is None or args.out is None:
        parser.error("give SPEC and --out DIR (or --plot DIR METRIC PARAM)")
    if args.retry_failed and not args.resume:
        parser.error("--retry-failed goes with --resume")
    quiet = args.quiet

    def report(row: Dict[str, Any]) -> None:
        metrics = row["metrics"]
        headline = next((k for k in ("test_accuracy", "hwa+compensation@1year") if k in metrics),
                        None)
        shown = f"{headline} {metrics[headline]:.4f}" if headline else row["error"]
        params = " ".join(f"{k}={json.dumps(v)}" for k, v in row["params"].items())
        print(f"{row['status']:6} {row['point_id']}  {params}  {shown}  "
              f"{row['elapsed_s']:.1f} s  {row['worker']}".rstrip(), flush=True)

    try:
        summary = sweep.run(args.spec, args.out, workers=args.workers, scheduler=args.scheduler,
                            resume=args.resume, retry_failed=args.retry_failed,
                            progress=False if quiet else None,
                            report=None if quiet else report)
    except (ValueError, ImportError, OSError) as err:
        parser.error(str(err))
    except KeyboardInterrupt:
        sys.stdout.flush()
        table = os.path.join(args.out, sweep.TABLE)
        try:
            kept = len(sweep.load_results(args.out))
            points = len(sweep.expand(args.spec))
        except ValueError:   # interrupted before the table was started
            kept, points = 0, "?"
        print(f"refsim sweep: interrupted; {table} keeps {kept} finished points of {points} "
              f"(--resume continues)", file=sys.stderr)
        return 130
    print(json.dumps(summary))
    return 0 if summary["failed"] == 0 else 1


def _sweep_plot(args: argparse.Namespace) -> int:
    """``refsim sweep --plot DIR METRIC PARAM``."""
    from refsim import sweep

    parser = args.subparser
    for flag, given in (("SPEC", args.spec), ("--out", args.out), ("--workers", args.workers),
                        ("--scheduler", args.scheduler), ("--resume", args.resume or None),
                        ("--retry-failed", args.retry_failed or None)):
        if given is not None:
            parser.error(f"{flag} does not go with --plot")
    folder, metric, param = args.plot
    image = args.image or sweep.default_plot_path(folder, metric, param)
    problem = _plot_problem(image)
    if problem:
        parser.error(f"--plot: {problem}")
    try:
        path = sweep.plot(folder, metric, param, image, average=args.average or ("seed",))
    except (ValueError, OSError) as err:
        parser.error(f"--plot: {err}")
    print(json.dumps({"plot": path, "metric": metric, "param": param}))
    return 0


def _stdout_to_devnull() -> None:
    """Point file descriptor 1 at /dev/null, so that the interpreter's final flush of what is
    still buffered for a closed pipe does not raise (and print a traceback) at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):   # no real file behind sys.stdout
        pass


def _run(argv: List[str]) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # argparse would report them as the top-level parser's; name the subcommand
        getattr(args, "subparser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "config":
        return _config(args)
    if args.command == "mvm":
        return _mvm(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "verify":
        return _verify(args)
    if args.command == "sweep":
        return _sweep(args)
    return _info()


def main(argv: Optional[List[str]] = None) -> int:
    """The ``refsim`` command: returns the exit code (argument errors raise SystemExit(2)).

    When the reader of the output goes away (``refsim config ... | head``), the output stops
    quietly with :data:`EXIT_BROKEN_PIPE`: the BrokenPipeError is caught here, including the
    one of the last flush (done here, not at interpreter exit), and stdout is pointed at
    /dev/null so that nothing is raised at exit either."""
    try:
        try:
            return _run(sys.argv[1:] if argv is None else argv)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
