"""Bad input to the IO stage through the public tile API (spec/io.md §S1, §S9): every error is
raised before anything is computed, is of the documented type, and its message starts with the
name of the offending argument (or the dotted config path)."""

import math

import numpy as np
import pytest

from conftest import to_numpy
from refsim.configs import ConfigError, IOParameters, SingleRPUConfig
from refsim.tile import AnalogTile

OUT, IN = 3, 4


def make(xp=None, rpu_config=None, **kwargs):
    xp = np if xp is None else xp
    tile = AnalogTile(OUT, IN, rpu_config, xp=xp, backend="reference", **kwargs)
    w = np.arange(OUT * IN, dtype=np.float64).reshape(OUT, IN) / 10 - 0.5
    tile.set_weights(xp.asarray(w))
    return tile


ARGS = [("forward", "x", IN), ("backward", "d", OUT)]
ARG_IDS = ["forward", "backward"]


# -- rank and size --------------------------------------------------------------------------------


@pytest.mark.parametrize("method, name, size", ARGS, ids=ARG_IDS)
@pytest.mark.parametrize("shape_of", [
    lambda n: (),  # 0-D
    lambda n: (2, 2, n),  # 3-D
    lambda n: (1, 1, 1, n),  # 4-D
    lambda n: (n + 1,),  # wrong length
    lambda n: (n - 1,),
    lambda n: (2, n + 1),  # wrong row length
    lambda n: (n, 2),  # transposed batch
    lambda n: (0,),  # empty vector
    lambda n: (2, 0),  # empty rows
    lambda n: (OUT + IN - n,),  # the other direction's size
], ids=["0d", "3d", "4d", "long", "short", "long-rows", "transposed", "empty-1d", "empty-rows",
        "other-direction"])
def test_wrong_rank_or_size(xp, method, name, size, shape_of):
    tile = make(xp)
    shape = shape_of(size)
    a = xp.asarray(np.ones(shape))
    with pytest.raises(ValueError, match=rf"^{name}: expected shape \({size},\) or "
                                          rf"\(batch, {size}\), got"):
        getattr(tile, method)(a)


def test_set_weights_wrong_shape(xp):
    tile = make(xp)
    for shape in [(IN, OUT), (OUT,), (OUT, IN, 1), (OUT + 1, IN), (OUT, IN - 1), (), (0, IN)]:
        with pytest.raises(ValueError, match=r"^weights: expected shape \(3, 4\)"):
            tile.set_weights(xp.asarray(np.ones(shape)))


# -- dtype ----------------------------------------------------------------------------------------

BAD_DTYPES = ["int8", "int32", "int64", "uint8", "bool", "complex64", "complex128", "float16"]


@pytest.mark.parametrize("method, name, size", ARGS, ids=ARG_IDS)
@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_non_float_dtypes_are_rejected(xp, method, name, size, dtype):
    if not hasattr(xp, dtype):
        pytest.skip(f"{xp.__name__} has no {dtype}")
    tile = make(xp)
    a = xp.asarray(np.ones((2, size)).astype(dtype))
    with pytest.raises(TypeError, match=rf"^{name}: expected a float32 or float64 array"):
        getattr(tile, method)(a)


@pytest.mark.parametrize("dtype", ["int64", "bool", "complex128"])
def test_set_weights_non_float_dtype(xp, dtype):
    tile = make(xp)
    with pytest.raises(TypeError, match=r"^weights: expected a float32 or float64 array"):
        tile.set_weights(xp.asarray(np.ones((OUT, IN)).astype(dtype)))


# -- non-finite values ----------------------------------------------------------------------------


