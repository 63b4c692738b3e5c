"""Toy adapters for tests/test_verify.py: refsim with one deliberate mistake each."""

import copy

from refsim.verify import RefsimAdapter


class InpResDoubled(RefsimAdapter):
    """refsim, but the forward DAC step is twice the spec's (forward.inp_res misused)."""

    name = "inp_res doubled"

    def forward(self, config, weights, x):
        config = copy.deepcopy(config)
        res = config.get("forward", {}).get("inp_res", 0)   # FloatingPointRPUConfig: no forward
        if res > 0:
            config["forward"]["inp_res"] = res * 2 if res <= 1 else res / 2   # steps > 1: half as many
        return super().forward(config, weights, x)


class LrOff(RefsimAdapter):
    """refsim, but the update uses lr·1.01."""

    name = "lr off by 1 %"

    def update(self, config, weights, x, d, lr):
        return super().update(config, weights, x, d, lr * 1.01)


def factory():
    """A factory: --against verify_adapters:factory."""
    return RefsimAdapter()
