"""Checkpoint files and copies (refsim/checkpoint.py; AnalogTile.save/load, refsim.nn
save/load, copy.deepcopy and pickle of tiles and models).

A tile or model saved after a few updates and loaded in a fresh Python process continues bit for
bit as the original does in this process (forward and backward outputs with noise, updates,
drift, write noise, pulse counters, every compound's state); deep copies and pickled copies
continue identically and independently; corrupt or mismatched files raise a ValueError naming
the file and the key."""

import copy
import dataclasses
import io
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from refsim import checkpoint, configs, nn
from refsim.stages.drift import DriftState
from refsim.tile import AnalogTile

@dataclasses.dataclass
class _Foreign:
    x: int = 0


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The continuation run in this process and, from a loaded file, in a fresh one: the same code.
CONTINUE = '''
import numpy as np
from refsim import checkpoint, nn


def run_tile(tile, xp, seed, drift):
    """Two steps: forward, backward, update (and drift, diffusion, decay); every result."""
    gen = np.random.default_rng(seed)
    out = {}
    for k in range(2):
        x = xp.asarray(gen.uniform(-1, 1, (4, tile.in_size)), dtype=tile.dtype)
        d = xp.asarray(gen.uniform(-1, 1, (4, tile.out_size)), dtype=tile.dtype)
        out[f"y{k}"] = tile.forward(x)
        out[f"z{k}"] = tile.backward(d)
        tile.update(x, d, 0.05)
        if drift:
            tile.drift_weights(1.5)
            tile.post_update_step()
        out[f"w{k}"] = tile.get_weights()
        out[f"p{k}"] = tile.get_pulse_counters()
        if tile.get_persistent_weights() is not None:
            out[f"q{k}"] = tile.get_persistent_weights()
    return {k: checkpoint.to_numpy(v) for k, v in out.items()}


def run_model(model, xp, seed):
    """One epoch of SGD on 8 samples (batches of 4); the loss, the outputs and the weights."""
    gen = np.random.default_rng(seed)
    dtype = model[0].dtype if isinstance(model, nn.AnalogSequential) else model.dtype
    n_in = model[0].in_features if isinstance(model, nn.AnalogSequential) else model.in_features
    x = xp.asarray(gen.normal(size=(8, n_in)), dtype=dtype)
    y = xp.asarray(gen.integers(0, 2, 8))
    out = {"loss": np.asarray(nn.train_epoch(model, x, y, 0.1, 4, seed, epoch=seed))}
    out["out"] = checkpoint.to_numpy(model.forward(x))
    layers = model if isinstance(model, nn.AnalogSequential) else [model]
    for k, layer in enumerate(m for m in layers if isinstance(m, nn.AnalogLinear)):
        w, b = layer.get_weights()
        out[f"w{k}"] = checkpoint.to_numpy(w)
        if b is not None:
            out[f"b{k}"] = checkpoint.to_numpy(b)
    return out
'''

FRESH = CONTINUE + '''
import importlib, json, sys
from refsim.tile import AnalogTile

for job in json.loads(sys.argv[1]):
    xp = importlib.import_module(job["xp"])
    if job["kind"] == "tile":
        obj = AnalogTile.load(job["path"], xp=xp)
        result = run_tile(obj, obj.xp, 2, job["drift"])
    else:
        obj = nn.Module.load(job["path"], xp=xp)
        result = run_model(obj, obj[0].xp if isinstance(obj, nn.AnalogSequential) else obj.xp, 2)
    np.savez(job["out"], **result)
'''

_ns: dict = {}
exec(CONTINUE, _ns)
run_tile, run_model = _ns["run_tile"], _ns["run_model"]


def _pulsed():
    drift = configs.DriftParameter(nu=0.05, nu_dtod=0.2, nu_std=0.1, w_noise_std=0.01)
    dev = configs.SoftBoundsDevice(write_noise_std=0.5, count_pulses=True, diffusion=0.001,
                                   lifetime=100.0, drift=drift)
    return configs.SingleRPUConfig(device=dev)


def _compound(algorithm, **kwargs):
    return lambda: configs.build_config(algorithm, configs.SoftBoundsReferenceDevice, **kwargs)


