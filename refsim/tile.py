"""AnalogTile: one crossbar array, its state and the orchestration of the stages.

A tile holds weights ``(out_size, in_size)`` in one array namespace (numpy, torch, cupy,
array-api-strict) and on one device, the fixed periphery variation drawn at creation, and its random
state (seed + call counters, spec/rng.md §5). ``forward``/``backward`` run the IO stage
(refsim/stages/io.py) with the reference kernels or, for numpy arrays, the compiled ones
(``backend="auto" | "reference" | "fast"``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import sys
from typing import Any, Callable, Dict, Optional

import array_api_compat
import numpy as np

from refsim import rng
from refsim.configs import (
    ConfigBase,
    DigitalRankUpdateRPUConfig,
    FloatingPointRPUConfig,
    InferenceRPUConfig,
    IOManagedRPUConfig,
    IOParameters,
    PulseType,
    SingleRPUConfig,
    UnitCellRPUConfig,
    ConfigError,
    WeightRemapType,
    construction_seed_of,
)
from refsim.stages import compounds as compound_stage
from refsim.stages import inference as inference_stage
from refsim.stages import mapping as mapping_stage
from refsim.stages import modifiers as modifier_stage
from refsim.stages import devices as device_stage
from refsim.stages import drift as drift_stage
from refsim.stages import io as io_stage
from refsim.stages import update as update_stage

BACKENDS = ("auto", "reference", "fast")
_PERFECT = IOParameters(is_perfect=True)


def _fast_module() -> Any:
    try:
        import refsim_fast.io as fast_io
    except ImportError:
        return None
    return fast_io


def _is_numpy_cpu(xp: Any) -> bool:
    return xp.__name__.endswith("numpy")


def real_argument(value: Any, name: str, *, lo: float = -math.inf, hi: float = math.inf) -> float:
    """``value`` (any real: int, float, numpy scalar) as a finite float in [lo, hi], or a
    ValueError naming ``name`` (spec/README.md, "Failed calls"); the argument check of every
    numeric argument of the tile and refsim.nn."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    try:
        out = float(value)
    except OverflowError:  # a Python int beyond float64
        raise ValueError(f"{name}: {value!r} is beyond the float64 range") from None
    if not math.isfinite(out) or not lo <= out <= hi:
        want = "a finite real number" if (lo, hi) == (-math.inf, math.inf) else \
            f"a finite number in [{lo!r}, {hi!r}]"
        raise ValueError(f"{name}: expected {want}, got {value!r}")
    return out


def _atomic(compound: bool = True) -> Callable[[Callable], Callable]:
    """Decorator of the public calls that change a tile: the call completes or leaves the tile
    exactly as it was (spec/README.md, "Failed calls"). On any exception (a bad argument found
    late, an overflow, KeyboardInterrupt) the attributes, the random counters and, when the call
    may touch it (``compound``), the compound's state are restored before the error propagates.
    Stage functions return new arrays, so restoring the attribute references restores the arrays.
    """

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def guarded(self: "AnalogTile", *args: Any, **kwargs: Any) -> Any:
            if self.__dict__.get("_in_call"):  # nested in a guarded call: that one restores
                return method(self, *args, **kwargs)
            saved = self.snapshot(compound=compound)
            self._in_call = True
            try:
                return method(self, *args, **kwargs)
            except BaseException:
                self.restore(saved)
                raise
            finally:
                self.__dict__.pop("_in_call", None)

        return guarded

    return wrap


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """AnalogTile.snapshot()'s value: attribute references, random state, compound state."""

    attributes: Dict[str, Any]
    streams: Dict[str, Any]
    compound: Optional[Dict[str, Any]]


