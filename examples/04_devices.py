"""The same analog layer trained on different pulsed devices.

Each device model changes how a conductance responds to an update pulse: ConstantStepDevice
moves by a constant step up to hard bounds, SoftBoundsDevice by a step that shrinks linearly
towards its bounds, ExpStepDevice by an exponentially state-dependent step and PowStepDevice by
a power-law one. A 4 → 2 AnalogLinear learns the same small linear map on each (same seed, so
the same initial weights and data) with SGD; the final loss and the weights reached are printed
per device.

    python examples/04_devices.py [--epochs N]
"""

import argparse

import torch
from torch.nn.functional import mse_loss

from refsim.torch import AnalogLinear
from refsim.torch import AnalogSGD
from refsim.configs import SingleRPUConfig
from refsim.configs import ConstantStepDevice, SoftBoundsDevice, ExpStepDevice, PowStepDevice

DEVICES = {
    "ConstantStepDevice": ConstantStepDevice(dw_min=0.002),
    "SoftBoundsDevice": SoftBoundsDevice(dw_min=0.002, w_max=1.0, w_min=-1.0),
    "ExpStepDevice": ExpStepDevice(dw_min=0.002),
    "PowStepDevice": PowStepDevice(dw_min=0.002, pow_gamma=2.0, w_max=1.0, w_min=-1.0),
}


def train(device, x: torch.Tensor, y: torch.Tensor, epochs: int) -> tuple:
    torch.manual_seed(11)  # the same initial weights for every device
    model = AnalogLinear(4, 2, rpu_config=SingleRPUConfig(device=device))
    optimizer = AnalogSGD(model.parameters(), lr=0.5)
    optimizer.regroup_param_groups(model)
    losses = []
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model.get_weights()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    torch.manual_seed(4)

    a = torch.tensor([[0.5, -0.4, 0.3, 0.2], [-0.3, 0.5, 0.4, -0.5]])
    x = torch.rand(16, 4)
    y = x @ a.T
    print("target weights:", [[round(w, 2) for w in row] for row in a.tolist()])
    for name, device in DEVICES.items():
        losses, weights = train(device, x, y, args.epochs)
        print(f"{name}: loss {losses[0]:.5f} -> {losses[-1]:.5f}; weights "
              f"{[[round(w, 2) for w in row] for row in weights.tolist()]}")


if __name__ == "__main__":
    main()
