"""The inference demo (``refsim demo --task inference``): train the digits MLP on InferenceRPUConfig
tiles with and without hardware-aware training, program it onto PCM-like conductances, drift it to
inference times from one second to one year, and measure the test accuracy with and without
global drift compensation, over several programmings (spec/inference.md, spec/modifiers.md).

Examples
--------
>>> from refsim.nn.inference_demo import run
>>> result = run(epochs=1, repeats=1, times=(1.0,), hidden=8, limit=200)
>>> sorted(result["accuracy"])
['hwa', 'hwa+compensation', 'plain', 'plain+compensation']
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from refsim import configs
from refsim.data import load_digits
from refsim.nn.modules import mlp
from refsim.nn.train import accuracy, train_epoch

#: 1 s, 1 h, 1 day, 1 month (30 days), 1 year (365 days), in seconds.
TIMES = (1.0, 3600.0, 86400.0, 2592000.0, 31536000.0)
TIME_NAMES = {1.0: "1 s", 3600.0: "1 h", 86400.0: "1 day", 2592000.0: "1 month",
              31536000.0: "1 year"}
#: The hardware-aware training of the demo: additive weight noise (relative to the largest weight)
#: drawn anew after every step, and the weights clipped to ±1.
HWA = {"modifier.type": "AddNormal", "modifier.std_dev": 0.1, "clip.type": "FixedValue",
       "clip.fixed_value": 1.0}
VARIANTS = ("plain", "plain+compensation", "hwa", "hwa+compensation")


def demo_config(hwa: bool, compensation: bool) -> configs.InferenceRPUConfig:
    """The InferenceRPUConfig of a variant: the defaults (PCMLikeNoiseModel, analog forward with
    noise), :data:`HWA` when ``hwa``, and drift compensation only when ``compensation``."""
    cfg = configs.InferenceRPUConfig()
    if hwa:
        for dotted, value in HWA.items():
            part, field = dotted.split(".")
            setattr(getattr(cfg, part), field, value)
    if not compensation:
        cfg.drift_compensation = None
    return cfg


def time_name(t: float) -> str:
    return TIME_NAMES.get(t, f"{t:g} s")


def run(*, epochs: int = 10, lr: float = 0.1, batch_size: int = 16, hidden: int = 32,
        seed: int = 1, repeats: int = 5, times: Sequence[float] = TIMES, dtype: Any = np.float32,
        backend: str = "auto", limit: Optional[int] = None,
        say: Callable[[str], None] = lambda text: None,
        configure: Optional[Callable[[str, configs.InferenceRPUConfig], Any]] = None
        ) -> Dict[str, Any]:
    """Train, program and drift every variant; the result: ``accuracy[variant][t]`` the list of
    test accuracies over the ``repeats`` programmings, ``trained[variant]`` the accuracy right after
    training (evaluation mode, unprogrammed), ``loss[variant]`` the mean training loss of each
    epoch, and the settings.

    ``configure(variant, config)``, when given, returns the config to use for a variant in place of
    :func:`demo_config`'s (which it may change and return); ``refsim sweep`` sets config fields
    this way (refsim/sweep.py)."""
    x_train, y_train, x_test, y_test = load_digits(standardize=True, dtype=dtype)
    if limit is not None:
        x_train, y_train, x_test, y_test = (x_train[:limit], y_train[:limit], x_test[:limit],
                                            y_test[:limit])
    accuracies: Dict[str, Dict[float, List[float]]] = {}
    trained: Dict[str, float] = {}
    losses: Dict[str, List[float]] = {}
    start = time.perf_counter()
    for variant in VARIANTS:
        cfg = demo_config(variant.startswith("hwa"), variant.endswith("compensation"))
        if configure is not None:
            cfg = configure(variant, cfg)
        model = mlp([64, hidden, 10], cfg, seed=seed, dtype=dtype, backend=backend)
        losses[variant] = [train_epoch(model, x_train, y_train, lr, batch_size, seed, epoch=epoch)
                           for epoch in range(epochs)]
        trained[variant] = accuracy(model.eval(), x_test, y_test)
        per_time: Dict[float, List[float]] = {float(t): [] for t in times}
        for _ in range(repeats):
            model.program_analog_weights()     # each call: a new programming of the reference
            for t in times:
                model.drift_analog_weights(float(t))
                per_time[float(t)].append(accuracy(model, x_test, y_test))
        accuracies[variant] = per_time
        say(f"{variant:<19} trained {100 * trained[variant]:5.1f} %   "
            + "   ".join(f"{time_name(t)} {100 * np.mean(v):5.1f} %"
                         for t, v in per_time.items())
            + f"   ({time.perf_counter() - start:.0f} s)")
    return {"accuracy": accuracies, "trained": trained, "loss": losses, "epochs": epochs, "lr": lr,
            "batch_size": batch_size, "hidden": hidden, "seed": seed, "repeats": repeats,
            "times": [float(t) for t in times], "hwa": dict(HWA),
            "seconds": round(time.perf_counter() - start, 3)}


def table(result: Dict[str, Any]) -> str:
    """A Markdown table: mean ± std test accuracy (%) per inference time and variant."""
    head = "| t | " + " | ".join(VARIANTS) + " |"
    lines = [head, "|---" * (len(VARIANTS) + 1) + "|"]
    lines.append("| trained (not programmed) | " + " | ".join(
        f"{100 * result['trained'][v]:.1f}" for v in VARIANTS) + " |")
    for t in result["times"]:
        cells = []
        for v in VARIANTS:
            values = np.asarray(result["accuracy"][v][t]) * 100
            cells.append(f"{values.mean():.1f} ± {values.std():.1f}")
        lines.append(f"| {time_name(t)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path: str, result: Dict[str, Any], title: str) -> None:
    """A PNG (or any format matplotlib writes) of accuracy against log inference time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    times = result["times"]
    for v in VARIANTS:
        values = [np.asarray(result["accuracy"][v][t]) * 100 for t in times]
        ax.errorbar(times, [a.mean() for a in values], yerr=[a.std() for a in values],
                    marker="o", capsize=3, label=v)
    ax.set_xscale("log")
    ax.set_xlabel("time after programming (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["HWA", "TIMES", "VARIANTS", "demo_config", "plot", "run", "table"]