CONFIGS = {
    "fp": configs.FloatingPointRPUConfig,
    "inference": configs.InferenceRPUConfig,
    "pulsed": _pulsed,
    "sgd-2-devices": _compound("sgd", n_devices=2),
    "mp": _compound("mp"),
    "tiki-taka": _compound("tiki-taka"),
    "ttv2": _compound("ttv2"),
    "c-ttv2": _compound("c-ttv2"),
    "agad": _compound("agad"),
}

#: (config, namespace, dtype): every config on numpy in both dtypes, one torch and one
#: array-api-strict case.
CASES = [(c, "numpy", d) for c in CONFIGS for d in ("float32", "float64")] + \
    [("c-ttv2", "torch", "float32"), ("pulsed", "array_api_strict", "float64")]
CASE_IDS = ["-".join(c) for c in CASES]


def _module(name):
    return pytest.importorskip(name)


def _tile(config, xp_name, dtype, seed=5):
    xp = _module(xp_name)
    return AnalogTile(5, 4, CONFIGS[config](), seed=seed, dtype=getattr(xp, dtype), xp=xp)


def _model(xp_name="numpy"):
    """A pulsed c-TTv2 MLP with digital biases, and a layer with an analog bias split over two
    tiles."""
    xp = _module(xp_name)
    cfg = configs.build_config("c-ttv2", configs.SoftBoundsReferenceDevice)
    model = nn.mlp([6, 5, 2], cfg, seed=3, xp=xp, dtype=xp.float32)
    split = configs.SingleRPUConfig(device=configs.ConstantStepDevice())
    split.mapping.digital_bias = False
    split.mapping.max_output_size = 1
    layer = nn.AnalogLinear(6, 2, split, seed=4, xp=xp)
    return {"mlp": model, "linear": layer}


