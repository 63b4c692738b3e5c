"""A small training stack on analog tiles: just enough to train an MLP with any array namespace.

* :class:`AnalogLinear` -- a fully connected layer on :class:`refsim.tile.AnalogTile` (digital or
  analog bias, aihwkit's ``mapping.digital_bias``);
* :class:`ReLU`, :class:`Sigmoid`, :class:`Tanh`, :class:`AnalogSequential`, :func:`mlp`;
* :func:`cross_entropy`, :func:`mse` -- losses returning ``(loss, grad)``;
* :class:`SGD`, :func:`train_epoch`, :func:`accuracy`, :func:`permutation`.

Every module has ``forward``, ``backward``, ``update(lr)``, ``post_update_step``, ``state_dict``
and ``load_state_dict``; a model's state dict holds its tiles' states (weights, random and
noise-management state) and digital biases, so a resumed run continues exactly.

Example::

    from refsim import nn
    from refsim.configs import SingleRPUConfig, ConstantStepDevice
    from refsim.data import load_digits

    data = load_digits(standardize=True)
    model = nn.mlp([64, 64, 10], SingleRPUConfig(device=ConstantStepDevice()), seed=1)
    for epoch in range(10):
        loss = nn.train_epoch(model, data.x_train, data.y_train, lr=0.1, batch_size=16,
                              rng_seed=1, epoch=epoch)
    print(nn.accuracy(model, data.x_test, data.y_test))   # about 0.96
"""

from refsim.nn.losses import LOSSES, cross_entropy, mse
from refsim.nn.modules import (
    ACTIVATIONS,
    AnalogLinear,
    AnalogSequential,
    Module,
    ReLU,
    Sigmoid,
    Tanh,
    mlp,
)
from refsim.nn.train import SGD, accuracy, permutation, train_epoch

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "SGD",
    "AnalogLinear",
    "AnalogSequential",
    "Module",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "accuracy",
    "cross_entropy",
    "mlp",
    "mse",
    "permutation",
    "train_epoch",
]