@pytest.mark.parametrize("method, name, size", ARGS, ids=ARG_IDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("where", [(0, 0), (1, -1)], ids=["first", "last"])
def test_non_finite_inputs_are_rejected(xp, method, name, size, value, dtype, where):
    tile = make(xp)
    a = np.zeros((2, size))
    a[where] = value
    with pytest.raises(ValueError, match=rf"^{name}: contains NaN or infinity"):
        getattr(tile, method)(xp.asarray(a, dtype=getattr(xp, dtype)))
    with pytest.raises(ValueError, match=rf"^{name}: contains NaN or infinity"):
        getattr(tile, method)(xp.asarray(a[where[0]], dtype=getattr(xp, dtype)))  # 1-D


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_set_weights_non_finite(xp, value):
    tile = make(xp)
    w = np.zeros((OUT, IN))
    w[1, 2] = value
    with pytest.raises(ValueError, match=r"^weights: contains NaN or infinity"):
        tile.set_weights(xp.asarray(w))
    assert np.all(np.isfinite(to_numpy(tile.get_weights())))  # the old weights are kept


# -- namespaces and non-arrays --------------------------------------------------------------------


def _namespaces():
    found = [np]
    for name in ("torch", "array_api_strict"):
        try:
            found.append(__import__(name))
        except ImportError:
            pass
    return found


NAMESPACES = _namespaces()
PAIRS = [(a, b) for a in NAMESPACES for b in NAMESPACES if a is not b]


@pytest.mark.parametrize("tile_ns, arg_ns", PAIRS,
                         ids=[f"{a.__name__}-tile-{b.__name__}-input" for a, b in PAIRS])
def test_mixed_namespaces_are_rejected(tile_ns, arg_ns):
    """Arrays are not converted between namespaces (§S9)."""
    tile = make(tile_ns)
    for method, name, size in ARGS:
        with pytest.raises(TypeError, match=rf"^{name}: array of .*but the tile holds arrays of"):
            getattr(tile, method)(arg_ns.asarray(np.ones((2, size))))
    with pytest.raises(TypeError, match=r"^weights: array of .*but the tile holds arrays of"):
        tile.set_weights(arg_ns.asarray(np.ones((OUT, IN))))


@pytest.mark.parametrize("method, name, size", ARGS, ids=ARG_IDS)
@pytest.mark.parametrize("value", [
    lambda n: [1.0] * n,  # a list
    lambda n: [[1.0] * n],  # a nested list
    lambda n: tuple([0.5] * n),
    lambda n: 1.0,
    lambda n: None,
    lambda n: "1 2 3",
], ids=["list", "nested-list", "tuple", "float", "None", "str"])
def test_non_arrays_are_rejected(method, name, size, value):
    tile = make()
    with pytest.raises(TypeError, match=rf"^{name}: expected an array, got"):
        getattr(tile, method)(value(size))


def test_set_weights_non_array():
    tile = make()
    with pytest.raises(TypeError, match=r"^weights: expected an array, got list"):
        tile.set_weights([[0.0] * IN] * OUT)


def test_rejected_calls_do_not_advance_the_counter():
    """§S8: a call rejected by the input checks draws nothing and does not advance the call
    counter: the next good call gives the numbers of a fresh tile."""
    x = np.linspace(-1, 1, 2 * IN).reshape(2, IN)
    tile = make(seed=9)
    for bad in (np.full((2, IN), np.nan), np.ones((2, IN + 1)), np.ones((2, IN), dtype=np.int64),
                [1.0] * IN):
        with pytest.raises((TypeError, ValueError)):
            tile.forward(bad)
    assert tile.state_dict()["rng"]["calls"] == {}
    np.testing.assert_array_equal(tile.forward(x), make(seed=9).forward(x))


# -- constructor arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out_size", "in_size"])
@pytest.mark.parametrize("value", [0, -1, -(2**40)])
def test_sizes_must_be_positive(name, value):
    sizes = {"out_size": OUT, "in_size": IN, name: value}
    with pytest.raises(ValueError, match=rf"^{name}: expected a positive integer, got"):
        AnalogTile(sizes["out_size"], sizes["in_size"], backend="reference")


@pytest.mark.parametrize("name", ["out_size", "in_size"])
@pytest.mark.parametrize("value", [2.0, 2.5, True, "3", None, np.float64(3.0)])
def test_sizes_must_be_integers(name, value):
    sizes = {"out_size": OUT, "in_size": IN, name: value}
    with pytest.raises((TypeError, ValueError), match=rf"^{name}: expected a positive integer"):
        AnalogTile(sizes["out_size"], sizes["in_size"], backend="reference")


def test_numpy_integer_sizes_are_accepted():
    tile = AnalogTile(np.int64(OUT), np.int32(IN), backend="reference")
    assert (tile.out_size, tile.in_size) == (OUT, IN)
    assert type(tile.out_size) is int


@pytest.mark.parametrize("value", ["Reference", "numpy", "", None, 1, "cuda"])
def test_bad_backend(value):
    with pytest.raises(ValueError, match=r"^backend: expected one of"):
        AnalogTile(OUT, IN, backend=value)


def test_fast_backend_needs_numpy():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"^backend: 'fast' needs"):
        AnalogTile(OUT, IN, xp=torch, backend="fast")