def _equal(expected, got):
    assert sorted(expected) == sorted(got)
    for key in expected:
        a, b = expected[key], got[key]
        assert a.dtype == b.dtype, key
        np.testing.assert_array_equal(a, b, err_msg=key, strict=True)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Save every case after one round of training, continue here, and load and continue every
    file in ONE fresh Python process; returns {case: (here, there)}."""
    folder = tmp_path_factory.mktemp("checkpoints")
    jobs, expected = [], {}
    for case, case_id in zip(CASES, CASE_IDS):
        config, xp_name, dtype = case
        try:
            tile = _tile(config, xp_name, dtype)
        except pytest.skip.Exception:
            continue
        drift = config == "pulsed"
        run_tile(tile, tile.xp, 1, drift)
        tile.save(folder / f"{case_id}.npz")
        expected[case_id] = run_tile(tile, tile.xp, 2, drift)
        jobs.append({"kind": "tile", "path": str(folder / f"{case_id}.npz"), "xp": xp_name,
                     "drift": drift, "out": str(folder / f"{case_id}.out.npz")})
    for name, model in _model().items():
        run_model(model, np, 1)
        model.save(folder / f"{name}.npz")
        expected[name] = run_model(model, np, 2)
        jobs.append({"kind": "model", "path": str(folder / f"{name}.npz"), "xp": "numpy",
                     "out": str(folder / f"{name}.out.npz")})
    done = subprocess.run([sys.executable, "-c", FRESH, json.dumps(jobs)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = {}
    for job, (case_id, here) in zip(jobs, expected.items()):
        with np.load(job["out"], allow_pickle=False) as z:
            results[case_id] = (here, {k: z[k] for k in z.files})
    return results


# -- fresh process ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_IDS)
def test_a_loaded_tile_continues_bitwise_in_a_fresh_process(fresh, case):
    if case not in fresh:
        pytest.skip("namespace missing")
    here, there = fresh[case]
    _equal(here, there)


@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_a_loaded_model_continues_training_bitwise_in_a_fresh_process(fresh, name):
    """Trained an epoch, saved, loaded elsewhere, trained another = trained two epochs."""
    here, there = fresh[name]
    _equal(here, there)


def test_the_continuation_depends_on_the_state():
    """The comparison above has teeth: a tile rebuilt without its state continues otherwise."""
    tile, other = _tile("c-ttv2", "numpy", "float64"), _tile("c-ttv2", "numpy", "float64")
    run_tile(tile, np, 1, False)
    a, b = run_tile(tile, np, 2, False), run_tile(other, np, 2, False)
    assert not all(np.array_equal(a[k], b[k]) for k in a)


# -- in this process ----------------------------------------------------------------------------


@pytest.mark.parametrize("config, xp_name, dtype", CASES, ids=CASE_IDS)
def test_deepcopy_and_pickle_continue_identically_and_independently(config, xp_name, dtype):
    tile = _tile(config, xp_name, dtype)
    drift = config == "pulsed"
    run_tile(tile, tile.xp, 1, drift)
    deep, pickled = copy.deepcopy(tile), pickle.loads(pickle.dumps(tile))
    assert deep.xp is tile.xp and pickled.xp is tile.xp
    assert deep.weights is not tile.weights and deep.streams is not tile.streams
    if tile.compound is not None:  # the compound's context follows its tile's copy
        assert deep.compound.ctx.streams is deep.streams
        assert deep.compound.ctx.xp is tile.xp
        assert deep.compound.ctx.fast_update is tile.compound.ctx.fast_update
    # the copies run first: the original must be untouched by them
    first = run_tile(deep, tile.xp, 2, drift)
    second = run_tile(pickled, tile.xp, 2, drift)
    original = run_tile(tile, tile.xp, 2, drift)
    _equal(original, first)
    _equal(original, second)
    # and the original's run did not move the copies
    assert deep.streams.state_dict() == tile.streams.state_dict()
    assert deep.streams is not tile.streams


def test_deepcopy_of_a_numpy_tile_shares_no_array():
    tile = _tile("agad", "numpy", "float64")
    run_tile(tile, np, 1, False)
    before = tile.state_dict()
    twin = copy.deepcopy(tile)
    twin.weights[...] = 7.0
    twin.compound.devs[0].w[...] = 7.0
    twin.compound.buffer[...] = 7.0
    after = tile.state_dict()
    np.testing.assert_array_equal(after["weights"], before["weights"])
    np.testing.assert_array_equal(after["compound"]["devices"][0],
                                  before["compound"]["devices"][0])
    np.testing.assert_array_equal(after["compound"]["buffer"], before["compound"]["buffer"])


def test_models_deepcopy_pickle_save_and_load_in_process(tmp_path):
    models = _model()
    for name, model in models.items():
        run_model(model, np, 1)
        copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model))]
        model.save(tmp_path / f"{name}.npz")
        cls = type(model)
        copies.append(cls.load(tmp_path / f"{name}.npz"))
        copies.append(checkpoint.load(tmp_path / f"{name}.npz"))
        results = [run_model(c, np, 2) for c in copies]
        expected = run_model(model, np, 2)
        for r in results:
            _equal(expected, r)
    with pytest.raises(ValueError, match="holds a AnalogLinear, not a AnalogSequential"):
        nn.AnalogSequential.load(tmp_path / "linear.npz")
    with pytest.raises(ValueError, match="holds a AnalogSequential, not a AnalogTile"):
        AnalogTile.load(tmp_path / "mlp.npz")


def test_activations_save_and_load(tmp_path):
    for cls in (nn.ReLU, nn.Sigmoid, nn.Tanh):
        cls().save(tmp_path / "a.npz")
        assert type(nn.Module.load(tmp_path / "a.npz")) is cls


def test_a_torch_tile_loads_into_numpy_with_the_same_state(tmp_path):
    torch = pytest.importorskip("torch")
    tile = _tile("ttv2", "torch", "float32")
    run_tile(tile, torch, 1, False)
    tile.save(tmp_path / "t.npz")
    loaded = AnalogTile.load(tmp_path / "t.npz")  # numpy by default
    assert loaded.xp.__name__.endswith("numpy") and loaded.dtype == np.float32
    a, b = tile.state_dict(), loaded.state_dict()
    assert a["rng"] == b["rng"]
    np.testing.assert_array_equal(checkpoint.to_numpy(a["weights"]), b["weights"], strict=True)
    for x, y in zip(a["compound"]["devices"], b["compound"]["devices"]):
        np.testing.assert_array_equal(checkpoint.to_numpy(x), y, strict=True)
    with open(tmp_path / "t.npz", "rb") as f:  # no pickle anywhere in the file
        with np.load(f, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)


def test_file_layout_exact_path_and_file_objects(tmp_path):
    tile = _tile("pulsed", "numpy", "float32")
    run_tile(tile, np, 1, True)
    path = tmp_path / "tile.ckpt"  # written exactly there: no suffix added
    tile.save(path)
    assert sorted(os.listdir(tmp_path)) == ["tile.ckpt"]
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z[checkpoint.HEADER_KEY][()]))
        names = set(z.files)
    assert header["format"] == "refsim-checkpoint" and header["version"] == 1
    assert header["kind"] == "AnalogTile"
    assert header["object"]["rpu_config"] == tile.rpu_config.to_json()
    assert configs.from_json(header["object"]["rpu_config"]) == tile.rpu_config
    assert header["object"]["dtype"] == "float32" and header["object"]["seed"] == 5
    assert header["saved_from"]["namespace"] == "numpy"
    assert header["state"]["rng"] == tile.streams.state_dict()
    assert header["state"]["drift"]["$dataclass"] == "refsim.stages.drift.DriftState"
    assert {"arrays/weights", "arrays/persistent", "arrays/pulse_counters",
            "arrays/drift/w0", "arrays/drift/t_start", "arrays/drift/previous"} <= names
    assert header["arrays"]["pulse_counters"] == {"shape": [2, 5, 4], "dtype": "int64"}
    buffer = io.BytesIO()
    tile.save(buffer)
    buffer.seek(0)
    same = AnalogTile.load(buffer)
    _equal(run_tile(tile, np, 2, True), run_tile(same, np, 2, True))


# -- flatten / unflatten ------------------------------------------------------------------------


def test_flatten_round_trips_nested_states():
    w = np.arange(6.0).reshape(2, 3)
    tree = {"a": [w, (1, 2.5, None), {"$odd": True, 3: "x"}], "drift": DriftState(w, w, w, 0.5),
            "s": np.float32(0.1), "flag": np.bool_(True), "n": 2**64 - 1, "i": np.int64(3)}
    flat, arrays = checkpoint.flatten(tree)
    json.dumps(flat)
    back = checkpoint.unflatten(json.loads(json.dumps(flat)), arrays)
    assert back["a"][1] == (1, 2.5, None) and back["a"][2] == {"$odd": True, 3: "x"}
    assert isinstance(back["drift"], DriftState) and back["drift"].tau == 0.5
    np.testing.assert_array_equal(back["drift"].t_start, w)
    assert type(back["s"]) is np.float32 and back["s"] == np.float32(0.1)
    assert type(back["flag"]) is np.bool_ and back["n"] == 2**64 - 1 and back["i"] == 3
    assert sorted(arrays) == ["a/0", "drift/previous", "drift/t_start", "drift/w0"]


def test_flatten_rejects_unsupported_values_naming_the_path():
    with pytest.raises(TypeError, match=r"a/1: cannot save a set"):
        checkpoint.flatten({"a": [1, {2}]})
    with pytest.raises(TypeError, match="only refsim's dataclasses"):
        checkpoint.flatten({"z": _Foreign()})
    with pytest.raises(TypeError, match=r"x: cannot save an array of dtype complex128"):
        checkpoint.flatten({"x": np.zeros(2, complex)})
    with pytest.raises(ValueError, match="not a refsim class"):
        checkpoint.unflatten({"$dataclass": "builtins.dict", "fields": {}}, {})
    with pytest.raises(ValueError, match=r"state\['w'\]: array 'w' is missing"):
        checkpoint.unflatten({"w": {"$array": "w"}}, {})


def test_saving_an_unsupported_object_is_a_type_error(tmp_path):
    for obj in (object(), nn.Module(), np.zeros(3)):
        with pytest.raises(TypeError, match="obj: cannot save"):
            checkpoint.save(obj, tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


# -- corrupt and mismatched files ---------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    tile = _tile("c-ttv2", "numpy", "float64")
    run_tile(tile, np, 1, False)
    path = tmp_path / "tile.npz"
    tile.save(path)
    return path


def _rewrite(path, change):
    """Rewrite a checkpoint with ``change(members, header)`` applied (members: name -> array)."""
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    header = json.loads(str(members[checkpoint.HEADER_KEY][()]))
    change(members, header)
    if checkpoint.HEADER_KEY in members:
        members[checkpoint.HEADER_KEY] = np.array(json.dumps(header))
    out = path.with_name("changed.npz")
    with open(out, "wb") as f:
        np.savez(f, **members)
    return out


def test_a_truncated_file_is_a_value_error(saved):
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 10):
        bad = saved.with_name(f"cut{cut}.npz")
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*not a refsim checkpoint"):
            AnalogTile.load(bad)


def test_a_missing_array_is_a_value_error_naming_the_key(saved):
    bad = _rewrite(saved, lambda m, h: m.pop("arrays/compound/buffer"))
    with pytest.raises(ValueError, match=re.escape(str(bad)) +
                       r": key 'arrays/compound/buffer' is missing"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: h.pop("state"))
    with pytest.raises(ValueError, match="header key 'state' is missing"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: h["state"].pop("weights"))
    with pytest.raises(ValueError, match="weights"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: m.pop(checkpoint.HEADER_KEY))
    with pytest.raises(ValueError, match="'__refsim_checkpoint__' is missing"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: m.update({"arrays/extra": np.zeros(1)}))
    with pytest.raises(ValueError, match="key 'arrays/extra' is not in the header"):
        AnalogTile.load(bad)


def test_another_format_or_version_is_a_value_error(saved):
    bad = _rewrite(saved, lambda m, h: h.update(version=2))
    with pytest.raises(ValueError, match=r"header key 'version': unsupported checkpoint "
                                         r"version 2 \(this refsim reads version 1\)"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: h.update(format="something"))
    with pytest.raises(ValueError, match="header key 'format'"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: h.update(kind="Other"))
    with pytest.raises(ValueError, match=r"header\['kind'\]: unknown object kind 'Other'"):
        AnalogTile.load(bad)
    other = saved.with_name("plain.npz")
    np.savez(other, a=np.zeros(2))
    with pytest.raises(ValueError, match="not a refsim checkpoint"):
        AnalogTile.load(other)
    npy = saved.with_name("a.npy")
    np.save(npy, np.zeros(2))
    with pytest.raises(ValueError, match="not a refsim checkpoint"):
        AnalogTile.load(npy)
    with pytest.raises(FileNotFoundError):
        AnalogTile.load(saved.with_name("missing.npz"))


def test_a_shape_mismatch_is_a_value_error_naming_the_key(saved):
    # the array does not fit the header
    bad = _rewrite(saved, lambda m, h: m.update({"arrays/weights": np.zeros((4, 5))}))
    with pytest.raises(ValueError, match=r"key 'arrays/weights': shape \[4, 5\]"):
        AnalogTile.load(bad)

    # header and array agree, but not with the tile they describe
    def wrong_shape(m, h):
        m["arrays/compound/buffer"] = np.zeros((4, 4))
        h["arrays"]["compound/buffer"]["shape"] = [4, 4]

    bad = _rewrite(saved, wrong_shape)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + r".*'buffer'.*shape"):
        AnalogTile.load(bad)

    def wrong_dtype(m, h):
        m["arrays/weights"] = m["arrays/weights"].astype(np.int64)
        h["arrays"]["weights"]["dtype"] = "int64"

    with pytest.raises(ValueError, match="weights"):
        AnalogTile.load(_rewrite(saved, wrong_dtype))


def test_a_mismatched_object_is_a_value_error(saved):
    bad = _rewrite(saved, lambda m, h: h["object"].update(out_size=0))
    with pytest.raises(ValueError, match="out_size"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: h["object"].update(dtype="int8"))
    with pytest.raises(ValueError, match=r"header\['object'\]\['dtype'\]"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: h["object"].pop("rpu_config"))
    with pytest.raises(ValueError, match="key 'rpu_config' is missing"):
        AnalogTile.load(bad)
    sgd = configs.build_config("sgd", configs.SoftBoundsReferenceDevice).to_json()
    bad = _rewrite(saved, lambda m, h: h["object"].update(rpu_config=sgd))
    with pytest.raises(ValueError, match="compound"):
        AnalogTile.load(bad)
    bad = _rewrite(saved, lambda m, h: h["state"]["rng"].update(seed=-1))
    with pytest.raises(ValueError, match=r"seed"):
        AnalogTile.load(bad)
    with pytest.raises(ValueError, match="backend"):
        AnalogTile.load(saved, backend="gpu")
