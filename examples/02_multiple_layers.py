"""Two analog layers in an AnalogSequential learn a small non-linear map.

A 4 → 10 → 2 multilayer perceptron (tanh hidden units, digital biases) on ConstantStepDevice
tiles, trained with AnalogSGD in mini-batches on 64 samples of y = tanh(A x); the mean squared
error over all samples is printed every 20 epochs.

    python examples/02_multiple_layers.py [--epochs N]
"""

import argparse

import torch
from torch import nn
from torch.nn.functional import mse_loss

from refsim.torch import AnalogLinear, AnalogSequential
from refsim.torch import AnalogSGD
from refsim.configs import SingleRPUConfig, ConstantStepDevice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(7)

    x = 2 * torch.rand(64, 4) - 1
    a = torch.tensor([[1.5, -1.0, 0.5, 0.0], [0.0, 1.0, -1.5, 1.0]])
    y = torch.tanh(x @ a.T)

    rpu_config = SingleRPUConfig(device=ConstantStepDevice())
    model = AnalogSequential(
        AnalogLinear(4, 10, rpu_config=rpu_config),
        nn.Tanh(),
        AnalogLinear(10, 2, rpu_config=rpu_config),
    )
    print(model)
    optimizer = AnalogSGD(model.parameters(), lr=0.5)
    optimizer.regroup_param_groups(model)

    def full_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = mse_loss(model(x), y).item()
        model.train()
        return value

    first = full_loss()
    print(f"epoch   0: loss {first:.5f} (before training)")
    for epoch in range(1, args.epochs + 1):
        for batch in torch.randperm(len(x)).split(8):
            optimizer.zero_grad()
            mse_loss(model(x[batch]), y[batch]).backward()
            optimizer.step()
        if epoch % 20 == 0 or epoch == args.epochs:
            last = full_loss()
            print(f"epoch {epoch:3d}: loss {last:.5f}")
    print(f"AnalogSequential: loss {first:.5f} -> {last:.5f}")


if __name__ == "__main__":
    main()