def test_bad_dtype(xp):
    for dtype in [getattr(xp, name) for name in ("int32", "int64", "bool", "complex128")
                  if hasattr(xp, name)] + ["float64", "float32", float, None.__class__]:
        with pytest.raises(TypeError, match=r"^dtype: expected float32 or float64"):
            AnalogTile(OUT, IN, xp=xp, dtype=dtype, backend="reference")


def test_dtype_of_another_namespace():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"^dtype: expected float32 or float64"):
        AnalogTile(OUT, IN, xp=torch, dtype=np.float64, backend="reference")
    with pytest.raises(TypeError, match=r"^dtype: expected float32 or float64"):
        AnalogTile(OUT, IN, dtype=torch.float64, backend="reference")


@pytest.mark.parametrize("value, error", [
    (-1, ValueError), (2**32, ValueError), (2**64, ValueError),
    (1.0, TypeError), (1.5, TypeError), (True, TypeError), ("1", TypeError), (None, TypeError),
])
def test_bad_seed(value, error):
    """Seeds follow spec/rng.md §6: integers in [0, 2³²−1]; ValueError outside, TypeError for a
    non-integer (bool included)."""
    with pytest.raises(error, match=r"^seed: "):
        AnalogTile(OUT, IN, seed=value, backend="reference")


def test_extreme_seeds_are_accepted():
    for seed in (0, 2**32 - 1, np.uint32(7), np.int64(2**31)):
        AnalogTile(OUT, IN, seed=seed, backend="reference")


@pytest.mark.parametrize("value", ["numpy", 3])
def test_bad_namespace_argument(value):
    with pytest.raises((TypeError, ValueError), match=r"^xp: "):
        AnalogTile(OUT, IN, xp=value, backend="reference")


@pytest.mark.parametrize("value", [IOParameters(), {"forward": {}}, "SingleRPUConfig", 1])
def test_bad_rpu_config(value):
    with pytest.raises(TypeError, match=r"^rpu_config: expected an RPU config"):
        AnalogTile(OUT, IN, value, backend="reference")


# -- unsupported configs --------------------------------------------------------------------------


@pytest.mark.parametrize("direction, field, value", [
    ("forward", "mv_type", "SplitMode"), ("forward", "mv_type", "BitWise"),
    ("backward", "mv_type", "SplitMode"), ("backward", "mv_type", "BitWise"),
    ("forward", "bound_management", "Shift"),
])
def test_unsupported_settings_raise_config_error_naming_the_path(direction, field, value):
    """§S1: accepted by validate(), rejected with ConfigError when the tile is created, the message
    starting with the dotted path."""
    cfg = SingleRPUConfig(**{direction: IOParameters(**{field: value})})
    cfg.validate()  # a valid config ...
    with pytest.raises(ConfigError, match=rf"^{direction}\.{field}: '{value}'"):
        AnalogTile(OUT, IN, cfg, backend="reference")  # ... that the tile does not implement


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_backward_shift_is_accepted_and_ignored(backend):
    """§S1, §S7: the backward pass never uses bound management, so backward 'Shift' is not
    checked and acts as 'None': on a problem whose outputs all clip (20 rows of weights in
    [0.5, 1] summed against a normalized positive input: about 14 > out_bound 12), backward
    with 'Shift' equals backward with 'None' and with 'Iterative', bit for bit over two calls (the
    same noise), while the same numbers through a forward pass, where bound management acts,
    differ between 'Iterative' and 'None'."""
    if backend == "fast":
        pytest.importorskip("refsim_fast")
    gen = np.random.default_rng(5)
    m, n = 20, 6
    w = gen.uniform(0.5, 1.0, (m, n))
    d = gen.uniform(0.8, 1.0, (2, m))

    def tile(out_size, in_size, weights, **io):
        t = AnalogTile(out_size, in_size, SingleRPUConfig(**io), seed=3, backend=backend)
        t.set_weights(weights)
        return t

    backward = {}
    for bm in ("Shift", "None", "Iterative"):
        t = tile(m, n, w, backward=IOParameters(bound_management=bm))
        backward[bm] = np.stack([t.backward(d), t.backward(d)])
    assert backward["Shift"].shape == (2, 2, n)
    clipped = 12.0 * np.max(np.abs(d), axis=1)[:, None]  # out_bound times α_b (AbsMax)
    np.testing.assert_allclose(backward["None"], np.broadcast_to(clipped, (2, 2, n)), rtol=1e-12)
    np.testing.assert_array_equal(backward["Shift"], backward["None"])
    np.testing.assert_array_equal(backward["Shift"], backward["Iterative"])
    forward = {bm: tile(n, m, w.T, forward=IOParameters(bound_management=bm)).forward(d)
               for bm in ("None", "Iterative")}
    np.testing.assert_allclose(forward["None"], np.broadcast_to(clipped, (2, n)), rtol=1e-12)
    assert np.all(forward["Iterative"] > clipped * (1 + 1e-3))


