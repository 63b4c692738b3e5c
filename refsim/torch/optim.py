"""The analog optimizer (aihwkit's ``AnalogSGD``; spec/torch.md §T3)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from refsim.torch.layers import AnalogContext


class AnalogSGD(torch.optim.SGD):
    """``torch.optim.SGD`` that also trains analog layers: :meth:`step` first takes the plain
    SGD step of every digital parameter (with the group's momentum, weight decay, ...), then
    applies each analog layer's update with the batches recorded since the last step and its
    group's learning rate (so learning-rate schedulers act on it), and then every analog layer's
    post-update step (diffusion, decay, clip, remap, modifier), as aihwkit's AnalogSGD does.

    Examples
    --------
    >>> import torch
    >>> from refsim.torch import AnalogLinear, AnalogSGD
    >>> from refsim.configs import FloatingPointRPUConfig
    >>> layer = AnalogLinear(2, 1, rpu_config=FloatingPointRPUConfig(), bias=False, seed=0)
    >>> layer.set_weights(torch.zeros(1, 2))
    >>> opt = AnalogSGD(layer.parameters(), lr=0.5)
    >>> opt.regroup_param_groups(layer)
    >>> layer(torch.tensor([[1.0, 2.0]])).sum().backward()
    >>> opt.step()
    >>> layer.get_weights()[0]
    tensor([[-0.5000, -1.0000]])
    """

    def regroup_param_groups(self, *_: Any) -> None:
        """Put each analog layer's context parameter into a group of its own (with the
        hyperparameters of the group it came from), as aihwkit does; optional — :meth:`step`
        finds the analog layers in any group."""
        groups = []
        for group in self.param_groups:
            digital = [p for p in group["params"] if not isinstance(p, AnalogContext)]
            options = {k: v for k, v in group.items() if k != "params"}
            if digital:
                groups.append(dict(options, params=digital))
            groups.extend(dict(options, params=[p]) for p in group["params"]
                          if isinstance(p, AnalogContext))
        self.param_groups = groups

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = super().step(closure)
        layers = []
        for group in self.param_groups:
            for param in group["params"]:
                if isinstance(param, AnalogContext):
                    param.analog_module.analog_update(float(group["lr"]))
                    layers.append(param.analog_module)
        for layer in layers:
            layer.post_update_step()
        return loss
