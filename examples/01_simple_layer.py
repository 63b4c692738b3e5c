"""One analog layer learns a small linear map (refsim.torch, ported from aihwkit by its imports).

A 4 → 2 AnalogLinear on a single pulsed-device tile (ConstantStepDevice) is trained with
AnalogSGD on 16 noisy samples of y = A x + b; the mean squared error is printed every 20
epochs and falls by about two orders of magnitude.

    python examples/01_simple_layer.py [--epochs N]
"""

import argparse

import torch
from torch.nn.functional import mse_loss

# aihwkit.nn, aihwkit.optim -> refsim.torch; aihwkit.simulator.configs -> refsim.configs;
# aihwkit.simulator.rpu_base.cuda -> refsim.torch.cuda
from refsim.torch import AnalogLinear
from refsim.torch import AnalogSGD
from refsim.configs import SingleRPUConfig, ConstantStepDevice
from refsim.torch import cuda


def toy_regression(samples: int = 16) -> tuple:
    """Inputs in [0, 1)^4 and targets of a fixed affine map (values well inside ±1)."""
    a = torch.tensor([[0.6, -0.4, 0.3, 0.2], [-0.3, 0.5, 0.4, -0.6]])
    b = torch.tensor([0.1, -0.2])
    x = torch.rand(samples, 4)
    return x, x @ a.T + b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(2024)  # fixes the data, the layer's seed and so every analog draw

    x, y = toy_regression()
    rpu_config = SingleRPUConfig(device=ConstantStepDevice())
    model = AnalogLinear(4, 2, bias=True, rpu_config=rpu_config)
    if cuda.is_compiled():  # a CUDA tensor runs refsim's array-API reference on the GPU
        x, y, model = x.cuda(), y.cuda(), model.cuda()
    print(model)

    optimizer = AnalogSGD(model.parameters(), lr=0.5)
    optimizer.regroup_param_groups(model)

    losses = []
    for epoch in range(args.epochs):
        optimizer.zero_grad()
        loss = mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if epoch % 20 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:3d}: loss {losses[-1]:.5f}")

    weights, bias = model.get_weights()
    print("learned weights:", [[round(w, 2) for w in row] for row in weights.tolist()],
          "bias:", [round(v, 2) for v in bias.tolist()])
    print(f"AnalogLinear: loss {losses[0]:.5f} -> {losses[-1]:.5f}")


if __name__ == "__main__":
    main()