@pytest.mark.parametrize("field, value", [
    ("mv_type", "SplitMode"), ("mv_type", "BitWise"), ("bound_management", "Shift"),
])
def test_unsupported_settings_are_fine_in_a_perfect_direction(field, value):
    """§S1: a perfect direction ignores every other field, so nothing is checked there."""
    backward = {"mv_type": "Ideal", field: value} if field != "mv_type" else \
        {"is_perfect": True, field: value}
    cfg = SingleRPUConfig(forward=IOParameters(is_perfect=True, **{field: value}),
                          backward=IOParameters(**backward))
    tile = make(rpu_config=cfg)
    x = np.ones((2, IN))
    np.testing.assert_array_equal(tile.forward(x), x @ to_numpy(tile.get_weights()).T)


def test_input_bound_rule_is_enforced():
    """inp_bound must be exactly 1 with noise management (ConfigError naming inp_bound), unless
    is_perfect or noise_management 'None'."""
    with pytest.raises(ConfigError, match=r"inp_bound: must be exactly 1.0"):
        AnalogTile(OUT, IN, SingleRPUConfig(forward=IOParameters(inp_bound=2.0)))
    with pytest.raises(ConfigError, match=r"inp_bound: must be exactly 1.0"):
        AnalogTile(OUT, IN, SingleRPUConfig(backward=IOParameters(inp_bound=0.5,
                                                                  noise_management="Max")))
    AnalogTile(OUT, IN, SingleRPUConfig(forward=IOParameters(inp_bound=2.0, is_perfect=True)))
    AnalogTile(OUT, IN, SingleRPUConfig(forward=IOParameters(inp_bound=2.0,
                                                             noise_management="None")))


@pytest.mark.parametrize("field, value", [
    ("mv_type", "Bogus"), ("noise_management", "absmax"), ("bound_management", "ITERATIVE"),
    ("w_noise_type", "Gaussian"), ("out_noise", -0.1), ("inp_noise", -1.0), ("w_noise", -0.5),
    ("ir_drop", -1.0), ("ir_drop_g_ratio", 0.0), ("max_bm_factor", 0), ("max_bm_res", 0.0),
    ("nm_thres", -1.0), ("out_noise_std", -0.1), ("r_series", -0.1), ("v_offset_std", -0.1),
    ("out_nonlinearity", -0.1), ("slope_calibration", -1.0), ("w_read_asymmetry_dtod", -0.1),
    ("out_nonlinearity_std", -0.1), ("inp_res", math.nan), ("out_bound", math.inf),
])
def test_out_of_domain_fields_raise_config_error(field, value):
    with pytest.raises(ConfigError, match=rf"{field}"):
        AnalogTile(OUT, IN, SingleRPUConfig(forward=IOParameters(**{field: value})))


# -- state ----------------------------------------------------------------------------------------


def test_bad_state_is_rejected():
    tile = make()
    good = tile.state_dict()
    for running in (math.nan, math.inf, "1.0"):
        with pytest.raises(ValueError, match=r"^state\['nm_running'\]: "):
            tile.load_state_dict(dict(good, nm_running=running))
    with pytest.raises(ValueError, match=r"^state\['weights'\]: expected shape"):
        tile.load_state_dict(dict(good, weights=np.ones((IN, OUT))))
    with pytest.raises(ValueError, match=r"^state\['rng'\]\['seed'\]: "):
        tile.load_state_dict(dict(good, rng={"seed": -1, "calls": {}}))
    with pytest.raises(ValueError, match=r"^state\['rng'\]: expected the dict"):
        tile.load_state_dict(dict(good, rng="x"))
    with pytest.raises(ValueError, match=r"^state\['rng'\]\['calls'\]: "):
        tile.load_state_dict(dict(good, rng={"seed": 1, "calls": [1]}))
