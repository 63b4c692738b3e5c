"""refsim in PyTorch: analog layers as ``torch.nn.Module``\\ s, an analog optimizer, and the names an
aihwkit script imports from ``aihwkit.nn`` and ``aihwkit.optim`` (spec/torch.md).

Importing this package needs torch; refsim's core never imports it. A layer holds a
:class:`refsim.nn.AnalogLinear` (its "analog core": the tiles, split by ``mapping``, with their
state); a ``torch.autograd.Function`` runs the tiles' analog forward and backward passes and keeps
the (x, d) of each batch for the layer; :class:`AnalogSGD` applies each layer's update (pulsed,
compound or exact, per its config) and then its post-update step, and plain SGD for every digital
parameter (biases, learned output scales).

Examples
--------
>>> import torch
>>> from refsim.torch import AnalogLinear, AnalogSGD
>>> from refsim.configs import SingleRPUConfig, ConstantStepDevice
>>> model = AnalogLinear(4, 2, rpu_config=SingleRPUConfig(device=ConstantStepDevice()), seed=1)
>>> opt = AnalogSGD(model.parameters(), lr=0.1)
>>> opt.regroup_param_groups(model)
>>> x, target = torch.ones(3, 4), torch.zeros(3, 2)
>>> loss = ((model(x) - target) ** 2).sum()
>>> loss.backward()
>>> opt.step()
>>> float(((model(x) - target) ** 2).sum().detach()) < float(loss.detach())
True
"""

from __future__ import annotations

try:  # before torch: refsim_fast sets the OpenMP wait policy that torch's runtime then reads
    import refsim_fast  # noqa: F401
except ImportError:  # the compiled backend is optional
    pass

from refsim.torch.layers import (
    AnalogContext,
    AnalogConv1d,
    AnalogConv2d,
    AnalogLayerBase,
    AnalogLinear,
    AnalogModuleMixin,
    AnalogSequential,
    convert_to_analog,
)
from refsim.torch.optim import AnalogSGD

__all__ = ["AnalogContext", "AnalogConv1d", "AnalogConv2d", "AnalogLayerBase", "AnalogLinear",
           "AnalogModuleMixin", "AnalogSGD", "AnalogSequential", "convert_to_analog"]
