"""Analog layers as torch modules (spec/torch.md §T1-§T4).

Each layer holds an *analog core*, a :class:`refsim.nn.AnalogLinear` with the layer's tiles (split
by ``mapping.max_input_size``/``max_output_size``), in numpy (the fast backend) while the layer is
on the CPU and in torch on a CUDA device. Its forward pass is a ``torch.autograd.Function`` whose
forward and backward are the tiles' analog passes; the backward also keeps (x, d) of the batch
for :class:`refsim.torch.AnalogSGD`, which applies the tiles' update. Digital parameters — the
digital bias and learned output scales — are ``nn.Parameter``\\ s that torch's autograd and the
optimizer's plain SGD handle.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from refsim import checkpoint, rng
from refsim.configs import FloatingPointRPUConfig, IOManagedRPUConfig, SingleRPUConfig
from refsim.nn import AnalogLinear as _CoreLinear

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


class AnalogContext(tnn.Parameter):
    """An empty parameter that stands for a layer's analog weights among the optimizer's
    parameters (aihwkit's ``AnalogContext``): :class:`~refsim.torch.AnalogSGD` finds the layer
    through it. It requires a gradient only so that autograd always runs the layer's backward
    pass (which records the batch for the update); its own gradient stays None."""

    def __new__(cls, module: Any = None) -> "AnalogContext":
        ctx = super().__new__(cls, torch.empty(0), requires_grad=True)
        ctx.analog_module = module
        return ctx

    def __deepcopy__(self, memo: dict) -> "AnalogContext":
        # the module being copied is already in memo (copy registers it before its state)
        return AnalogContext(memo.get(id(self.analog_module), self.analog_module))

    def __reduce_ex__(self, protocol: Any) -> Any:
        return AnalogContext, (self.analog_module,)

    def __repr__(self) -> str:
        return f"AnalogContext({type(self.analog_module).__name__})"


class _AnalogFunction(torch.autograd.Function):
    """The analog passes of one layer under autograd: forward ``(batch, in) → (batch, out)``,
    backward the tiles' transposed pass; the backward keeps (x, d) for the layer's update."""

    @staticmethod
    def forward(ctx: Any, layer: "AnalogLayerBase", rows: torch.Tensor,
                analog_ctx: AnalogContext) -> torch.Tensor:
        layer._ranges_to_tiles()
        y, record = layer.analog_core.analog_forward(layer._to_core(rows, copy=True))
        layer._ranges_from_tiles()
        ctx.layer, ctx.record, ctx.in_dtype = layer, record, rows.dtype
        return layer._from_core(y).to(rows.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, torch.Tensor, None]:
        layer = ctx.layer
        d = layer._to_core(grad, copy=True)
        z = layer.analog_core.analog_backward(d, ctx.record)
        layer._range_gradients_from_tiles()
        layer._pending.append((ctx.record.xs, d))
        return None, layer._from_core(z).to(ctx.in_dtype), None


def _default_seed() -> int:
    """A layer seed from torch's generator, so that ``torch.manual_seed`` fixes a model."""
    return int(torch.randint(0, rng.MAX_SEED + 1, (), dtype=torch.int64))


class AnalogModuleMixin:
    """What every analog model offers (aihwkit's analog module methods): the analog layers and
    tiles inside it, programming and drift of all of them."""

    def analog_layers(self) -> Iterator["AnalogLayerBase"]:
        """The analog layers in this module (itself included), in module order."""
        for module in self.modules():
            if isinstance(module, AnalogLayerBase):
                yield module

    def analog_tiles(self) -> Iterator[Any]:
        """Every :class:`refsim.tile.AnalogTile` of the analog layers (e.g. for
        ``tile.drift_compensation_factor``)."""
        for layer in self.analog_layers():
            for row in layer.analog_core.tiles:
                yield from row

    def program_analog_weights(self, noise_model: Any = None) -> None:
        """Program every tile's weights with its config's noise model, or with ``noise_model``,
        which then replaces the configs' (spec/inference.md §I2, as aihwkit's); all layers or
        none."""
        layers = list(self.analog_layers())
        cores = [layer.analog_core for layer in layers]
        for layer in layers:  # each core programs a copy: a failure leaves every layer as it was
            layer.analog_core = copy.deepcopy(layer.analog_core)
        try:
            for layer in layers:
                layer.analog_core.program_analog_weights(noise_model)
        except BaseException:
            for layer, core in zip(layers, cores):
                layer.analog_core = core
            raise
        for layer in layers:
            layer.rpu_config = layer.analog_core.rpu_config

    def drift_analog_weights(self, t_inference: float = 0.0) -> None:
        """Drift every tile to ``t_inference`` seconds after programming (spec/inference.md
        §I3); all layers or none."""
        layers = list(self.analog_layers())
        states = [layer.analog_core.state_dict() for layer in layers]
        try:
            for layer in layers:
                layer.analog_core.drift_analog_weights(t_inference)
        except BaseException:
            for layer, state in zip(layers, states):
                layer.analog_core.load_state_dict(state)
            raise


class AnalogLayerBase(AnalogModuleMixin, tnn.Module):
    """The common part of the analog layers: the analog core, the context parameter, the
    digital parameters, the pending batches, device moves and checkpoints (spec/torch.md §T1)."""

    def _init_analog(self, in_features: int, out_features: int, bias: bool, rpu_config: Any,
                     tile_module_class: Any, seed: Optional[int], dtype: Any) -> None:
        if tile_module_class is not None:
            raise ValueError("tile_module_class: refsim builds its own tiles from rpu_config; "
                             "pass None")
        rpu_config = SingleRPUConfig() if rpu_config is None else rpu_config
        if not isinstance(rpu_config, (IOManagedRPUConfig, FloatingPointRPUConfig)):
            raise TypeError(f"rpu_config: expected an RPU config, got "
                            f"{type(rpu_config).__name__}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in _NUMPY_DTYPES:
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
        self.seed = _default_seed() if seed is None else seed
        self._torch_dtype = dtype
        self._device = torch.device("cpu")
        self._core_on_numpy = True  # the CPU's analog core is numpy (the fast backend)
        self.analog_core = _CoreLinear(in_features, out_features, rpu_config, bias=bias,
                                       seed=self.seed, dtype=_NUMPY_DTYPES[dtype])
        self.rpu_config = self.analog_core.rpu_config
        self.analog_ctx = AnalogContext(self)
        core = self.analog_core
        self.bias = None if not core.digital_bias else \
            tnn.Parameter(torch.from_numpy(np.array(core.bias, copy=True)))
        self.out_scale = None if core.out_scale is None else \
            tnn.Parameter(torch.from_numpy(np.array(core.out_scale, copy=True)))
        # learned input ranges (spec/mapping.md §P5): one per tile, an nn.Parameter here
        tiles = [t for row in core.tiles for t in row]
        self.input_range = None
        if tiles[0].input_range is not None:
            values = torch.cat([torch.from_numpy(np.array(t.input_range.value, copy=True))
                                for t in tiles])
            self.input_range = tnn.Parameter(
                values, requires_grad=self.rpu_config.pre_post.input_range.learn_input_range)
        self._pending: List[Tuple[List[Any], Any]] = []

    # -- conversions at the boundary --------------------------------------------------------------
    def _to_core(self, t: torch.Tensor, copy: bool = False) -> Any:
        """A tensor as an array of the analog core: a numpy view of a CPU tensor (a copy with
        ``copy``, or when the dtype differs), the tensor itself on a CUDA device."""
        if t.device != self._device:
            raise ValueError(f"x: a tensor on {t.device}, the layer is on {self._device} (move "
                             f"one of them with .to())")
        t = t.detach().to(self._torch_dtype)
        if not self._core_on_numpy:
            return t.clone() if copy else t
        a = t.contiguous().numpy()
        return np.array(a, copy=True) if copy else a

    def _from_core(self, a: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a

    # -- the learned input ranges: nn.Parameter ↔ tiles (spec/torch.md §T3) ----------------------
    def _tiles(self) -> List[Any]:
        return [t for row in self.analog_core.tiles for t in row]

    def _ranges_to_tiles(self) -> None:
        """ρ of the parameter (after the optimizer's step) into the tiles, before a forward."""
        if self.input_range is None:
            return
        values = self.input_range.detach().cpu().to(self._torch_dtype)
        if not bool(torch.all(torch.isfinite(values) & (values > 0))):
            raise ValueError(f"pre_post.input_range: the learned input range is "
                             f"{values.tolist()}; it must stay positive and finite (lower the "
                             f"learning rate or gradient_scale)")
        for k, tile in enumerate(self._tiles()):
            state = tile.input_range
            value = values[k:k + 1].numpy().copy() if self._core_on_numpy else \
                values[k:k + 1].to(self._device)
            tile.input_range = dataclasses.replace(state, value=value)

    def _ranges_from_tiles(self) -> None:
        """ρ after a training forward's data initialisation back into the parameter."""
        if self.input_range is None:
            return
        with torch.no_grad():
            for k, tile in enumerate(self._tiles()):
                self.input_range[k] = float(tile.input_range.value[0])

    def _range_gradients_from_tiles(self) -> None:
        """The tiles' accumulated ρ gradients moved into the parameter's ``.grad``, so that the
        optimizer, not the tiles' update, takes ρ's step."""
        if self.input_range is None or not self.input_range.requires_grad:
            return
        grads = []
        for tile in self._tiles():
            state = tile.input_range
            grads.append(0.0 if state.grad is None else float(state.grad[0]))
            tile.input_range = dataclasses.replace(state, grad=None)
        grad = torch.tensor(grads, dtype=self.input_range.dtype, device=self.input_range.device)
        if self.input_range.grad is None:
            self.input_range.grad = grad
        else:
            self.input_range.grad += grad

    def _analog_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``(batch, in)`` through the analog tiles under autograd (no bias, no scales)."""
        if not rows.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got {rows.dtype}")
        return _AnalogFunction.apply(self, rows, self.analog_ctx)

    def _digital_out(self, y: torch.Tensor) -> torch.Tensor:
        """The learned output scale and the digital bias on ``(batch, out)`` (§T1)."""
        if self.out_scale is not None:
            y = y * self.out_scale.to(y.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    # -- training -----------------------------------------------------------------------------------
    def analog_update(self, lr: float) -> None:
        """The tiles' update with every batch recorded since the last one (their rows
        concatenated in order), lr the optimizer group's; nothing with lr = 0 or no batch."""
        pending, self._pending = self._pending, []
        if not pending or lr == 0.0:
            return
        blocks = len(pending[0][0])
        if len(pending) == 1:
            xs, d = pending[0]
        else:
            cat = (lambda parts: np.concatenate(parts, axis=0)) \
                if isinstance(pending[0][1], np.ndarray) else (lambda parts: torch.cat(parts, 0))
            xs = [cat([p[0][k] for p in pending]) for k in range(blocks)]
            d = cat([p[1] for p in pending])
        self.analog_core.analog_update(xs, d, float(lr))

    def post_update_step(self) -> None:
        """The tiles' post-update operations (diffusion, decay, clip, remap, modifier)."""
        self.analog_core.post_update_step()

    def train(self, mode: bool = True) -> "AnalogLayerBase":
        super().train(mode)
        self.analog_core.train(mode)
        return self

    # -- weights --------------------------------------------------------------------------------------
    def _core_weights(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        w, b = self.analog_core.get_weights()
        w = self._from_core(w).detach().clone()
        if self.out_scale is not None:
            scale = self.out_scale.detach().to(w.dtype).reshape(-1, 1)
            w = scale * w
        if self.bias is not None:
            b = self.bias.detach().clone()
        elif b is not None:
            b = self._from_core(b).detach().clone()
            if self.out_scale is not None:
                b = self.out_scale.detach().to(b.dtype).reshape(-1) * b
        return w.cpu(), None if b is None else b.cpu()

    def _set_core_weights(self, w: torch.Tensor, b: Optional[torch.Tensor]) -> None:
        core = self.analog_core
        if core.has_bias != (b is not None):
            raise ValueError("bias: expected a tensor exactly when the layer has a bias")

        def arr(t: torch.Tensor) -> Any:
            t = torch.as_tensor(t).detach().to(self._torch_dtype)
            return t.cpu().numpy().copy() if self._core_on_numpy else \
                t.to(self._device).clone()

        core.set_weights(arr(w), None if b is None else arr(b))
        with torch.no_grad():
            if self.bias is not None:
                self.bias.copy_(torch.as_tensor(b).to(self.bias))
            if self.out_scale is not None:
                self.out_scale.fill_(1.0)

    # -- devices and checkpoints --------------------------------------------------------------------
    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "AnalogLayerBase":
        probe = fn(torch.empty(0, dtype=self._torch_dtype, device=self._device))
        if probe.dtype != self._torch_dtype:  # e.g. model.double(): no silent float32 tiles
            raise TypeError(f"dtype: the analog layer's tiles are {self._torch_dtype} and stay "
                            f"so (asked for {probe.dtype}); build the layer with "
                            f"dtype={probe.dtype}")
        super()._apply(fn, *args, **kwargs)
        if probe.device != self._device:
            self._move_core(probe.device)
        return self

    def _move_core(self, device: torch.device, numpy: Optional[bool] = None) -> None:
        """The analog core on ``device``: numpy (fast backend) on the CPU, torch arrays (the
        array-API reference) on another device — or in torch on the CPU with ``numpy=False``,
        the CUDA path's code on a machine without a GPU (tests); the state moves exactly
        (through refsim.checkpoint)."""
        self._device = device
        self._core_on_numpy = device.type == "cpu" if numpy is None else numpy
        buffer = io.BytesIO()
        checkpoint.save(self.analog_core, buffer)
        self._load_core(buffer.getvalue())

    def _load_core(self, data: bytes) -> None:
        buffer = io.BytesIO(data)
        if self._core_on_numpy:
            core = checkpoint.load(buffer)
        else:
            core = checkpoint.load(buffer, xp=torch, device=self._device)
        if not isinstance(core, _CoreLinear) or (core.in_features, core.out_features) != \
                (self.analog_core.in_features, self.analog_core.out_features):
            raise ValueError("state_dict: the saved analog layer has other sizes")
        core.train(self.training)
        self.analog_core, self._pending = core, []

    def get_extra_state(self) -> torch.Tensor:
        """The analog core (tiles, their random and noise state) as the bytes of a
        refsim.checkpoint file, in a uint8 tensor: ``state_dict()`` and ``torch.save`` keep it,
        and ``torch.load(weights_only=True)`` reads it."""
        buffer = io.BytesIO()
        checkpoint.save(self.analog_core, buffer)
        return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
            raise ValueError("state_dict: the layer's extra state is not a refsim checkpoint")
        self._load_core(state.cpu().numpy().tobytes())


class AnalogLinear(AnalogLayerBase):
    """``y = W x + b`` on analog tiles (aihwkit's ``AnalogLinear``; spec/torch.md §T1).

    Args:
        in_features, out_features, bias, rpu_config: as aihwkit's (``rpu_config`` default
            ``SingleRPUConfig()``; ``mapping.digital_bias`` chooses a digital ``bias``
            parameter or an analog bias column).
        tile_module_class: aihwkit's; only None.
        seed: the layer's seed (initial weights and the tiles' random streams); by default one
            drawn from torch's generator, so ``torch.manual_seed`` fixes the model.
        dtype: torch.float32 or torch.float64 (default: torch's default dtype).

    Inputs are ``(..., in_features)`` tensors on the layer's device.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rpu_config: Any = None, tile_module_class: Any = None, *,
                 seed: Optional[int] = None, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_analog(in_features, out_features, bias, rpu_config, tile_module_class, seed,
                          dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"x: expected shape (..., {self.in_features}), got "
                             f"{tuple(x.shape)}")
        rows = x.reshape(-1, self.in_features)
        y = self._digital_out(self._analog_rows(rows))
        return y.reshape(*x.shape[:-1], self.out_features)

    def get_weights(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(weight, bias)`` as CPU tensors (bias None without one)."""
        return self._core_weights()

    def set_weights(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
        """Write ``weight`` ``(out, in)`` (and ``bias``) into the tiles (pulsed devices clamp
        them to their bounds)."""
        weight = torch.as_tensor(weight)
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight: expected shape ({self.out_features}, "
                             f"{self.in_features}), got {tuple(weight.shape)}")
        self._set_core_weights(weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.analog_core.has_bias}, rpu_config={type(self.rpu_config).__name__}")


def _pair(value: Union[int, Sequence[int]], name: str, n: int) -> Tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    if isinstance(value, (tuple, list)) and len(value) == n and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise ValueError(f"{name}: expected an int or {n} ints, got {value!r}")


class AnalogConv2d(AnalogLayerBase):
    """A 2-d convolution on one logical analog tile of ``in_channels·kh·kw`` inputs and
    ``out_channels`` outputs (aihwkit's ``AnalogConv2d``; spec/torch.md §T2): the input is
    unfolded into its patches, each patch one analog matrix-vector product.

    Arguments as torch's ``Conv2d`` (``groups=1`` and ``padding_mode='zeros'`` only, as aihwkit),
    plus ``rpu_config``, ``tile_module_class``, ``seed`` and ``dtype`` as :class:`AnalogLinear`'s.
    """

    _dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", rpu_config: Any = None,
                 tile_module_class: Any = None, *, seed: Optional[int] = None,
                 dtype: Any = None) -> None:
        super().__init__()
        n = self._dims
        if groups != 1:
            raise ValueError(f"groups: analog convolutions support groups=1 only, got {groups!r}")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode: only 'zeros' is supported, got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size", n)
        self.stride = _pair(stride, "stride", n)
        self.padding = _pair(padding, "padding", n)
        self.dilation = _pair(dilation, "dilation", n)
        self.groups, self.padding_mode = groups, padding_mode
        self.in_features = in_channels * math.prod(self.kernel_size)
        self.out_features = out_channels
        self._init_analog(self.in_features, out_channels, bias, rpu_config, tile_module_class,
                          seed, dtype)

    def _unfold(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        """The patches ``(batch·L, in_features)`` of a 4-d input and the output's spatial size."""
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding,
                        stride=self.stride)
        size = tuple((x.shape[2 + k] + 2 * self.padding[k] - self.dilation[k] *
                      (self.kernel_size[k] - 1) - 1) // self.stride[k] + 1 for k in range(2))
        return cols.transpose(1, 2).reshape(-1, self.in_features), size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vector = x.dim() == 3
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"x: expected shape (N, {self.in_channels}, H, W) or "
                             f"({self.in_channels}, H, W), got {tuple(x.shape)}")
        x4 = x.unsqueeze(0) if vector else x
        rows, size = self._unfold(x4)
        y = self._digital_out(self._analog_rows(rows))
        y = y.reshape(x4.shape[0], size[0] * size[1], self.out_channels).transpose(1, 2)
        y = y.reshape(x4.shape[0], self.out_channels, *size)
        return y.squeeze(0) if vector else y

    def get_weights(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(weight (out, in, kh, kw), bias)`` as CPU tensors."""
        w, b = self._core_weights()
        return w.reshape(self.out_channels, self.in_channels, *self.kernel_size), b

    def set_weights(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
        weight = torch.as_tensor(weight)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        if tuple(weight.shape) != shape:
            raise ValueError(f"weight: expected shape {shape}, got {tuple(weight.shape)}")
        self._set_core_weights(weight.reshape(self.out_channels, -1), bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.analog_core.has_bias}, rpu_config={type(self.rpu_config).__name__}")


class AnalogConv1d(AnalogConv2d):
    """A 1-d convolution (aihwkit's ``AnalogConv1d``): :class:`AnalogConv2d` on inputs of height
    1; weights ``(out, in, k)``."""

    _dims = 1

    def _unfold(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        raise NotImplementedError  # forward below reshapes to 2-d instead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vector = x.dim() == 2
        if x.dim() not in (2, 3) or x.shape[-2] != self.in_channels:
            raise ValueError(f"x: expected shape (N, {self.in_channels}, L) or "
                             f"({self.in_channels}, L), got {tuple(x.shape)}")
        x3 = x.unsqueeze(0) if vector else x
        cols = F.unfold(x3.unsqueeze(2), (1, self.kernel_size[0]),
                        dilation=(1, self.dilation[0]), padding=(0, self.padding[0]),
                        stride=(1, self.stride[0]))
        length = cols.shape[-1]
        rows = cols.transpose(1, 2).reshape(-1, self.in_features)
        y = self._digital_out(self._analog_rows(rows))
        y = y.reshape(x3.shape[0], length, self.out_channels).transpose(1, 2)
        return y.squeeze(0) if vector else y

    def get_weights(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        w, b = self._core_weights()
        return w.reshape(self.out_channels, self.in_channels, self.kernel_size[0]), b


class AnalogSequential(AnalogModuleMixin, tnn.Sequential):
    """``torch.nn.Sequential`` with the analog-model methods (aihwkit's ``AnalogSequential``)."""


_CONVERSIONS = ((tnn.Linear, "linear"), (tnn.Conv2d, "conv2d"), (tnn.Conv1d, "conv1d"))


def _analog_twin(module: tnn.Module, rpu_config: Any, seed: Optional[int]) -> tnn.Module:
    """The analog layer of a torch Linear/Conv1d/Conv2d, with its weights."""
    bias = module.bias is not None
    dtype = module.weight.dtype if module.weight.dtype in _NUMPY_DTYPES else None
    if isinstance(module, tnn.Linear):
        layer = AnalogLinear(module.in_features, module.out_features, bias,
                             copy.deepcopy(rpu_config), seed=seed, dtype=dtype)
    else:
        cls = AnalogConv2d if isinstance(module, tnn.Conv2d) else AnalogConv1d
        layer = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                    module.padding, module.dilation, module.groups, bias, module.padding_mode,
                    copy.deepcopy(rpu_config), seed=seed, dtype=dtype)
    layer.set_weights(module.weight.detach().cpu(),
                      None if module.bias is None else module.bias.detach().cpu())
    return layer


def convert_to_analog(module: tnn.Module, rpu_config: Any, *, seed: Optional[int] = None) -> Any:
    """``module`` with every ``Linear``, ``Conv1d`` and ``Conv2d`` replaced by its analog twin
    (the weights copied; aihwkit's ``convert_to_analog``), in place, and the analog-model
    methods (:class:`AnalogModuleMixin`) added to it. Each layer gets its own seed: from
    ``seed`` (stream ``torch.layer_seed``) or from torch's generator.

    Examples
    --------
    >>> import torch
    >>> from refsim.torch import convert_to_analog
    >>> from refsim.configs import FloatingPointRPUConfig
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> net = convert_to_analog(net, FloatingPointRPUConfig(), seed=1)
    >>> [type(m).__name__ for m in net]
    ['AnalogLinear', 'ReLU', 'AnalogLinear']
    """
    counter = [0]

    def next_seed() -> Optional[int]:
        if seed is None:
            return None
        counter[0] += 1
        return int(rng.random_words(seed, "torch.layer_seed", 0, counter[0] - 1, 1)[0])

    convertible = tuple(cls for cls, _ in _CONVERSIONS)
    if type(module) in convertible:
        return _analog_twin(module, rpu_config, next_seed())

    def replace(parent: tnn.Module) -> None:
        for name, child in list(parent.named_children()):
            if type(child) in convertible:
                setattr(parent, name, _analog_twin(child, rpu_config, next_seed()))
            elif not isinstance(child, AnalogLayerBase):
                replace(child)

    replace(module)
    if not isinstance(module, AnalogModuleMixin):
        module.__class__ = type(f"Analog{type(module).__name__}",
                                (AnalogModuleMixin, type(module)), {})
    return module
