"""Tiki-taka and chopped Tiki-taka v2 (c-TTv2): training with a fast and a slow array.

``build_config`` makes the RPU config of a training algorithm for a kind of device, as aihwkit's
does. Tiki-taka ('tiki-taka') accumulates the gradient on a fast array A and transfers it column
by column into the slow array C that holds the weights; c-TTv2 ('c-ttv2') adds a digital buffer
between them and choppers that flip the sign of the inputs to cancel the devices' offsets. The
c-TTv2 config gets the changes refsim's demo makes for small data sets (refsim.cli.DEMO_TUNING).
A 4 → 2 AnalogLinear learns a small linear map with each; the loss over all samples is printed.

    python examples/05_tiki_taka.py [--epochs N]
"""

import argparse

import torch
from torch.nn.functional import mse_loss

from refsim.torch import AnalogLinear
from refsim.torch import AnalogSGD
from refsim.configs import build_config, SoftBoundsDevice, SoftBoundsReferenceDevice


def c_ttv2_config():
    rpu_config = build_config("c-ttv2", SoftBoundsReferenceDevice)
    rpu_config.device.fast_lr = 1.0           # the fast array A learns at full speed
    rpu_config.device.in_chop_prob = 0.02     # fewer chopper flips for a short run
    rpu_config.device.transfer_update.desired_bl = 5
    rpu_config.device.transfer_update.update_management = True
    rpu_config.device.transfer_update.update_bl_management = True
    return rpu_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(5)

    a = torch.tensor([[0.5, -0.4, 0.3, 0.2], [-0.3, 0.5, 0.4, -0.5]])
    x = torch.rand(64, 4)
    y = x @ a.T

    configs = {"tiki-taka": build_config("tiki-taka", SoftBoundsDevice),
               "c-ttv2": c_ttv2_config()}
    for name, rpu_config in configs.items():
        device = rpu_config.device
        print(f"{name}: {type(rpu_config).__name__}({type(device).__name__}) of "
              f"{[type(d).__name__ for d in device.unit_cell_devices]}, "
              f"transfer_every={device.transfer_every}, fast_lr={device.fast_lr}")
        torch.manual_seed(6)  # the same initial weights and batches for both algorithms
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
                print(f"  epoch {epoch:3d}: loss {last:.5f}")
        print(f"{name}: loss {first:.5f} -> {last:.5f}")


if __name__ == "__main__":
    main()
