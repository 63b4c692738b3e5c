"""Layers of the training stack: AnalogLinear, the activations and AnalogSequential.

A module has ``forward(x)`` (which keeps what the backward pass needs), ``backward(grad_out)`` (the
gradient with respect to the last forward input), ``update(lr)`` (one SGD step with the gradients
of the last backward pass), ``post_update_step()``, ``state_dict()`` and ``load_state_dict()``.
Arrays are ``(batch, features)`` (a single ``(features,)`` vector is accepted too) of any array
namespace that array-api-compat knows; a model keeps the namespace, device and dtype it was built
with.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import math
import numbers
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import array_api_compat

from refsim import rng
from refsim.configs import (
    ConfigError,
    FloatingPointRPUConfig,
    InferenceRPUConfig,
    IOManagedRPUConfig,
    SingleRPUConfig,
)
from refsim.stages import inference as inference_stage
from refsim.stages.mapping import PassContext
from refsim.tile import AnalogTile, real_argument

__all__ = ["ACTIVATIONS", "AnalogLinear", "AnalogSequential", "Module", "ReLU", "Sigmoid", "Tanh",
           "mlp"]


def _check_int(value: Any, name: str, lo: int, hi: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}: expected an integer {bound}, got {value}")
    return value


def check_lr(lr: Any) -> float:
    """``lr`` as a float (a finite real number; ValueError naming lr otherwise)."""
    return real_argument(lr, "lr")


def _split_sizes(size: int, maximum: int) -> List[int]:
    """Balanced pieces of ``size`` of at most ``maximum`` (0: no split), the first ``size mod k``
    one larger (spec/mapping.md, max_input_size/max_output_size)."""
    if maximum <= 0 or size <= maximum:
        return [size]
    k = -(-size // maximum)
    return [size // k + (1 if i < size % k else 0) for i in range(k)]


def _offsets(sizes: Sequence[int]) -> List[Tuple[int, int]]:
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


@dataclasses.dataclass(frozen=True)
class _ModuleSnapshot:
    """Module.snapshot()'s value: attribute references, the own tiles' and the children's
    snapshots."""

    attributes: Dict[str, Any]
    tiles: List[Any]
    children: List[Any]


@contextlib.contextmanager
def unchanged_on_error(module: "Module") -> Iterator[None]:
    """Run the block as one call that completes or changes nothing (spec/README.md, "Failed
    calls"): on any exception (KeyboardInterrupt included) the module is put back as
    :meth:`Module.snapshot` found it before the block, then the error propagates."""
    saved = module.snapshot()
    try:
        yield
    except BaseException:
        module.restore(saved)
        raise


class Module:
    """The interface of a layer (every method a no-op here)."""

    def forward(self, x: Any) -> Any:
        return x

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def backward(self, grad_out: Any) -> Any:
        return grad_out

    def update(self, lr: float) -> None:
        check_lr(lr)

    def post_update_step(self) -> None:
        pass

    # -- modes and inference (spec/inference.md §I5; aihwkit's AnalogModule methods) ---------------
    training: bool = True

    def children(self) -> List["Module"]:
        """The modules inside this one (none here)."""
        return []

    def train(self, mode: bool = True) -> "Module":
        """Training mode (default) or, with ``mode=False``, evaluation mode, for this module and
        every tile in it: in evaluation a drifted InferenceRPUConfig tile applies its drift
        compensation (spec/inference.md §I4). Returns the module, as torch's do."""
        if not isinstance(mode, bool):
            raise TypeError(f"mode: expected a bool, got {type(mode).__name__}")
        for child in self.children():
            child.train(mode)
        self.training = mode
        return self

    def eval(self) -> "Module":
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def program_analog_weights(self, noise_model: Any = None) -> None:
        """Program every analog tile's weights with its config's noise model, or with
        ``noise_model``, which then replaces the configs' (``AnalogTile.program_weights``,
        spec/inference.md §I2, as aihwkit's); all or nothing."""
        with unchanged_on_error(self):
            for child in self.children():
                child.program_analog_weights(noise_model)

    def drift_analog_weights(self, t_inference: float = 0.0) -> None:
        """Drift every analog tile to ``t_inference`` seconds after programming
        (``AnalogTile.drift_weights``, spec/inference.md §I3); all or nothing."""
        with unchanged_on_error(self):
            for child in self.children():
                child.drift_analog_weights(t_inference)

    def state_dict(self) -> Dict[str, Any]:
        return {"type": type(self).__name__}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._check_state_type(state)

    def snapshot(self) -> Any:
        """This module as it is now, for :meth:`restore` (what a failed update or epoch rolls
        back to): the references of its attributes (the layers replace their arrays, they do not
        change them) and the snapshots of its tiles and children (``AnalogTile.snapshot``:
        nothing serialized, no weights copied). Not a checkpoint: :meth:`state_dict` is one."""
        return _ModuleSnapshot(dict(self.__dict__),
                               [tile.snapshot() for tile in self._own_tiles()],
                               [child.snapshot() for child in self.children()])

    def restore(self, snapshot: Any) -> None:
        """Put the module back as it was when :meth:`snapshot` took ``snapshot``."""
        if not isinstance(snapshot, _ModuleSnapshot):
            raise TypeError(f"snapshot: expected Module.snapshot()'s value, got "
                            f"{type(snapshot).__name__}")
        self.__dict__.clear()
        self.__dict__.update(snapshot.attributes)
        for tile, saved in zip(self._own_tiles(), snapshot.tiles):
            tile.restore(saved)
        for child, saved in zip(self.children(), snapshot.children):
            child.restore(saved)

    def _own_tiles(self) -> List[Any]:
        """The tiles of this module itself, not of its children (none here)."""
        return []

    def _check_state_type(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict, got {type(state).__name__}")
        if state.get("type") != type(self).__name__:
            raise ValueError(f"state['type']: the state of a {state.get('type')!r}, "
                             f"not of a {type(self).__name__}")

    # -- copies and checkpoint files ---------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        """For ``pickle`` and ``copy.deepcopy``: the attributes with the array namespace (a
        module) replaced by its name; the tiles pickle themselves the same way."""
        from refsim import checkpoint

        return checkpoint.strip_modules(self.__dict__)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        from refsim import checkpoint

        self.__dict__.update(checkpoint.restore_modules(state))

    def save(self, path: Any) -> None:
        """Save the model (its modules, tile configs and :meth:`state_dict`) to one ``.npz``
        file (:func:`refsim.checkpoint.save`).

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            The file (no pickle inside; loadable in a fresh process).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from refsim import nn
        >>> from refsim.configs import FloatingPointRPUConfig
        >>> model = nn.mlp([4, 3, 2], FloatingPointRPUConfig(), seed=1)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> model.save(path)
        >>> same = nn.AnalogSequential.load(path)
        >>> bool(np.all(same.forward(np.ones(4)) == model.forward(np.ones(4))))
        True
        """
        from refsim import checkpoint

        checkpoint.save(self, path)

    @classmethod
    def load(cls, path: Any, *, xp: Any = None, device: Any = None,
             backend: str = "auto") -> "Module":
        """A model saved by :meth:`save`, in this or a fresh process
        (:func:`refsim.checkpoint.load`); it must be a ``cls``.

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            The file written by :meth:`save`.
        xp, device, backend
            The namespace (numpy by default), device and tile backend of the loaded model.

        Returns
        -------
        Module
            A model that continues training exactly as the saved one would.

        Raises
        ------
        ValueError
            The file holds another kind of object, or is corrupt (the message names the key).

        Examples
        --------
        >>> import os, tempfile
        >>> from refsim import nn
        >>> from refsim.configs import FloatingPointRPUConfig
        >>> layer = nn.AnalogLinear(4, 2, FloatingPointRPUConfig(), seed=3)
        >>> path = os.path.join(tempfile.mkdtemp(), "layer.npz")
        >>> layer.save(path)
        >>> nn.AnalogLinear.load(path)
        AnalogLinear(4, 2, FloatingPointRPUConfig, bias=digital, seed=3, tiles=1x1)
        """
        from refsim import checkpoint

        obj = checkpoint.load(path, xp=xp, device=device, backend=backend)
        if not isinstance(obj, cls):
            raise ValueError(f"{checkpoint._name(path)}: header key 'kind': the file holds a "
                             f"{type(obj).__name__}, not a {cls.__name__}")
        return obj


@dataclasses.dataclass
class PassRecord:
    """What an :meth:`AnalogLinear.analog_forward` leaves for the backward pass and the update of
    the same batch: the inputs per input block as fed to the tiles (with the constant 1 of an
    analog bias), and each tile's :class:`~refsim.stages.mapping.PassContext`."""

    xs: List[Any]
    contexts: List[List[PassContext]]


def _namespace_of(a: Any, name: str) -> Any:
    try:
        return array_api_compat.array_namespace(a)
    except TypeError:
        raise TypeError(f"{name}: expected an array, got {type(a).__name__}") from None


class AnalogLinear(Module):
    """A fully connected layer ``y = W x + b`` on analog tiles (aihwkit's AnalogLinear).

    Args:
        in_features, out_features: the sizes; ``W`` is ``(out_features, in_features)``.
        rpu_config: the tile config (default ``SingleRPUConfig()``). Its
            ``mapping.digital_bias`` (default True) keeps the bias a plain array, updated by plain
            SGD; False stores it on the tile as an extra last input column driven by a constant 1
            (tile shape ``(out, in + 1)``). ``mapping.max_input_size``/``max_output_size`` split a
            larger layer into balanced tiles whose partial outputs are summed digitally; a split
            layer keeps its bias digital (spec/mapping.md).
        bias: whether the layer has a bias.
        seed: the layer's seed (0 … 2³²−1): the initial weights (streams ``nn.init_weight`` and
            ``nn.init_bias``) and the tile's seed (the tiles' seeds, derived from it by stream
            ``nn.tile_seed``, when the layer is split).
        xp, dtype, device: the array namespace (numpy by default), float dtype (float64 by
            default) and device of the weights and of the arrays the layer accepts.
        backend: the tiles' backend, ``"auto"``, ``"reference"`` or ``"fast"``.

    The weights start like torch's / aihwkit's Linear: ``W`` and ``b`` uniform in
    ``±1/sqrt(in_features)``, here drawn from refsim's random streams (the same numbers on every
    namespace and backend), set with ``set_weights(clip=True)`` (pulsed devices clamp them to
    their bounds, as aihwkit does).
    """

    def __init__(self, in_features: int, out_features: int, rpu_config: Any = None, *,
                 bias: bool = True, seed: int = 0, xp: Any = None, dtype: Any = None,
                 device: Any = None, backend: str = "auto") -> None:
        self.in_features = _check_int(in_features, "in_features", 1)
        self.out_features = _check_int(out_features, "out_features", 1)
        if not isinstance(bias, bool):
            raise TypeError(f"bias: expected a bool, got {type(bias).__name__}")
        self.seed = _check_int(seed, "seed", 0, rng.MAX_SEED)
        rpu_config = SingleRPUConfig() if rpu_config is None else rpu_config
        if not isinstance(rpu_config, (IOManagedRPUConfig, FloatingPointRPUConfig)):
            raise TypeError(f"rpu_config: expected an RPU config, got "
                            f"{type(rpu_config).__name__}")
        rpu_config.validate()
        self.xp = rng._namespace(xp)
        self.dtype = self.xp.float64 if dtype is None else dtype
        if self.dtype not in (self.xp.float32, self.xp.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}")
        self.device = device
        mapping = rpu_config.mapping
        self.in_sizes = _split_sizes(self.in_features, mapping.max_input_size)
        self.out_sizes = _split_sizes(self.out_features, mapping.max_output_size)
        split = len(self.in_sizes) > 1 or len(self.out_sizes) > 1
        self.digital_bias = bias and (mapping.digital_bias or split)
        self.analog_bias = bias and not self.digital_bias
        if self.analog_bias and rpu_config.pre_post.input_range.enable:
            raise ConfigError("mapping.digital_bias: an analog bias column cannot be combined "
                              "with a learned input range (pre_post.input_range.enable; "
                              "spec/mapping.md §P5); use digital_bias=True")
        n_tiles = len(self.in_sizes) * len(self.out_sizes)
        if n_tiles == 1:
            seeds = [self.seed]
        else:
            seeds = [int(s) for s in rng.random_words(self.seed, "nn.tile_seed", 0, 0, n_tiles)]
        extra = 1 if self.analog_bias else 0
        # learned output scales (spec/mapping.md §P4) belong to the layer, not to its tiles
        tile_config = rpu_config
        if mapping.learn_out_scaling:
            tile_config = copy.deepcopy(rpu_config)
            tile_config.mapping.learn_out_scaling = False
            tile_config.mapping.out_scaling_columnwise = False
        self.tiles: List[List[AnalogTile]] = [
            [AnalogTile(out, inp + extra, tile_config, seed=seeds[j * len(self.in_sizes) + i],
                        dtype=self.dtype, xp=xp, device=device, backend=backend)
             for i, inp in enumerate(self.in_sizes)]
            for j, out in enumerate(self.out_sizes)
        ]
        self.rpu_config = rpu_config.frozen()
        self.out_scale: Any = None
        if mapping.learn_out_scaling:
            size = self.out_features if mapping.out_scaling_columnwise else 1
            self.out_scale = self.xp.ones((size,), dtype=self.dtype, device=device)
        self._y: Any = None        # the tiles' summed output of the last forward (for s_out)
        self._d_tiles: Any = None  # the error the tiles see: grad_out·s_out
        self.bias: Any = None
        if self.digital_bias:
            self.bias = self.xp.zeros((self.out_features,), dtype=self.dtype, device=device)
        self._record: Optional[PassRecord] = None  # of the last forward pass
        self._d: Optional[Any] = None
        self.reset_parameters()

    @property
    def has_bias(self) -> bool:
        return self.digital_bias or self.analog_bias

    def reset_parameters(self) -> None:
        """The initial weights (see the class docstring)."""
        xp, bound = self.xp, 1.0 / math.sqrt(self.in_features)
        w = rng.uniform(self.seed, "nn.init_weight", 0, (self.out_features, self.in_features),
                        xp=xp, device=self.device) * (2 * bound) - bound
        b = None
        if self.has_bias:
            b = rng.uniform(self.seed, "nn.init_bias", 0, (self.out_features,), xp=xp,
                            device=self.device) * (2 * bound) - bound
        self.set_weights(xp.astype(w, self.dtype), None if b is None else xp.astype(b, self.dtype))

    # -- weights -----------------------------------------------------------------------------------
    def _check(self, a: Any, name: str, shape: Tuple[int, ...]) -> Any:
        xp = _namespace_of(a, name)
        if xp.__name__ != self.xp.__name__:
            raise TypeError(f"{name}: array of {xp.__name__}, but the layer holds arrays of "
                            f"{self.xp.__name__}")
        if not xp.isdtype(a.dtype, "real floating"):
            raise TypeError(f"{name}: expected a float array, got {a.dtype}")
        if tuple(a.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {tuple(a.shape)}")
        return self.xp.astype(a, self.dtype, copy=True)

    def set_weights(self, weight: Any, bias: Any = None) -> None:
        """Store ``weight`` ``(out_features, in_features)`` and ``bias`` ``(out_features,)`` (None
        for a layer without bias; required with one) in the tiles, clamped to the device bounds
        of a pulsed device."""
        xp = self.xp
        w = self._check(weight, "weight", (self.out_features, self.in_features))
        if self.has_bias != (bias is not None):
            raise ValueError("bias: expected an array exactly when the layer has a bias")
        if self.out_scale is not None:  # the tiles take the weights, s_out restarts at 1
            self.out_scale = xp.ones_like(self.out_scale)
        b = None if bias is None else self._check(bias, "bias", (self.out_features,))
        for j, (o0, o1) in enumerate(_offsets(self.out_sizes)):
            for i, (i0, i1) in enumerate(_offsets(self.in_sizes)):
                block = w[o0:o1, i0:i1]
                if self.analog_bias:
                    block = xp.concat([block, xp.reshape(b[o0:o1], (-1, 1))], axis=1)
                self.tiles[j][i].set_weights(block, clip=True)
        if self.digital_bias:
            self.bias = b

    def _own_tiles(self) -> List[Any]:
        return [tile for row in self.tiles for tile in row]

    def get_weights(self) -> Tuple[Any, Any]:
        """``(weight, bias)``: copies of the weights and of the bias (None without bias)."""
        xp = self.xp
        rows, biases = [], []
        for row in self.tiles:
            blocks = [t.get_weights() for t in row]
            if self.analog_bias:
                biases.append(blocks[-1][:, -1])
                blocks[-1] = blocks[-1][:, :-1]
            rows.append(xp.concat(blocks, axis=1) if len(blocks) > 1 else blocks[0])
        w = xp.concat(rows, axis=0) if len(rows) > 1 else rows[0]
        if self.digital_bias:
            b = xp.asarray(self.bias, copy=True)
        elif self.analog_bias:
            b = xp.concat(biases, axis=0) if len(biases) > 1 else biases[0]
        else:
            b = None
        if self.out_scale is not None:  # the logical weights s_out·W (spec/mapping.md §P4)
            w = xp.reshape(self.out_scale, (-1, 1)) * w
            if self.analog_bias:
                b = self.out_scale * b
        return w, b

    # -- passes ------------------------------------------------------------------------------------
    def _rows(self, a: Any, name: str, size: int) -> Tuple[Any, bool]:
        xp = _namespace_of(a, name)
        if xp.__name__ != self.xp.__name__:
            raise TypeError(f"{name}: array of {xp.__name__}, but the layer holds arrays of "
                            f"{self.xp.__name__}")
        if not xp.isdtype(a.dtype, "real floating"):
            raise TypeError(f"{name}: expected a float array, got {a.dtype}")
        if a.ndim == 1 and a.shape[0] == size:
            return self.xp.astype(xp.reshape(a, (1, size)), self.dtype), True
        if a.ndim == 2 and a.shape[1] == size:
            return self.xp.astype(a, self.dtype), False
        raise ValueError(f"{name}: expected shape ({size},) or (batch, {size}), got "
                         f"{tuple(a.shape)}")

    # -- the tiles' passes, for this layer and for refsim.torch's autograd functions ------------------
    def analog_forward(self, rows: Any) -> Tuple[Any, "PassRecord"]:
        """The tiles' summed analog forward output ``(batch, out_features)`` of ``rows``
        ``(batch, in_features)`` (in the layer's dtype; before the learned output scale and the
        digital bias), and the record its backward pass and update need: the inputs per input
        block, as fed to the tiles, and one :class:`~refsim.stages.mapping.PassContext` per tile
        (spec/mapping.md §P5, §P6)."""
        xp = self.xp
        xs = []
        for i0, i1 in _offsets(self.in_sizes):
            xi = rows if len(self.in_sizes) == 1 else rows[:, i0:i1]
            if self.analog_bias:
                ones = xp.ones((rows.shape[0], 1), dtype=self.dtype, device=self.device)
                xi = xp.concat([xi, ones], axis=1)
            xs.append(xi)
        outs = []
        contexts = [[PassContext() for _ in row] for row in self.tiles]
        for row, row_contexts in zip(self.tiles, contexts):
            acc = None
            for tile, xi, context in zip(row, xs, row_contexts):
                y = tile.forward(xi, context=context)
                acc = y if acc is None else acc + y
            outs.append(acc)
        y = xp.concat(outs, axis=1) if len(outs) > 1 else outs[0]
        return y, PassRecord(xs, contexts)

    def analog_backward(self, d: Any, record: "PassRecord") -> Any:
        """The tiles' analog backward output ``(batch, in_features)`` for the errors ``d``
        ``(batch, out_features)`` the tiles see, with the ``record`` of the forward pass of the
        same batch (the output-bound mask and the input-range gradient, §P5-§P6)."""
        xp = self.xp
        if d.shape[0] != record.xs[0].shape[0]:
            raise ValueError(f"grad_out: {d.shape[0]} rows, the forward pass had "
                             f"{record.xs[0].shape[0]}")
        ds = [d if len(self.out_sizes) == 1 else d[:, o0:o1] for o0, o1 in _offsets(self.out_sizes)]
        grads = []
        for i in range(len(self.in_sizes)):
            acc = None
            for j, dj in enumerate(ds):
                z = self.tiles[j][i].backward(dj, context=record.contexts[j][i])
                acc = z if acc is None else acc + z
            grads.append(acc[:, :-1] if self.analog_bias else acc)
        return xp.concat(grads, axis=1) if len(grads) > 1 else grads[0]

    def analog_update(self, xs: List[Any], d: Any, lr: float) -> None:
        """Each tile's update ``W ← W − lr·dᵀx`` with the inputs per block ``xs`` (a record's)
        and the errors ``d`` ``(batch, out_features)`` the tiles saw; all tiles or none."""
        ds = [d if len(self.out_sizes) == 1 else d[:, o0:o1] for o0, o1 in _offsets(self.out_sizes)]
        with unchanged_on_error(self):
            for j, row in enumerate(self.tiles):
                for tile, xi in zip(row, xs):
                    tile.update(xi, ds[j], lr)

    def forward(self, x: Any) -> Any:
        """``y = W x + b`` through the analog forward pass of the tiles; keeps ``x`` for the
        update."""
        rows, vector = self._rows(x, "x", self.in_features)
        y, record = self.analog_forward(rows)
        if self.out_scale is not None:  # spec/mapping.md §P4
            self._y = y
            y = y * self.out_scale
        if self.digital_bias:
            y = y + self.bias
        self._record, self._d = record, None
        return self.xp.reshape(y, (-1,)) if vector else y

    def backward(self, grad_out: Any) -> Any:
        """The gradient with respect to the last forward input, ``Wᵀ grad_out`` through the
        analog backward pass; keeps ``grad_out`` for the update."""
        if self._record is None:
            raise RuntimeError("backward: call forward first")
        d, vector = self._rows(grad_out, "grad_out", self.out_features)
        d_tiles = d if self.out_scale is None else d * self.out_scale
        z = self.analog_backward(d_tiles, self._record)
        self._d, self._d_tiles = d, d_tiles
        return self.xp.reshape(z, (-1,)) if vector else z

    def update(self, lr: float) -> None:
        """One SGD step with the last forward input and backward gradient: each tile
        ``W ← W − lr·dᵀx`` (its pulsed or exact update), the digital bias ``b ← b − lr·Σ d``."""
        lr = check_lr(lr)
        if self._record is None or self._d is None:
            raise RuntimeError("update: call forward and backward first")
        with unchanged_on_error(self):  # several tiles: all of them or none
            self.analog_update(self._record.xs, self._d_tiles, lr)
            if self.out_scale is not None:  # s ← s − lr·∂L/∂s (spec/mapping.md §P4)
                grad = self.xp.sum(self._d * self._y, axis=0)
                if self.out_scale.shape[0] == 1:
                    grad = self.xp.reshape(self.xp.sum(grad), (1,))
                scale = self.out_scale - lr * grad
                if not bool(self.xp.all(self.xp.isfinite(scale))):
                    raise ValueError(f"lr: the output-scale update overflows (lr = {lr!r})")
                self.out_scale = scale
            if self.digital_bias:
                bias = self.bias - lr * self.xp.sum(self._d, axis=0)
                if not bool(self.xp.all(self.xp.isfinite(bias))):
                    raise ValueError(f"lr: the bias update overflows (lr = {lr!r})")
                self.bias = bias
        self._d = None  # one update per backward

    def post_update_step(self) -> None:
        """The tiles' post-update operations (diffusion, decay)."""
        for row in self.tiles:
            for tile in row:
                tile.post_update_step()

    def train(self, mode: bool = True) -> "AnalogLinear":
        super().train(mode)
        for row in self.tiles:
            for tile in row:
                tile.train(mode)
        return self

    def program_analog_weights(self, noise_model: Any = None) -> None:
        """Program the tiles (a ConfigError for a layer without an InferenceRPUConfig, as in
        aihwkit); a ``noise_model`` replaces the one of the layer's and the tiles' configs."""
        new_config = None if noise_model is None else \
            inference_stage.with_noise_model(self.rpu_config, noise_model)  # checked first
        configs = [[tile.rpu_config for tile in row] for row in self.tiles]
        saved = self.state_dict()
        try:
            for row in self.tiles:
                for tile in row:
                    tile.program_weights(noise_model=noise_model)
        except BaseException:
            for row, row_configs in zip(self.tiles, configs):
                for tile, config in zip(row, row_configs):
                    tile.rpu_config = config
            self.load_state_dict(saved)
            raise
        if new_config is not None:
            self.rpu_config = new_config

    def drift_analog_weights(self, t_inference: float = 0.0) -> None:
        """Drift the tiles to ``t_inference`` s after programming (a layer without an
        InferenceRPUConfig is left as it is, as in aihwkit; its devices' own drift is
        ``AnalogTile.drift_weights(delta_t)``)."""
        if not isinstance(self.rpu_config, InferenceRPUConfig):
            inference_stage.check_time(t_inference)  # still a bad argument
            return
        with unchanged_on_error(self):
            for row in self.tiles:
                for tile in row:
                    tile.drift_weights(t_inference)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The tiles' states (weights, random and noise-management state) and the digital bias."""
        return {"type": type(self).__name__,
                "sizes": [self.out_features, self.in_features],
                "tiles": [[t.state_dict() for t in row] for row in self.tiles],
                "bias": None if self.bias is None else self.xp.asarray(self.bias, copy=True),
                "out_scale": None if self.out_scale is None
                else self.xp.asarray(self.out_scale, copy=True)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._check_state_type(state)
        if list(state.get("sizes", ())) != [self.out_features, self.in_features]:
            raise ValueError(f"state['sizes']: {state.get('sizes')!r}, the layer is "
                             f"{[self.out_features, self.in_features]}")
        tiles = state.get("tiles")
        if not isinstance(tiles, list) or [len(r) if isinstance(r, list) else -1
                                           for r in tiles] != [len(r) for r in self.tiles]:
            raise ValueError("state['tiles']: not the tile layout of this layer")
        if (state.get("bias") is None) != (self.bias is None):
            raise ValueError("state['bias']: expected a bias exactly when the layer has a "
                             "digital bias")
        bias = None
        if self.bias is not None:
            bias = self._check(state["bias"], "state['bias']", (self.out_features,))
        out_scale = None
        if (state.get("out_scale") is None) != (self.out_scale is None):
            raise ValueError("state['out_scale']: expected an output scale exactly when the "
                             "layer learns one (mapping.learn_out_scaling)")
        if self.out_scale is not None:
            out_scale = self._check(state["out_scale"], "state['out_scale']",
                                    tuple(self.out_scale.shape))
        for row, row_states in zip(self.tiles, tiles):
            for tile, s in zip(row, row_states):
                tile.load_state_dict(s)
        self.bias = bias
        self.out_scale = out_scale
        self._record = self._d = self._y = self._d_tiles = None

    def __repr__(self) -> str:
        bias = "digital" if self.digital_bias else "analog" if self.analog_bias else "none"
        return (f"AnalogLinear({self.in_features}, {self.out_features}, "
                f"{type(self.rpu_config).__name__}, bias={bias}, seed={self.seed}, "
                f"tiles={len(self.out_sizes)}x{len(self.in_sizes)})")


class _Activation(Module):
    """An elementwise activation; keeps what its derivative needs."""

    def __init__(self) -> None:
        self._saved: Any = None

    def forward(self, x: Any) -> Any:
        xp = _namespace_of(x, "x")
        out, self._saved = self._apply(xp, x)
        return out

    def backward(self, grad_out: Any) -> Any:
        if self._saved is None:
            raise RuntimeError("backward: call forward first")
        if tuple(grad_out.shape) != tuple(self._saved.shape):
            raise ValueError(f"grad_out: expected shape {tuple(self._saved.shape)}, got "
                             f"{tuple(grad_out.shape)}")
        xp = _namespace_of(grad_out, "grad_out")
        return grad_out * self._derivative(xp, self._saved)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(_Activation):
    """max(x, 0); derivative 1 where x > 0, else 0."""

    def _apply(self, xp: Any, x: Any) -> Tuple[Any, Any]:
        out = xp.where(x > 0, x, xp.zeros_like(x))
        return out, x

    def _derivative(self, xp: Any, x: Any) -> Any:
        return xp.astype(x > 0, x.dtype)


class Sigmoid(_Activation):
    """1 / (1 + exp(−x)) (computed from exp(−|x|), without overflow); derivative s·(1 − s)."""

    def _apply(self, xp: Any, x: Any) -> Tuple[Any, Any]:
        e = xp.exp(-xp.abs(x))
        s = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return s, s

    def _derivative(self, xp: Any, s: Any) -> Any:
        return s * (1.0 - s)


class Tanh(_Activation):
    """tanh(x); derivative 1 − tanh²."""

    def _apply(self, xp: Any, x: Any) -> Tuple[Any, Any]:
        t = xp.tanh(x)
        return t, t

    def _derivative(self, xp: Any, t: Any) -> Any:
        return 1.0 - t * t


#: Activation name -> class (for :func:`mlp` and the demo).
ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


class AnalogSequential(Module):
    """Modules applied in order; backward in reverse order; update and post_update_step on
    every module."""

    def __init__(self, *modules: Module) -> None:
        for k, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"modules[{k}]: expected a refsim.nn module, got "
                                f"{type(m).__name__}")
        self.modules: List[Module] = list(modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, index: int) -> Module:
        return self.modules[index]

    def forward(self, x: Any) -> Any:
        for m in self.modules:
            x = m.forward(x)
        return x

    def backward(self, grad_out: Any) -> Any:
        for m in reversed(self.modules):
            grad_out = m.backward(grad_out)
        return grad_out

    def update(self, lr: float) -> None:
        lr = check_lr(lr)
        with unchanged_on_error(self):  # every layer or none
            for m in self.modules:
                m.update(lr)

    def post_update_step(self) -> None:
        for m in self.modules:
            m.post_update_step()

    def children(self) -> List[Module]:
        return list(self.modules)

    def state_dict(self) -> Dict[str, Any]:
        return {"type": type(self).__name__, "modules": [m.state_dict() for m in self.modules]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._check_state_type(state)
        states = state.get("modules")
        if not isinstance(states, list) or len(states) != len(self.modules):
            raise ValueError(f"state['modules']: expected a list of {len(self.modules)} states")
        for m, s in zip(self.modules, states):
            m.load_state_dict(s)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(m) for m in self.modules)
        return f"AnalogSequential(\n  {inner}\n)"


def mlp(sizes: Sequence[int], rpu_config: Any = None, *, activation: str = "relu",
        bias: bool = True, seed: int = 0, xp: Any = None, dtype: Any = None, device: Any = None,
        backend: str = "auto") -> AnalogSequential:
    """A multi-layer perceptron ``sizes[0] → sizes[1] → … → sizes[-1]``: AnalogLinear layers
    with the activation between them (none after the last). Layer ``k`` gets seed word ``k`` of
    stream ``nn.layer_seed`` of ``seed``, so layers differ and the whole model follows from one
    seed."""
    sizes = [_check_int(s, f"sizes[{k}]", 1) for k, s in enumerate(sizes)]
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least two sizes, got {sizes}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got "
                         f"{activation!r}")
    seed = _check_int(seed, "seed", 0, rng.MAX_SEED)
    seeds = rng.random_words(seed, "nn.layer_seed", 0, 0, len(sizes) - 1)
    modules: List[Module] = []
    for k in range(len(sizes) - 1):
        if k:
            modules.append(ACTIVATIONS[activation]())
        modules.append(AnalogLinear(sizes[k], sizes[k + 1], rpu_config, bias=bias,
                                    seed=int(seeds[k]), xp=xp, dtype=dtype, device=device,
                                    backend=backend))
    return AnalogSequential(*modules)