class AnalogTile:
    """One analog tile (spec/io.md for forward/backward).

    Args:
        out_size, in_size: the weight shape ``(out_size, in_size)``.
        rpu_config: an RPU config (default ``SingleRPUConfig()``); validated and copied. The
            tile's ``rpu_config`` is that copy, read-only: changing a field of it raises
            ConfigError (build a new tile from a changed ``copy.deepcopy(tile.rpu_config)``).
        seed: the tile's seed (0 … 2³²−1): per-call noise, and device/periphery variation unless
            the config sets a construction seed.
        dtype: float32 or float64 of the stored weights (default float64).
        xp: the array namespace (a module such as ``numpy`` or ``torch``; default numpy).
        device: the device of the arrays (namespace default when None).
        backend: ``"auto"`` (fast for numpy arrays when refsim_fast is installed), ``"reference"``
            or ``"fast"``.
    """

    def __init__(self, out_size: int, in_size: int, rpu_config: Optional[ConfigBase] = None, *,
                 seed: int = 0, dtype: Any = None, xp: Any = None, device: Any = None,
                 backend: str = "auto") -> None:
        for name, value in (("out_size", out_size), ("in_size", in_size)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.out_size, self.in_size = int(out_size), int(in_size)
        if self.out_size * self.in_size * 8 > sys.maxsize:
            raise ValueError(f"out_size, in_size: a ({self.out_size}, {self.in_size}) tile has more "
                             f"elements than an array can address")
        rpu_config = SingleRPUConfig() if rpu_config is None else rpu_config
        if not isinstance(rpu_config, (IOManagedRPUConfig, FloatingPointRPUConfig)):
            raise TypeError(f"rpu_config: expected an RPU config, got {type(rpu_config).__name__}")
        # the tile's own validated, read-only copy (spec/README.md, "A tile's config")
        self.rpu_config = rpu_config.frozen()
        if self.rpu_config.mapping.learn_out_scaling:  # spec/mapping.md §P4
            raise ConfigError("mapping.learn_out_scaling: a trainable output scale needs an "
                              "optimizer, which a bare tile has not; use refsim.nn.AnalogLinear")
        self.streams = rng.RandomStreams(seed)
        self.xp = rng._namespace(xp)
        self.device = device
        self.dtype = self.xp.float64 if dtype is None else dtype
        if self.dtype not in (self.xp.float32, self.xp.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if backend == "fast" and (_fast_module() is None or not _is_numpy_cpu(self.xp)):
            raise ValueError("backend: 'fast' needs refsim_fast installed and numpy arrays")
        self.backend = backend
        for direction in ("forward", "backward"):
            io_stage.check_supported(self._io(direction), direction, direction == "backward")
        try:
            self._build_state(device)
        except MemoryError:
            raise ValueError(f"out_size, in_size: the state of a ({self.out_size}, {self.in_size}) "
                             f"tile does not fit in memory") from None

    def _build_state(self, device: Any) -> None:
        """The tile's arrays: periphery and device variation, weights, compound, write noise."""
        self.construction_seed = construction_seed_of(self.rpu_config) or self.streams.seed
        self.periphery = self._draw_periphery()
        self.nm_running: Optional[float] = None
        self.weights = self.xp.zeros((self.out_size, self.in_size), dtype=self.dtype,
                                     device=device)
        self.drift_state: Optional[drift_stage.DriftState] = None
        # inference (spec/inference.md §I5): programmed state, and training/evaluation mode
        self.inference_state: Optional[inference_stage.InferenceState] = None
        self.training = True
        # hardware-aware training (spec/modifiers.md §M4): Ŵ of the last step, None until one
        self.modified_weights: Any = None
        # digital output scales α (spec/mapping.md §P1): W = α·W_s row-wise; None means all 1
        self.out_scales: Any = None
        # the learned input range ρ (spec/mapping.md §P5), None unless pre_post enables it
        ir = self.rpu_config.pre_post.input_range
        self.input_range: Optional[mapping_stage.InputRange] = \
            mapping_stage.initial_input_range(self.xp, ir, self.dtype, device) if ir.enable \
            else None
        self.device_params: Optional[device_stage.DeviceParams] = None
        if self._pulsed_device() is not None:
            device_stage.check_supported(self.rpu_config.device, "device.")
            self.device_params = self._draw_device()
        # write noise (spec/devices.md §V8): the persistent weights the device keeps, while
        # self.weights are the apparent ones; pulse counters (§V9): down, up per element
        self.persistent: Any = None
        self.pulse_counters: Any = None
        # compound devices (spec/compounds.md): None until their class is implemented
        self.compound: Optional[compound_stage.Compound] = None
        if isinstance(self.rpu_config, (UnitCellRPUConfig, DigitalRankUpdateRPUConfig)):
            try:
                self.compound = compound_stage.build(self._compound_context(), self.rpu_config)
            except NotImplementedError:
                self.compound = None  # forward/backward work; update raises
            if self.compound is not None:
                self.weights = self.compound.weights()
        if self.device_params is not None:
            if device_stage.write_noise_scale(self.rpu_config.device) > 0.0:
                self.persistent = self.xp.zeros_like(self.weights)
            if self.rpu_config.device.count_pulses:
                self.pulse_counters = self.xp.zeros((2, self.out_size, self.in_size),
                                                    dtype=self.xp.int64, device=device)

    # -- configuration ----------------------------------------------------------------------------
    def _draw_periphery(self) -> Dict[str, io_stage.Periphery]:
        """The fixed periphery variation of both directions (spec/io.md §S2)."""
        sizes = {"forward": (self.out_size, self.in_size), "backward": (self.in_size, self.out_size)}
        return {
            direction: io_stage.draw_periphery(self.xp, self._io(direction), out, inp,
                                               self.construction_seed, direction,
                                               self.xp.float64, self.device)
            for direction, (out, inp) in sizes.items()
        }

    def _pulsed_device(self) -> Any:
        """The pulsed device of a SingleRPUConfig tile (None for other configs and for pulse
        type 'None', which replaces the device by a floating-point one, spec/devices.md §V4)."""
        if type(self.rpu_config) is not SingleRPUConfig:
            return None
        dev = self.rpu_config.device
        if not device_stage.is_pulsed(dev) or self.rpu_config.update.pulse_type == PulseType.NONE:
            return None
        return dev

    def _compound_context(self) -> compound_stage.Context:
        return compound_stage.Context(
            xp=self.xp, dtype=self.dtype, device=self.device,
            shape=(self.out_size, self.in_size), seed=self.streams.seed,
            construction_seed=self.construction_seed, streams=self.streams,
            fast_update=self._fast_update_module(), fast_io=self._impl(self.xp))

    def _draw_device(self) -> device_stage.DeviceParams:
        return device_stage.draw_device(self.xp, self.rpu_config.device,
                                        (self.out_size, self.in_size), self.construction_seed,
                                        0, dtype=self.dtype, device=self.device,
                                        draws=self._draws())

    def _io(self, direction: str) -> IOParameters:
        if isinstance(self.rpu_config, FloatingPointRPUConfig):
            return _PERFECT
        return getattr(self.rpu_config, direction)

    def _impl(self, xp: Any) -> Any:
        if self.backend == "reference":
            return None
        fast = _fast_module()
        if fast is None or not _is_numpy_cpu(xp):
            return None
        return fast

    # -- weights ----------------------------------------------------------------------------------
    @_atomic()
    def set_weights(self, weights: Any, *, clip: bool = False) -> None:
        """Store ``weights`` ``(out_size, in_size)`` (copied, in the tile's dtype).

        ``clip=True`` clamps them to the device bounds of a pulsed device, as aihwkit's
        set_weights always does (spec/devices.md §V4); the default stores them unchanged, so
        forward/backward of a SingleRPUConfig tile see the given weights (spec/io.md golden
        vectors use weights beyond the default device bounds)."""
        if not isinstance(clip, bool):
            raise TypeError(f"clip: expected a bool, got {type(clip).__name__}")
        w = self._check_array(weights, "weights", (self.out_size, self.in_size), exact=True)
        w = self.xp.astype(w, self.dtype, copy=True)
        if not bool(self.xp.all(self.xp.isfinite(w))):
            raise ValueError(f"weights: values beyond the range of the tile's dtype "
                             f"{_dtype_name(self.dtype)} (they would be stored as infinity)")
        mapping = self.rpu_config.mapping
        self.out_scales = None
        if mapping.weight_scaling_omega > 0:  # store W/α (spec/mapping.md §P1)
            self.out_scales = mapping_stage.weight_scales(
                self.xp, w, float(mapping.weight_scaling_omega),
                mapping.weight_scaling_columnwise)
            w = w / self.xp.reshape(self.out_scales, (-1, 1))
        self._store_weights(w, clip)

    def _store_weights(self, w: Any, clip: bool = False) -> None:
        """Store the (already scaled) weights W_s: compound distribution, device clamp, write
        noise (the part of set_weights after the output scales)."""
        self.weights = self.xp.astype(w, self.dtype, copy=True)
        self.modified_weights = None  # the next forward reads the new weights (§M4)
        if not bool(self.xp.all(self.xp.isfinite(self.weights))):
            raise ValueError(f"weights: values beyond the range of the tile's dtype "
                             f"{_dtype_name(self.dtype)} (they would be stored as infinity)")
        if self.compound is not None:  # the compound distributes them (spec/compounds.md)
            self.compound.set_weights(self.weights)
            self.weights = self.compound.weights()
            return
        if clip and self.device_params is not None:  # pulsed devices clamp to their bounds
            self.weights = device_stage.clip_weights(self.xp, self.weights, self.device_params)
        if self.persistent is not None:  # write noise (spec/devices.md §V8)
            self.persistent = self.weights
            if self.rpu_config.device.apply_write_noise_on_set:
                self._redraw_write_noise()

    def get_weights(self, apply_weight_scaling: bool = True) -> Any:
        """A copy of the weights (with write noise: the apparent weights, spec/devices.md §V8):
        the logical weights α·W_s of a tile with output scales (spec/mapping.md §P1), or the
        stored W_s with ``apply_weight_scaling=False`` (aihwkit's argument)."""
        if not isinstance(apply_weight_scaling, bool):
            raise TypeError(f"apply_weight_scaling: expected a bool, got "
                            f"{type(apply_weight_scaling).__name__}")
        if apply_weight_scaling and self.out_scales is not None:
            return self.xp.reshape(self.out_scales, (-1, 1)) * self.weights
        return self.xp.asarray(self.weights, copy=True)

    def get_persistent_weights(self) -> Any:
        """A copy of the persistent weights of a device with write noise (spec/devices.md §V8),
        None without write noise (then the weights are the persistent ones)."""
        return None if self.persistent is None else self.xp.asarray(self.persistent, copy=True)

    def get_pulse_counters(self) -> Any:
        """The pulses applied to each element since the tile was created (spec/devices.md §V9):
        an int64 array (2, out_size, in_size), ``[0]`` the down pulses (weight-decreasing),
        ``[1]`` the up pulses; an empty int64 array (0,) unless the device has count_pulses."""
        if self.pulse_counters is None:
            return self.xp.zeros((0,), dtype=self.xp.int64, device=self.device)
        return self.xp.asarray(self.pulse_counters, copy=True)

    def _device_weights(self) -> Any:
        """The weights the device operations act on: the persistent ones with write noise."""
        return self.weights if self.persistent is None else self.persistent

    def _set_device_weights(self, w: Any) -> None:
        """Store the result of a device operation: with write noise, as the persistent weights,
        then redraw every apparent value (spec/devices.md §V8)."""
        if self.persistent is None:
            self.weights = w
        else:
            self.persistent = w
            self._redraw_write_noise()

    def _redraw_write_noise(self) -> None:
        """Apparent = persistent + ω·dw_min·ξ for every element, the next call of
        ``device.write_noise_all`` (spec/devices.md §V8)."""
        call = self.streams.next_call("device.write_noise_all")
        self.weights = device_stage.write_noise_all(
            self.xp, self.persistent, device_stage.write_noise_scale(self.rpu_config.device),
            self.streams.seed, call)

    # -- the analog passes ------------------------------------------------------------------------
    @_atomic(compound=False)
    def forward(self, x: Any, *, context: Optional[mapping_stage.PassContext] = None) -> Any:
        """``y = f(W x)`` for ``x`` of shape ``(in_size,)`` or ``(batch, in_size)``; in evaluation
        mode (:meth:`eval`) a drifted InferenceRPUConfig tile with drift compensation multiplies
        the outputs by its factor α (spec/inference.md §I4).

        With a learned input range (spec/mapping.md §P5) the analog pass sees clip(x, ±ρ)/ρ and
        the output is multiplied by ρ; a training-mode pass first refines ρ from the data.
        ``context`` (a :class:`refsim.stages.mapping.PassContext`, as a layer's autograd keeps
        one per batch) receives what :meth:`backward` of the same batch needs: x and the mask of
        outputs at the output bound (§P6)."""
        ir = self.input_range
        if ir is not None:  # (without one, the pass checks x itself: one check per call)
            x = self._check_array(x, "x", (self.in_size,))
            if self.training:
                rows = x if x.ndim == 2 else self.xp.reshape(x, (1, -1))
                ir = mapping_stage.init_from_data(self.xp, ir, rows,
                                                  self.rpu_config.pre_post.input_range)
            x_in = mapping_stage.apply_input_range(self.xp, x, ir.value)
        else:
            x_in = x
        y = self._pass(x_in, "forward", "x", self.in_size, self._read_weights())
        if context is not None:
            context.x = x
            context.out_mask = mapping_stage.output_clip_mask(
                self.xp, y, mapping_stage.output_bound(self._analog_io("forward")))
        scale = None if ir is None else ir.value
        if self.out_scales is not None:  # spec/mapping.md §P2
            scale = self.out_scales if scale is None else scale * self.out_scales
        if scale is not None:
            y = y * scale
        self.input_range = ir
        state = self.inference_state
        if not self.training and state is not None and state.baseline is not None:
            y = y * state.factor
        return y

    def train(self, mode: bool = True) -> "AnalogTile":
        """Training mode (the default) or, with ``mode=False``, evaluation mode, in which drift
        compensation applies (spec/inference.md §I4). Returns the tile (as torch's modules do)."""
        if not isinstance(mode, bool):
            raise TypeError(f"mode: expected a bool, got {type(mode).__name__}")
        self.training = mode
        return self

    def eval(self) -> "AnalogTile":
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    @_atomic(compound=False)
    def backward(self, d: Any, *, context: Optional[mapping_stage.PassContext] = None) -> Any:
        """``z = f(Wᵀ d)`` for ``d`` of shape ``(out_size,)`` or ``(batch, out_size)``.

        With the ``context`` of the forward pass of the same batch (spec/mapping.md §P5, §P6),
        d is zeroed where that forward output was at the output bound, and a learned input range
        adds this batch's gradient to ρ's, which the next :meth:`update` applies."""
        mask = None if context is None or context.x is None else context.out_mask
        if self.out_scales is not None or mask is not None:  # else the pass checks d itself
            d = self._check_array(d, "d", (self.out_size,))
        if self.out_scales is not None:  # spec/mapping.md §P2: d·α before the pass
            d = d * self.out_scales
        if mask is not None:
            if tuple(mask.shape) != tuple(d.shape):
                raise ValueError(f"d: shape {tuple(d.shape)}, but the forward pass of this "
                                 f"context had outputs of shape {tuple(mask.shape)}")
            d = self.xp.where(mask, self.xp.zeros_like(d), d)
        z = self._pass(d, "backward", "d", self.out_size,
                       self.xp.matrix_transpose(self._read_weights()))
        ir = self.input_range
        params = self.rpu_config.pre_post.input_range
        if ir is not None and params.learn_input_range and context is not None \
                and context.x is not None:
            if tuple(context.x.shape[:-1]) != tuple(z.shape[:-1]):
                raise ValueError(f"d: {tuple(d.shape)}, but the forward pass of this context "
                                 f"had inputs of shape {tuple(context.x.shape)}")
            g = mapping_stage.range_gradient(self.xp, context.x, z, ir.value, params,
                                             context.out_mask)
            self.input_range = dataclasses.replace(ir, grad=g if ir.grad is None else ir.grad + g)
        return z

    def _analog_io(self, direction: str) -> Optional[IOParameters]:
        """The IOParameters of an analog pass, None for a FloatingPointRPUConfig tile."""
        if isinstance(self.rpu_config, FloatingPointRPUConfig):
            return None
        return self._io(direction)

    def _read_weights(self) -> Any:
        """The weights the analog passes read: the modified Ŵ of the last step while training
        (and in evaluation with enable_during_test), else W (spec/modifiers.md §M4)."""
        if self.modified_weights is not None and (
                self.training or self.rpu_config.modifier.enable_during_test):
            return self.modified_weights
        return self.weights

    def _pass(self, x: Any, direction: str, name: str, size: int, weights: Any) -> Any:
        x = self._check_array(x, name, (size,))
        xp = self.xp
        vector = x.ndim == 1
        rows = xp.reshape(x, (1, size)) if vector else x
        io = self._io(direction)
        w = weights if weights.dtype == rows.dtype else xp.astype(weights, rows.dtype)
        periphery = _cast_periphery(xp, self.periphery[direction], rows.dtype)
        halves = 2 if io.mv_type in io_stage.POS_NEG else 1
        draws = io_stage.Draws(self.streams.seed, self.streams.next_call(f"io.{direction}"),
                               direction, rows.shape[0], halves)
        mvm = io_stage.driver(self._impl(xp))
        y, self.nm_running = mvm(xp, rows, w, io, periphery, draws,
                                 backward=direction == "backward", nm_running=self.nm_running)
        if not _all_finite(xp, y):  # spec/io.md §S9: no silent infinity or NaN
            raise ValueError(f"{name}: the {direction} result overflows "
                             f"{_dtype_name(rows.dtype)} (max abs({name}) = "
                             f"{float(xp.max(xp.abs(rows)))!r}); scale {name} down")
        return xp.reshape(y, (-1,)) if vector else y

    # -- update ---------------------------------------------------------------------------------------
    @_atomic()
    def update(self, x: Any, d: Any, lr: float) -> None:
        """The weight update W ← W − lr·dᵀx (spec/devices.md §V4), one update cycle per batch row
        in row order. ``x`` is ``(in_size,)`` or ``(batch, in_size)``, ``d`` ``(out_size,)`` or
        ``(batch, out_size)`` with the same batch, ``lr`` a finite number.

        A pulsed device (SingleRPUConfig) turns each row into pulse trains (spec/pulses.md) and
        applies them to the devices; pulse type 'NoneWithDevice' applies the exact outer product
        of each row and clamps to the device bounds; pulse type 'None', IdealDevice,
        InferenceRPUConfig and FloatingPointRPUConfig tiles do one exact GEMM without bounds.
        """
        lr = real_argument(lr, "lr")
        x = self._check_array(x, "x", (self.in_size,))
        d = self._check_array(d, "d", (self.out_size,))
        xp = self.xp
        xs = xp.reshape(x, (1, self.in_size)) if x.ndim == 1 else x
        ds = xp.reshape(d, (1, self.out_size)) if d.ndim == 1 else d
        if xs.shape[0] != ds.shape[0]:
            raise ValueError(f"x, d: the batch sizes differ ({xs.shape[0]} rows of x, "
                             f"{ds.shape[0]} rows of d)")
        mode = self._update_mode()
        xs, ds = xp.astype(xs, self.dtype), xp.astype(ds, self.dtype)
        if self.input_range is not None:  # spec/mapping.md §P5: x̂ with ρ, then ρ's step
            xs = mapping_stage.apply_input_range(xp, xs, self.input_range.value)
            self.input_range = mapping_stage.step_input_range(xp, self.input_range, lr)
        if self.out_scales is not None:  # spec/mapping.md §P2: W_s ← W_s − lr·(d/α)ᵀx
            ds, lr = mapping_stage.scaled_update(xp, ds, lr, self.out_scales,
                                                 self.rpu_config.mapping)
        self._apply_update(mode, xs, ds, lr)
        if not bool(xp.all(xp.isfinite(self.weights))):  # the call is undone (_atomic)
            raise ValueError(f"x, d, lr: the update lr·dᵀx overflows "
                             f"{_dtype_name(self.dtype)} (lr = {lr!r}, max abs(x) = "
                             f"{float(xp.max(xp.abs(xs)))!r}, max abs(d) = "
                             f"{float(xp.max(xp.abs(ds)))!r}); the weights are unchanged")

    def _apply_update(self, mode: str, xs: Any, ds: Any, lr: float) -> None:
        xp = self.xp
        if mode == "compound":
            self.compound.update(xs, ds, lr)
            self.weights = self.compound.weights()
            return
        if mode == "simple":
            self.weights = self.weights - lr * io_stage.matmul(xp.matrix_transpose(ds), xs)
            return
        params = self.device_params
        if mode == "none_with_device":
            w = self._device_weights()
            for k in range(xs.shape[0]):
                outer = xp.reshape(ds[k, :], (-1, 1)) * xp.reshape(xs[k, :], (1, -1))
                w = device_stage.clip_weights(xp, w - lr * outer, params)
            if self.persistent is None or lr != 0.0:  # write noise: one redraw per update
                self._set_device_weights(w)
            return
        self._pulsed_update(xs, ds, lr)

    def _pulsed_update(self, xs: Any, ds: Any, lr: float) -> None:
        """One pulsed update cycle per row of ``xs`` / ``ds`` (spec/pulses.md, spec/devices.md
        §V3), each cycle taking the next call of the ``update`` counter; compiled for numpy
        arrays unless the backend is "reference"."""
        noisy, counting = self.persistent is not None, self.pulse_counters is not None
        first = self.streams.next_calls("update", xs.shape[0])
        w, last_touch, pulses = update_stage.pulsed_cycles(
            self.xp, self._device_weights(), xs, ds, lr, self.rpu_config.device,
            self.rpu_config.update, self.device_params, self.streams.seed, first,
            fast=self._fast_update_module(), track_touch=noisy, count=counting)
        if noisy:
            self.persistent = w
        else:
            self.weights = w
        if noisy or counting:
            self._after_pulses(last_touch, pulses)

    def _after_pulses(self, last_touch: Any, pulse_counts: Any) -> None:
        """Finish a pulsed update whose pulses were applied to :meth:`_device_weights` (and
        stored back there): the write noise of the pulsed elements and the pulse counters
        (spec/devices.md §V8, §V9).

        ``last_touch``: int64 (out_size, in_size), per element the call number (``update``
        counter) of the last cycle of this update with a non-zero count, −1 if none; needed when
        ``self.persistent`` is not None, else ignored. ``pulse_counts``: int64
        (2, out_size, in_size), the down ([0]) and up ([1]) pulses of this update's cycles; needed
        when ``self.pulse_counters`` is not None, else ignored."""
        xp = self.xp
        if self.persistent is not None:
            if last_touch is None:
                raise ValueError("last_touch: required when the device has write noise")
            cfg = self.rpu_config.device
            touch = device_stage.responsive_touch(xp, last_touch, self.device_params, cfg)
            self.weights = device_stage.write_noise(xp, self.persistent, self.weights, touch,
                                                    device_stage.write_noise_scale(cfg),
                                                    self.streams.seed)
        if self.pulse_counters is not None:
            if pulse_counts is None or tuple(pulse_counts.shape) != \
                    tuple(self.pulse_counters.shape):
                raise ValueError(f"pulse_counts: expected shape {tuple(self.pulse_counters.shape)}"
                                 f" when the device counts pulses")
            self.pulse_counters = self.pulse_counters + xp.astype(pulse_counts, xp.int64)

    def _fast_update_module(self) -> Any:
        """refsim_fast.update when this tile uses the fast backend for its pulsed update."""
        if self.backend == "reference" or not _is_numpy_cpu(self.xp):
            return None
        try:
            import refsim_fast.update as fast_update
        except ImportError:
            return None
        return fast_update

    def _inference_module(self) -> Any:
        """refsim_fast.inference when this tile uses the fast backend, else the reference
        stage (the same functions, spec/inference.md)."""
        if self._fast_update_module() is None:
            return inference_stage
        try:
            import refsim_fast.inference as fast_inference
        except ImportError:
            return inference_stage
        return fast_inference

    def _draws(self) -> Any:
        """The random draws of the device operations: refsim.rng, or the same numbers from the
        compiled streams (refsim_fast.update) when the tile uses the fast backend."""
        fast = self._fast_update_module()
        return rng if fast is None else fast

    def _update_mode(self) -> str:
        """'simple' (exact GEMM, no bounds), 'none_with_device', 'pulsed' or 'compound'."""
        config = self.rpu_config
        if isinstance(config, (FloatingPointRPUConfig, InferenceRPUConfig)):
            return "simple"
        if type(config) is SingleRPUConfig:
            if self.device_params is None:
                return "simple"  # IdealDevice, or pulse type 'None'
            if config.update.pulse_type == PulseType.NONE_WITH_DEVICE:
                return "none_with_device"
            return "pulsed"
        if self.compound is not None:
            return "compound"
        raise NotImplementedError(
            f"update: the update of a {type(config).__name__} (compound devices) is not "
            f"implemented yet; SingleRPUConfig, InferenceRPUConfig and FloatingPointRPUConfig "
            f"tiles update")

    # -- post-update operations ---------------------------------------------------------------------
    def _simple_device(self) -> Any:
        """The device whose simple-device rules apply (spec/devices.md §V4)."""
        self._update_mode()  # rejects compounds
        return self.rpu_config.device

    @_atomic()
    def decay_weights(self) -> None:
        """One decay step (spec/devices.md §V4): pulsed devices relax toward their reset bias,
        w ← β + (w − β)·κ, and clamp (only when lifetime > 0); the simple rules multiply by
        (1 − 1/lifetime) when lifetime > 1. Compounds decay each of their devices."""
        xp = self.xp
        if self.compound is not None:
            self.compound.decay()
            self.weights = self.compound.weights()
            return
        if self.device_params is not None:
            if self.rpu_config.device.lifetime > 0.0:
                self._set_device_weights(device_stage.decay_weights(
                    xp, self._device_weights(), self.device_params))
            return
        lifetime = self._simple_device().lifetime
        if lifetime > 1.0:
            self.weights = self.weights * (1.0 - 1.0 / lifetime)

    @_atomic()
    def diffuse_weights(self) -> None:
        """One diffusion step (spec/devices.md §V4): w ← w + ρ·ξ and clamp for pulsed devices,
        w ← w + diffusion·ξ without clamp for the simple rules; nothing when diffusion = 0. Each
        call that diffuses draws call ``device.diffusion_noise`` of the tile's seed."""
        if self.compound is not None:
            self.compound.diffuse()
            self.weights = self.compound.weights()
            return
        xp = self.xp
        dev = self._simple_device()
        if dev.diffusion <= 0.0:
            return
        call = self.streams.next_call("device.diffusion_noise")
        if self.device_params is not None:
            self._set_device_weights(device_stage.diffuse_weights(
                xp, self._device_weights(), self.device_params, self.streams.seed, call,
                self._draws()))
            return
        xi = self._draws().normal(self.streams.seed, "device.diffusion_noise", call,
                                  (self.out_size, self.in_size), xp=xp, dtype=self.dtype,
                                  device=self.device)
        self.weights = self.weights + dev.diffusion * xi

    @_atomic()
    def post_update_step(self) -> None:
        """The hook run after every optimizer step: diffusion, then decay; for an
        InferenceRPUConfig tile clipping, then the weight modifier (spec/modifiers.md §M4)."""
        self.diffuse_weights()
        self.decay_weights()
        if isinstance(self.rpu_config, InferenceRPUConfig):
            self._hardware_aware_step()

    @_atomic()
    def _hardware_aware_step(self) -> None:
        cfg = self.rpu_config
        self.weights = modifier_stage.clip_weights(self.xp, self.weights, cfg.clip)
        if cfg.remap.type != WeightRemapType.NONE:  # spec/modifiers.md §M5
            scales = self.out_scales if self.out_scales is not None else \
                self.xp.ones((self.out_size,), dtype=self.dtype, device=self.device)
            self.weights, self.out_scales = mapping_stage.remap(self.xp, self.weights, scales,
                                                                cfg.remap)
        if modifier_stage.is_active(cfg.modifier):
            modified = modifier_stage.modify(self.xp, self.weights, cfg.modifier,
                                             self.streams.seed, self.streams.next_call("modifier"))
            if not bool(self.xp.all(self.xp.isfinite(modified))):  # undone by _atomic
                raise ValueError(f"modifier: the modified weights overflow "
                                 f"{_dtype_name(self.dtype)} (max abs(W) = "
                                 f"{float(self.xp.max(self.xp.abs(self.weights)))!r}, type "
                                 f"{cfg.modifier.type.value!r}, std_dev "
                                 f"{cfg.modifier.std_dev!r}); reduce the weights or the noise")
            self.modified_weights = modified
        else:
            self.modified_weights = None

    @_atomic()
    def reset(self, prob: float = 1.0) -> None:
        """Reset each weight with probability ``prob`` (spec/devices.md §V4): pulsed devices to
        β + reset_std·ξ (clamped), the simple rules to reset_std·ξ. One call of the streams
        ``device.reset_noise`` / ``device.reset_prob`` per reset."""
        prob = real_argument(prob, "prob", lo=0.0, hi=1.0)
        if self.compound is not None:
            if prob > 0.0:
                self.compound.reset(float(prob))
                self.weights = self.compound.weights()
            return
        dev = self._simple_device()
        if not hasattr(dev, "reset_std"):
            raise NotImplementedError(
                f"reset: a {type(dev).__name__} has no reset (no reset_std)")
        if prob == 0.0:
            return
        xp = self.xp
        call = self.streams.next_call("device.reset_noise")
        params = self.device_params
        if params is None:  # simple rules: β = 0, no bounds
            zeros = xp.zeros_like(self.weights)
            inf = xp.full_like(self.weights, math.inf)
            params = device_stage.DeviceParams(-inf, inf, zeros, zeros, zeros, zeros, zeros)
        self._set_device_weights(device_stage.reset_weights(
            xp, self._device_weights(), params, dev.reset_std, float(prob), self.streams.seed,
            call, self._draws()))

    # -- drift ----------------------------------------------------------------------------------------
    @_atomic()
    def drift_weights(self, delta_t: Any = None, *, t_inference: Any = None) -> None:
        """Drift the weights, as aihwkit's tiles do.

        An InferenceRPUConfig tile goes to ``t_inference`` seconds after programming (given by
        keyword or positionally; default 0), each call from the same programmed state, with the
        drift compensation re-read (spec/inference.md §I3). Other tiles let the weights drift for
        ``delta_t`` time units (default 1; spec/drift.md §D3): weights changed since the last call
        (beyond ``reset_tol``) restart their drift; pulsed devices clamp the result to their
        bounds. Compound devices drift each sub-device whose drift is active, in device order,
        with its own DriftParameter and state, clamped to its own bounds, and the tile then
        reads the compound's visible weight (spec/drift.md §D5)."""
        if isinstance(self.rpu_config, InferenceRPUConfig):
            if delta_t is not None and t_inference is not None:
                raise TypeError("drift_weights: give t_inference once (positionally or by name)")
            self._drift_programmed(t_inference if t_inference is not None else
                                   0.0 if delta_t is None else delta_t)
            return
        if t_inference is not None:
            raise TypeError(f"t_inference: only InferenceRPUConfig tiles drift to an inference "
                            f"time; a {type(self.rpu_config).__name__} tile drifts by delta_t")
        delta_t = real_argument(1.0 if delta_t is None else delta_t, "delta_t", lo=0.0)
        if self.compound is not None:  # each sub-device with its own drift (spec/drift.md §D5)
            self.compound.drift(float(delta_t))
            self.weights = self.compound.weights()
            return
        device = getattr(self.rpu_config, "device", None)
        drift = getattr(device, "drift", None)
        pulsed = self.device_params is not None
        if drift is None or not (pulsed or isinstance(self.rpu_config, FloatingPointRPUConfig)):
            raise NotImplementedError(
                f"drift_weights: {type(self.rpu_config).__name__} with a "
                f"{type(device).__name__} has no drift here (floating-point tiles, single "
                f"pulsed devices and implemented compound devices drift)")
        if not drift_stage.is_active(drift):
            return
        xp = self.xp
        if self.drift_state is None:
            self.drift_state = drift_stage.initial_state(xp, self._device_weights())
        nu = drift_stage.drift_nu(xp, drift, (self.out_size, self.in_size),
                                  self.construction_seed, dtype=self.dtype, device=self.device,
                                  draws=self._draws())
        bounds = (self.device_params.b_min, self.device_params.b_max) if pulsed else None
        drifted, self.drift_state = drift_stage.drift_weights(
            xp, self._device_weights(), self.drift_state, float(delta_t), drift, nu,
            self.streams.seed, self.streams.next_call("drift"), bounds=bounds,
            draws=self._draws())
        self._set_device_weights(drifted)

    # -- inference: programming, drift to an inference time, compensation (spec/inference.md) -----
    @_atomic()
    def program_weights(self, from_reference: bool = True, noise_model: Any = None) -> None:
        """Program the weights onto the noise model's conductance pairs (spec/inference.md §I2,
        §I5): programming noise, drift coefficients ν, and the drift-compensation baseline. The
        first programming takes the current weights as the reference; later ones start from
        that reference again unless ``from_reference=False`` (aihwkit's ``program_weights``).
        A ``noise_model`` given here replaces the config's from now on, as in aihwkit (the
        tile's config becomes a copy with it)."""
        if not isinstance(from_reference, bool):
            raise TypeError(f"from_reference: expected a bool, got {type(from_reference).__name__}")
        self._noise_model("program_weights")
        if noise_model is not None:
            self.rpu_config = inference_stage.with_noise_model(self.rpu_config, noise_model)
        model = self._noise_model("program_weights")
        state = self.inference_state
        reference = state.reference if (from_reference and state is not None) else \
            self.xp.asarray(self.weights, copy=True)
        programmed = self._inference_module().program(
            self.xp, reference, model, self.streams.seed,
            self.streams.next_call("inference.program"), self._draws())
        self._require_finite(programmed.weights, "program_weights", "programmed")
        self.weights = self.xp.astype(programmed.weights, self.dtype, copy=True)
        baseline = self._drift_readout() if self.rpu_config.drift_compensation is not None \
            else None
        self.inference_state = inference_stage.InferenceState(reference, programmed, baseline)

    def _drift_programmed(self, t_inference: Any) -> None:
        """drift_weights of an InferenceRPUConfig tile: the programmed weights at ``t_inference``
        seconds after programming, each call from the same programmed state (§I3, §I5)."""
        t = inference_stage.check_time(t_inference)
        model = self._noise_model("drift_weights")
        state = self.inference_state
        if state is None:
            raise ValueError("drift_weights: the weights are not programmed; call "
                             "program_weights() first (spec/inference.md §I5)")
        drifted = self._inference_module().drift(self.xp, state.programmed, t, model,
                                                 self.streams.seed,
                                                 self.streams.next_call("inference.drift"),
                                                 self._draws())
        self._require_finite(drifted, "drift_weights", "drifted")
        self.weights = self.xp.astype(drifted, self.dtype, copy=True)
        factor = 1.0 if state.baseline is None else state.baseline / self._drift_readout()
        self.inference_state = inference_stage.InferenceState(state.reference, state.programmed,
                                                              state.baseline, factor)

    def _require_finite(self, weights: Any, caller: str, what: str) -> None:
        """A ValueError naming ``caller`` when the conductance noise carried a weight beyond the
        dtype (weights near its largest value: the conversion back divides by a tiny scale);
        the call is undone (_atomic)."""
        xp = self.xp
        if not bool(xp.all(xp.isfinite(weights))):
            raise ValueError(f"{caller}: the {what} weights overflow {_dtype_name(self.dtype)} "
                             f"(max abs weight {float(xp.max(xp.abs(self.weights)))!r} times "
                             f"the conductance noise); scale the weights down")

    def _noise_model(self, caller: str) -> Any:
        if not isinstance(self.rpu_config, InferenceRPUConfig):
            raise ConfigError(f"{caller}: needs an InferenceRPUConfig (its noise_model), got "
                              f"{type(self.rpu_config).__name__}")
        return self.rpu_config.noise_model

    def _drift_readout(self) -> float:
        """λ of the one-hot reads: the analog forward pass of the rows of the identity (§I4)."""
        eye = self.xp.eye(self.in_size, dtype=self.dtype, device=self.device)
        return inference_stage.readout(self.xp, self._pass(eye, "forward", "x", self.in_size,
                                                           self.weights))

    @property
    def drift_compensation_factor(self) -> float:
        """α = λ₀/λ_t, the factor drift compensation applies in evaluation mode (1 before the
        first drift, and without compensation)."""
        state = self.inference_state
        return 1.0 if state is None or state.baseline is None else float(state.factor)

    # -- input checks -----------------------------------------------------------------------------
    def _check_array(self, a: Any, name: str, shape: tuple, exact: bool = False) -> Any:
        if array_api_compat.is_numpy_array(a) and array_api_compat.is_numpy_namespace(self.xp):
            xp = self.xp  # (the common case, without the namespace lookup)
        else:
            try:
                xp = array_api_compat.array_namespace(a)
            except TypeError:
                raise TypeError(f"{name}: expected an array, got {type(a).__name__}") from None
        if xp.__name__ != self.xp.__name__:
            raise TypeError(f"{name}: array of {xp.__name__}, but the tile holds arrays of "
                            f"{self.xp.__name__} (convert it first)")
        if self.device is not None and array_api_compat.device(a) != self.device:
            raise ValueError(f"{name}: on device {array_api_compat.device(a)}, the tile is on "
                             f"{self.device}")
        if a.dtype not in (xp.float32, xp.float64):
            native = _native_byte_order(a)  # e.g. big-endian float64 from a file
            if native is None:
                raise TypeError(f"{name}: expected a float32 or float64 array, got {a.dtype}")
            a = native
        if exact:
            ok = tuple(a.shape) == shape
        else:
            ok = (a.ndim == 1 and a.shape[0] == shape[0]) or (a.ndim == 2 and a.shape[1] == shape[0])
        if not ok:
            want = f"{shape}" if exact else f"({shape[0]},) or (batch, {shape[0]})"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(a.shape)}")
        if not _all_finite(xp, a):
            raise ValueError(f"{name}: contains NaN or infinity (spec/io.md §S9: non-finite "
                             f"inputs are rejected)")
        return a

    # -- state --------------------------------------------------------------------------------------
    def snapshot(self, *, compound: bool = True) -> Any:
        """The tile as it is now, for :meth:`restore` (spec/README.md, "Failed calls"): the
        references of its attributes (calls replace arrays, they do not change them), its
        random counters and, unless ``compound`` is False, its compound's state (copied, as
        a compound updates its devices in place). Nothing is serialized and the weights are
        not copied, so it is cheap; it is not a checkpoint (:meth:`state_dict` is one).

        Examples
        --------
        >>> import numpy as np
        >>> from refsim.tile import AnalogTile
        >>> tile = AnalogTile(3, 4, seed=1)
        >>> before = tile.snapshot()
        >>> tile.update(np.ones(4), np.ones(3), 0.01)
        >>> tile.restore(before)
        >>> bool(np.all(tile.get_weights() == 0))
        True
        """
        inner = self.compound.state_dict() if compound and self.compound is not None else None
        return _Snapshot(dict(self.__dict__), self.streams.state_dict(), inner)

    def restore(self, snapshot: Any) -> None:
        """Put the tile back as it was when :meth:`snapshot` took ``snapshot``."""
        if not isinstance(snapshot, _Snapshot):
            raise TypeError(f"snapshot: expected AnalogTile.snapshot()'s value, got "
                            f"{type(snapshot).__name__}")
        self.__dict__.clear()
        self.__dict__.update(snapshot.attributes)
        self.streams.load_state_dict(snapshot.streams)
        if snapshot.compound is not None:
            self.compound.load_state_dict(snapshot.compound)

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resumed run needs: the config, the seeds, the weights, the random state and
        the noise-management state (arrays stay in the tile's namespace)."""
        return {"rpu_config": self.rpu_config.to_dict(), "construction_seed": self.construction_seed,
                "weights": self.get_weights(apply_weight_scaling=False),
                "rng": self.streams.state_dict(),
                "nm_running": self.nm_running, "drift": self.drift_state,
                "compound": None if self.compound is None else self.compound.state_dict(),
                "persistent": self.get_persistent_weights(),
                "pulse_counters": None if self.pulse_counters is None
                else self.get_pulse_counters(),
                "inference": inference_stage.state_to_dict(self.xp, self.inference_state),
                "training": self.training,
                "modified": None if self.modified_weights is None
                else self.xp.asarray(self.modified_weights, copy=True),
                "out_scales": None if self.out_scales is None
                else self.xp.asarray(self.out_scales, copy=True),
                "input_range": mapping_stage.input_range_to_dict(self.xp, self.input_range)}

    @_atomic()
    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a tile with the same config and sizes. The fixed
        periphery variation and the device-to-device parameters are redrawn from the saved
        construction seed, so the restored tile continues exactly as the saved one would."""
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict, got {type(state).__name__}")
        config = state.get("rpu_config")
        if not isinstance(config, dict) or config != self.rpu_config.to_dict():
            raise ValueError("state['rpu_config']: the state belongs to a tile with another config")
        running = state.get("nm_running")
        if running is not None and not (isinstance(running, float) and math.isfinite(running)):
            raise ValueError("state['nm_running']: expected a finite float or None")
        seed = state.get("construction_seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= rng.MAX_SEED:
            raise ValueError("state['construction_seed']: expected an integer seed")
        drift = state.get("drift")
        if drift is not None and not isinstance(drift, drift_stage.DriftState):
            raise ValueError("state['drift']: expected a DriftState or None")
        if seed != self.construction_seed:
            self.construction_seed = seed
            self.periphery = self._draw_periphery()
            if self.device_params is not None:
                self.device_params = self._draw_device()
        try:  # checked before anything moves (the call is also undone on error: _atomic)
            rng.RandomStreams(0).load_state_dict(state.get("rng"))
        except ValueError as err:  # "state['seed']: ..." -> "state['rng']['seed']: ..."
            raise ValueError("state['rng']" + str(err)[len("state"):]) from None
        weights = self._check_array(state.get("weights"), "state['weights']",
                                    (self.out_size, self.in_size), exact=True)
        persistent, counters = self._checked_device_state(state)
        inference = inference_stage.state_from_dict(self.xp, state.get("inference"),
                                                    (self.out_size, self.in_size), self.dtype)
        training = state.get("training", True)
        if not isinstance(training, bool):
            raise ValueError("state['training']: expected a bool")
        scales = state.get("out_scales")
        if scales is not None:
            scales = self.xp.astype(self._check_array(
                scales, "state['out_scales']", (self.out_size,), exact=True), self.dtype,
                copy=True)
            if not bool(self.xp.all(scales > 0)):
                raise ValueError("state['out_scales']: expected positive output scales")
        modified = state.get("modified")
        if modified is not None:
            modified = self.xp.astype(self._check_array(
                modified, "state['modified']", (self.out_size, self.in_size), exact=True),
                self.dtype, copy=True)
        input_range = mapping_stage.input_range_from_dict(
            self.xp, state.get("input_range"), self.input_range is not None, self.dtype)
        self._store_weights(weights)  # the stored W_s (their scales are restored below)
        self.streams.load_state_dict(state["rng"])
        if self.persistent is not None:  # set_weights drew write noise: restore both exactly
            self.persistent = persistent
            self.weights = self.xp.astype(weights, self.dtype, copy=True)
        if self.pulse_counters is not None:
            self.pulse_counters = counters
        if self.compound is None and state.get("compound") is not None:
            raise ValueError("state['compound']: this tile has no compound device")
        if self.compound is not None:
            compound_state = state.get("compound")
            if not isinstance(compound_state, dict):
                raise ValueError("state['compound']: expected the compound's state dict")
            # redrawn from the (restored) seeds, then the saved state on top
            self.compound = compound_stage.build(self._compound_context(), self.rpu_config)
            self.compound.load_state_dict(compound_state)
            self.weights = self.compound.weights()
        self.nm_running = running
        self.drift_state = drift
        self.inference_state = inference
        self.training = training
        self.modified_weights = modified
        self.out_scales = scales
        self.input_range = input_range

    def _checked_device_state(self, state: dict) -> Any:
        """The persistent weights and pulse counters of a state (copies), checked against this
        tile's config (spec/devices.md §V8, §V9)."""
        xp = self.xp
        shape = (self.out_size, self.in_size)
        persistent, counters = state.get("persistent"), state.get("pulse_counters")
        if (persistent is None) != (self.persistent is None):
            raise ValueError("state['persistent']: expected persistent weights exactly when the "
                             "device has write noise")
        if persistent is not None:
            persistent = self._check_array(persistent, "state['persistent']", shape, exact=True)
            persistent = xp.astype(persistent, self.dtype, copy=True)
        if (counters is None) != (self.pulse_counters is None):
            raise ValueError("state['pulse_counters']: expected pulse counters exactly when the "
                             "device has count_pulses")
        if counters is not None:
            ok = hasattr(counters, "shape") and tuple(counters.shape) == (2,) + shape and \
                xp.isdtype(counters.dtype, "integral") and bool(xp.all(counters >= 0))
            if not ok:
                raise ValueError(f"state['pulse_counters']: expected a non-negative integer "
                                 f"array of shape {(2,) + shape}")
            counters = xp.astype(counters, xp.int64, copy=True)
        return persistent, counters

    # -- copies and checkpoint files ---------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        """For ``pickle`` and ``copy.deepcopy``: the tile's attributes with the array namespace
        (a module, which cannot be pickled) replaced by its name; the compound's context does the
        same for its modules. A copy continues exactly as the original would, independently."""
        from refsim import checkpoint

        return checkpoint.strip_modules(self.__dict__)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        from refsim import checkpoint

        self.__dict__.update(checkpoint.restore_modules(state))
        if not self.rpu_config.is_frozen:  # copy.deepcopy copies configs as changeable ones
            self.rpu_config = self.rpu_config.frozen()

    def save(self, path: Any) -> None:
        """Save the tile to one ``.npz`` file (:func:`refsim.checkpoint.save`).

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            The file: the config JSON, the constructor arguments and every array of
            :meth:`state_dict` (converted to numpy); no pickle inside.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from refsim.configs import SingleRPUConfig, ConstantStepDevice
        >>> from refsim.tile import AnalogTile
        >>> tile = AnalogTile(3, 4, SingleRPUConfig(device=ConstantStepDevice()), seed=1)
        >>> tile.update(np.ones(4), np.ones(3), 0.01)
        >>> path = os.path.join(tempfile.mkdtemp(), "tile.npz")
        >>> tile.save(path)
        >>> same = AnalogTile.load(path)
        >>> bool(np.all(same.get_weights() == tile.get_weights()))
        True
        """
        from refsim import checkpoint

        checkpoint.save(self, path)

    @classmethod
    def load(cls, path: Any, *, xp: Any = None, device: Any = None,
             backend: str = "auto") -> "AnalogTile":
        """A tile saved by :meth:`save`, in this or a fresh process (:func:`refsim.checkpoint.load`).

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            The file written by :meth:`save`.
        xp, device, backend
            The namespace (numpy by default), device and backend of the loaded tile.

        Returns
        -------
        AnalogTile
            A tile that continues exactly (same noise, same updates) as the saved one would.

        Raises
        ------
        ValueError
            The file is not a tile checkpoint, or is corrupt (the message names file and key).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from refsim.configs import InferenceRPUConfig
        >>> from refsim.tile import AnalogTile
        >>> tile = AnalogTile(3, 4, InferenceRPUConfig(), seed=1)
        >>> path = os.path.join(tempfile.mkdtemp(), "tile.npz")
        >>> tile.save(path)
        >>> same = AnalogTile.load(path)
        >>> bool(np.all(same.forward(np.ones(4)) == tile.forward(np.ones(4))))
        True
        """
        from refsim import checkpoint

        obj = checkpoint.load(path, xp=xp, device=device, backend=backend)
        if not isinstance(obj, cls):
            raise ValueError(f"{checkpoint._name(path)}: header key 'kind': the file holds a "
                             f"{type(obj).__name__}, not a {cls.__name__}")
        return obj

    def __repr__(self) -> str:
        return (f"AnalogTile({self.out_size}, {self.in_size}, {type(self.rpu_config).__name__}, "
                f"seed={self.streams.seed}, backend={self.backend!r})")


def _dtype_name(dtype: Any) -> str:
    """'float32' for numpy's float32 type or dtype, torch.float32, ..."""
    return (getattr(dtype, "__name__", None) or str(dtype)).rsplit(".", 1)[-1]


def _native_byte_order(a: Any) -> Any:
    """A numpy float32/float64 array of the other byte order, converted to the native one (one
    copy); None for anything else."""
    dtype = a.dtype
    if getattr(dtype, "byteorder", "=") in ("=", "|") or getattr(dtype, "kind", "") != "f" or \
            dtype.itemsize not in (4, 8):
        return None
    return a.astype(dtype.newbyteorder("="))


def _all_finite(xp: Any, a: Any) -> bool:
    """Whether every element of ``a`` is finite (numpy's own reduction for a numpy array: the
    same answer without the namespace wrappers)."""
    if array_api_compat.is_numpy_array(a):
        return bool(np.isfinite(a).all())
    return bool(xp.all(xp.isfinite(a)))


def _cast_periphery(xp: Any, periphery: io_stage.Periphery, dtype: Any) -> io_stage.Periphery:
    """The periphery's arrays in ``dtype`` (the arrays themselves when they have it already)."""
    arrays = (periphery.v_offset, periphery.nonlinearity, periphery.noise_std,
              periphery.read_asymmetry)
    if all(a is None or a.dtype == dtype for a in arrays):
        return periphery

    def cast(a: Any) -> Any:
        return None if a is None else xp.astype(a, dtype)

    return io_stage.Periphery(cast(periphery.v_offset), cast(periphery.nonlinearity),
                              cast(periphery.noise_std), cast(periphery.read_asymmetry))


__all__ = ["AnalogTile", "BACKENDS", "real_argument"]
