"""refsim.torch side by side with aihwkit 1.1.0's AnalogLinear + AnalogSGD (float32): a
noise-free, deterministic-pulse training run of a small model (spec/torch.md §T6). Skipped
without aihwkit."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aihwkit_peer import aihwkit_python, run_script  # noqa: E402
from refsim import configs as C  # noqa: E402
from refsim.torch import AnalogLinear, AnalogSGD, AnalogSequential  # noqa: E402

pytestmark = pytest.mark.skipif(aihwkit_python() is None,
                                reason="aihwkit is not installed beside refsim "
                                       "($REFSIM_AIHWKIT_PYTHON)")

GRID = 64.0
STEPS = 4

AIHWKIT_RUN = """
import json, numpy as np, torch
from aihwkit.nn import AnalogLinear, AnalogSequential
from aihwkit.optim import AnalogSGD
from aihwkit.simulator.configs import SingleRPUConfig
from aihwkit.simulator.configs.devices import ConstantStepDevice
from aihwkit.simulator.parameters.enums import PulseType
data = json.loads({data!r})
def config():
    dev = ConstantStepDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0,
                             up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    c = SingleRPUConfig(device=dev)
    c.forward.is_perfect = True
    c.backward.is_perfect = True
    c.update.pulse_type = PulseType.DETERMINISTIC_IMPLICIT
    return c
model = AnalogSequential(AnalogLinear(4, 3, bias=False, rpu_config=config()), torch.nn.ReLU(),
                         AnalogLinear(3, 2, bias=False, rpu_config=config()))
layers = [m for m in model.modules() if isinstance(m, AnalogLinear)]
for layer, w in zip(layers, data['weights']):
    layer.set_weights(torch.tensor(w, dtype=torch.float32))
opt = AnalogSGD(model.parameters(), lr=data['lr'])
opt.regroup_param_groups(model)
out = []
for x, t in zip(data['x'], data['t']):
    x = torch.tensor(x, dtype=torch.float32)
    loss = ((model(x) - torch.tensor(t, dtype=torch.float32)) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    out.append(dict(loss=float(loss), weights=[l.get_weights()[0].tolist() for l in layers]))
print(json.dumps(out))
"""


def _config():
    dev = C.ConstantStepDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0,
                               up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    cfg = C.SingleRPUConfig(device=dev)
    cfg.forward.is_perfect = cfg.backward.is_perfect = True
    cfg.update.pulse_type = "DeterministicImplicit"
    return cfg


def test_deterministic_training_matches_aihwkit():
    """The first step bit for bit (inputs, weights and targets on a 2⁻⁶ grid, so every product
    and sum is exact); later steps to float32 rounding: the updated weights leave the grid and
    aihwkit sums each batch row with its own matrix-vector product (spec/agreement.md rule 7)."""
    rng = np.random.default_rng(5)
    grid = lambda shape, s: np.round(rng.uniform(-s, s, shape) * GRID) / GRID  # noqa: E731
    weights = [grid((3, 4), 0.5), grid((2, 3), 0.5)]
    xs = [grid((2, 4), 1.0) for _ in range(STEPS)]
    ts = [grid((2, 2), 1.0) for _ in range(STEPS)]
    data = dict(weights=[w.tolist() for w in weights], x=[x.tolist() for x in xs],
                t=[t.tolist() for t in ts], lr=0.25)
    theirs = run_script(AIHWKIT_RUN.format(data=json.dumps(data)))
    model = AnalogSequential(AnalogLinear(4, 3, bias=False, rpu_config=_config(), seed=1),
                             torch.nn.ReLU(),
                             AnalogLinear(3, 2, bias=False, rpu_config=_config(), seed=2))
    layers = list(model.analog_layers())
    for layer, w in zip(layers, weights):
        layer.set_weights(torch.tensor(w, dtype=torch.float32))
    opt = AnalogSGD(model.parameters(), lr=0.25)
    opt.regroup_param_groups(model)
    moved = False
    for step, (x, t, their) in enumerate(zip(xs, ts, theirs)):
        loss = ((model(torch.tensor(x, dtype=torch.float32)) -
                 torch.tensor(t, dtype=torch.float32)) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert float(loss) == pytest.approx(their["loss"], rel=1e-6), step
        for layer, w, w0 in zip(layers, their["weights"], weights):
            ours = layer.get_weights()[0].numpy()
            if step == 0:
                np.testing.assert_array_equal(ours, np.float32(w))
            np.testing.assert_allclose(ours, np.float32(w), rtol=1e-5, atol=1e-6)
            moved |= not np.array_equal(ours, np.float32(w0))
    assert moved  # the run trains
