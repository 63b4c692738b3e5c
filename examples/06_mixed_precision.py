"""Mixed-precision training: the gradient is accumulated digitally, the devices only get pulses.

With a MixedPrecisionCompound (in a DigitalRankUpdateRPUConfig) the rank update x dᵀ is added
to a digital matrix χ (optionally with quantized x and d); whenever an element of χ reaches the
device's granularity, whole pulses are sent to that device and subtracted from χ. Two configs:
``build_config('mp', ConstantStepDevice)``, and one built by hand on soft-bounds devices with
8-bin quantization of x and d. A 4 → 2 AnalogLinear learns a small linear map with each.

    python examples/06_mixed_precision.py [--epochs N]
"""

import argparse

import torch
from torch.nn.functional import mse_loss

from refsim.torch import AnalogLinear
from refsim.torch import AnalogSGD
from refsim.configs import (
    DigitalRankUpdateRPUConfig,
    MixedPrecisionCompound,
    ConstantStepDevice,
    SoftBoundsDevice,
    build_config,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(6)

    a = torch.tensor([[0.5, -0.4, 0.3, 0.2], [-0.3, 0.5, 0.4, -0.5]])
    x = torch.rand(64, 4)
    y = x @ a.T

    by_hand = DigitalRankUpdateRPUConfig(
        device=MixedPrecisionCompound(device=SoftBoundsDevice(), n_x_bins=8, n_d_bins=8))
    configs = {"mp (build_config)": build_config("mp", ConstantStepDevice),
               "mp (by hand, 8-bin x and d)": by_hand}
    for name, rpu_config in configs.items():
        torch.manual_seed(7)  # the same initial weights and batches for both configs
        model = AnalogLinear(4, 2, rpu_config=rpu_config)
        optimizer = AnalogSGD(model.parameters(), lr=0.1)
        optimizer.regroup_param_groups(model)
        with torch.no_grad():
            first = mse_loss(model(x), y).item()
        for epoch in range(1, args.epochs + 1):
            for batch in torch.randperm(len(x)).split(8):
                optimizer.zero_grad()
                mse_loss(model(x[batch]), y[batch]).backward()
                optimizer.step()
            if epoch % 10 == 0 or epoch == args.epochs:
                with torch.no_grad():
                    last = mse_loss(model(x), y).item()
                print(f"  {name}, epoch {epoch:3d}: loss {last:.5f}")
        print(f"{name}: loss {first:.5f} -> {last:.5f}")


if __name__ == "__main__":
    main()
