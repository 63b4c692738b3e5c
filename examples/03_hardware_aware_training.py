"""Hardware-aware training, then programming and conductance drift of a digits classifier.

A 64 → 32 → 10 analog MLP on InferenceRPUConfig tiles is trained on refsim's 8×8 digits with
noisy weights in its passes (WeightModifierType.ADD_NORMAL, drawn anew after every optimizer
step) and the weights clipped to ±1. Its weights are then programmed onto PCM-like conductance
pairs (PCMLikeNoiseModel) and drifted to 1 s, 1 h, 1 day and 1 year after programming; at each
time the test loss and accuracy are printed, with global drift compensation (the factor of the
first tile is shown).

    python examples/03_hardware_aware_training.py [--epochs N]
"""

import argparse

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from refsim.torch import AnalogLinear, AnalogSequential
from refsim.torch import AnalogSGD
from refsim.configs import InferenceRPUConfig, WeightClipType, WeightModifierType
from refsim.configs import PCMLikeNoiseModel, GlobalDriftCompensation
from refsim.data import load_digits

TIMES = {"1 s": 1.0, "1 h": 3600.0, "1 day": 86400.0, "1 year": 3.15e7}


def hwa_config() -> InferenceRPUConfig:
    rpu_config = InferenceRPUConfig()
    rpu_config.modifier.type = WeightModifierType.ADD_NORMAL
    rpu_config.modifier.std_dev = 0.1            # relative to the largest weight of the tile
    rpu_config.clip.type = WeightClipType.FIXED_VALUE
    rpu_config.clip.fixed_value = 1.0
    rpu_config.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu_config.drift_compensation = GlobalDriftCompensation()
    return rpu_config


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    with torch.no_grad():
        logits = model(x)
    return cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(3)

    data = load_digits(standardize=True, xp=torch, dtype=torch.float32)
    rpu_config = hwa_config()
    model = AnalogSequential(AnalogLinear(64, 32, rpu_config=rpu_config), nn.ReLU(),
                             AnalogLinear(32, 10, rpu_config=rpu_config))
    optimizer = AnalogSGD(model.parameters(), lr=0.1)
    optimizer.regroup_param_groups(model)

    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(data.x_train)).split(16):
            optimizer.zero_grad()
            loss = cross_entropy(model(data.x_train[batch]), data.y_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch}: training loss {total / len(data.x_train):.4f}")

    model.eval()
    loss, acc = evaluate(model, data.x_test, data.y_test)
    print(f"trained (not programmed): test loss {loss:.4f}, test accuracy {100 * acc:.1f} %")
    model.program_analog_weights()
    for name, t_inference in TIMES.items():
        model.drift_analog_weights(t_inference)
        alpha = next(model.analog_tiles()).drift_compensation_factor
        loss, acc = evaluate(model, data.x_test, data.y_test)
        print(f"t = {name:>6}: test loss {loss:.4f}, test accuracy {100 * acc:.1f} % "
              f"(drift compensation {float(alpha):.3f})")


if __name__ == "__main__":
    main()
