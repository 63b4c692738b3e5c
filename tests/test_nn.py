"""refsim.nn (AnalogLinear, activations, losses, AnalogSequential, SGD loop), refsim.data and the
demo: gradients against finite differences, exact floating-point layers, learning, namespaces,
checkpoints, digital/analog bias, tile splitting, bad input, the demo command."""

import json

import numpy as np
import pytest

from conftest import NAMESPACES, OTHER_NAMESPACES, assert_same_state, to_numpy
from refsim import cli, configs, nn
from refsim.data import digits_split, load_digits

FP = configs.FloatingPointRPUConfig


def _fd_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar function of a float64 numpy array."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def _pulsed(device=configs.ConstantStepDevice, **mapping):
    cfg = configs.SingleRPUConfig(device=device())
    for key, value in mapping.items():
        setattr(cfg.mapping, key, value)
    return cfg


# -- losses and activations --------------------------------------------------------------------


def test_cross_entropy_gradient_matches_finite_differences():
    gen = np.random.default_rng(0)
    logits = gen.normal(size=(5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss, grad = nn.cross_entropy(logits, labels)
    ref = -np.mean(np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[
        np.arange(5), labels])
    assert loss == pytest.approx(ref, rel=1e-12)
    fd = _fd_grad(lambda z: nn.cross_entropy(z, labels)[0], logits.copy())
    np.testing.assert_allclose(grad, fd, atol=1e-8)
    # stable for huge logits
    loss, grad = nn.cross_entropy(np.array([[1e4, 0.0]]), np.array([1]))
    assert loss == pytest.approx(1e4) and np.all(np.isfinite(grad))


def test_mse_gradient_matches_finite_differences():
    gen = np.random.default_rng(1)
    out, target = gen.normal(size=(3, 4)), gen.normal(size=(3, 4))
    loss, grad = nn.mse(out, target)
    assert loss == pytest.approx(np.mean((out - target) ** 2), rel=1e-12)
    fd = _fd_grad(lambda z: nn.mse(z, target)[0], out.copy())
    np.testing.assert_allclose(grad, fd, atol=1e-8)


@pytest.mark.parametrize("cls", [nn.ReLU, nn.Sigmoid, nn.Tanh])
def test_activation_gradients_match_finite_differences(cls):
    gen = np.random.default_rng(2)
    x = gen.normal(size=(4, 6)) * 3
    x[np.abs(x) < 1e-3] = 0.5  # ReLU: stay away from the kink
    weights = gen.normal(size=x.shape)
    act = cls()
    act.forward(x)
    grad = act.backward(weights)
    fd = _fd_grad(lambda z: float(np.sum(cls().forward(z) * weights)), x.copy())
    np.testing.assert_allclose(grad, fd, atol=1e-7)
    if cls is nn.Sigmoid:  # no overflow for large negative inputs
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            s = cls().forward(np.array([[-1000.0, 1000.0]]))
        np.testing.assert_array_equal(s, [[0.0, 1.0]])


def test_loss_bad_input():
    with pytest.raises(ValueError, match="labels"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="logits"):
        nn.cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(ValueError, match="target"):
        nn.mse(np.zeros((2, 3)), np.zeros((2, 2)))


# -- AnalogLinear on exact tiles ---------------------------------------------------------------


@pytest.mark.parametrize("digital_bias", [True, False])
def test_floating_point_layer_is_exact(digital_bias):
    cfg = FP()
    cfg.mapping.digital_bias = digital_bias
    layer = nn.AnalogLinear(5, 3, cfg, seed=4)
    assert layer.digital_bias is digital_bias and layer.analog_bias is not digital_bias
    assert layer.tiles[0][0].in_size == (5 if digital_bias else 6)
    w, b = layer.get_weights()
    bound = 1 / np.sqrt(5)
    assert w.shape == (3, 5) and b.shape == (3,)
    assert np.all(np.abs(w) <= bound) and np.all(np.abs(b) <= bound) and np.std(w) > 0.1
    gen = np.random.default_rng(3)
    x, d = gen.normal(size=(4, 5)), gen.normal(size=(4, 3))
    np.testing.assert_allclose(layer.forward(x), x @ w.T + b, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.backward(d), d @ w, rtol=1e-13, atol=1e-14)
    layer.update(0.1)
    w2, b2 = layer.get_weights()
    np.testing.assert_allclose(w2, w - 0.1 * d.T @ x, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(b2, b - 0.1 * d.sum(0), rtol=1e-13, atol=1e-14)
    with pytest.raises(RuntimeError, match="update"):  # one update per backward
        layer.update(0.1)
    # a single vector
    np.testing.assert_allclose(layer.forward(x[0]), x[0] @ w2.T + b2, rtol=1e-13, atol=1e-14)


def test_same_seed_same_start_for_digital_and_analog_bias():
    outs = []
    for digital in (True, False):
        cfg = FP()
        cfg.mapping.digital_bias = digital
        outs.append(nn.AnalogLinear(7, 4, cfg, seed=9).get_weights())
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    w, b = nn.AnalogLinear(7, 4, FP(), seed=9, bias=False).get_weights()
    assert b is None
    np.testing.assert_array_equal(w, outs[0][0])
    assert not np.array_equal(w, nn.AnalogLinear(7, 4, FP(), seed=10).get_weights()[0])


def test_model_gradients_match_finite_differences():
    """Backward and the update of a floating-point MLP are the gradient of the mean loss."""
    model = nn.mlp([3, 5, 4, 2], FP(), activation="tanh", seed=5)
    gen = np.random.default_rng(4)
    x, y = gen.normal(size=(6, 3)), np.array([0, 1, 1, 0, 1, 0])

    def loss_of_input(z):
        return nn.cross_entropy(model.forward(z), y)[0]

    _, grad = nn.cross_entropy(model.forward(x), y)
    gx = model.backward(grad)
    np.testing.assert_allclose(gx, _fd_grad(loss_of_input, x.copy()), atol=1e-8)
    first = model[0]
    w, b = first.get_weights()

    def loss_of_weight(v):
        first.set_weights(v, b)
        return nn.cross_entropy(model.forward(x), y)[0]

    fd = _fd_grad(loss_of_weight, w.copy())
    first.set_weights(w, b)
    model.forward(x)
    model.backward(grad)
    model.update(1e-3)
    w2, _ = first.get_weights()
    np.testing.assert_allclose((w - w2) / 1e-3, fd, atol=1e-7)


def test_floating_point_mlp_learns_xor():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([0, 1, 1, 0])
    model = nn.mlp([2, 8, 2], FP(), activation="tanh", seed=3)
    losses = [nn.train_epoch(model, x, y, 0.5, 4, 0, epoch=e) for e in range(300)]
    assert losses[-1] < 0.05 < losses[0]
    assert nn.accuracy(model, x, y) == 1.0


@pytest.mark.parametrize("digital_bias", [True, False])
def test_pulsed_mlp_learns_a_tiny_problem(digital_bias):
    """ConstantStep devices with the default analog IO (noise, DAC/ADC) learn a linearly
    separable four-class problem, with either kind of bias."""
    gen = np.random.default_rng(5)
    centers = np.array([[1, 1, -1, -1], [-1, 1, 1, -1], [1, -1, -1, 1], [-1, -1, 1, 1]]) * 0.8
    y = gen.integers(0, 4, 48)
    x = centers[y] + 0.2 * gen.normal(size=(48, 4))
    cfg = _pulsed(digital_bias=digital_bias)
    model = nn.mlp([4, 8, 4], cfg, seed=2, dtype=np.float32, backend="reference")
    assert model[0].analog_bias is not digital_bias
    x = x.astype(np.float32)
    before = nn.accuracy(model, x, y)
    for epoch in range(4):
        nn.train_epoch(model, x, y, 0.2, 8, 1, epoch=epoch)
    assert nn.accuracy(model, x, y) >= 0.9 > 0.5 > before


# -- namespaces, checkpoints, splitting --------------------------------------------------------


def _train_small(xp, config, epochs=2, dtype=None):
    gen = np.random.default_rng(6)
    x_np, y_np = gen.normal(size=(24, 5)), gen.integers(0, 3, 24)
    dtype = xp.float64 if dtype is None else dtype
    x, y = xp.asarray(x_np, dtype=dtype), xp.asarray(y_np)
    model = nn.mlp([5, 6, 3], config, activation="sigmoid", seed=8, xp=xp, dtype=dtype,
                   backend="reference")
    losses = [nn.train_epoch(model, x, y, 0.3, 5, 2, epoch=e) for e in range(epochs)]
    return model, losses, model.forward(x)


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_namespaces_agree(xp):
    ref_model, ref_losses, ref_out = _train_small(np, FP())
    model, losses, out = _train_small(xp, FP())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(out), ref_out, rtol=1e-12, atol=1e-14)
    for a, b in zip((m for m in ref_model if isinstance(m, nn.AnalogLinear)),
                    (m for m in model if isinstance(m, nn.AnalogLinear))):
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_allclose(to_numpy(v), u, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("digital_bias", [True, False])
def test_checkpoint_resume_equals_uninterrupted(digital_bias):
    """A pulsed model with noisy analog IO: train 3 epochs, or 1 epoch, save, load into a model
    built with another seed, train 2 more: the same weights and losses, bit for bit."""
    gen = np.random.default_rng(7)
    x, y = gen.normal(size=(12, 6)).astype(np.float32), gen.integers(0, 3, 12)
    cfg = _pulsed(configs.SoftBoundsReferenceDevice, digital_bias=digital_bias)

    def model(seed):
        return nn.mlp([6, 5, 3], cfg, seed=seed, dtype=np.float32, backend="reference")

    straight = model(1)
    full = [nn.train_epoch(straight, x, y, 0.2, 4, 3, epoch=e) for e in range(3)]
    first = model(1)
    part = [nn.train_epoch(first, x, y, 0.2, 4, 3, epoch=0)]
    state = first.state_dict()
    nn.train_epoch(first, x, y, 0.2, 4, 3, epoch=1)  # the saved state is a copy
    resumed = model(99)
    resumed.load_state_dict(state)
    part += [nn.train_epoch(resumed, x, y, 0.2, 4, 3, epoch=e) for e in (1, 2)]
    assert part == full
    for a, b in zip(straight, resumed):
        if isinstance(a, nn.AnalogLinear):
            for u, v in zip(a.get_weights(), b.get_weights()):
                np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(straight.forward(x), resumed.forward(x))


def test_load_state_dict_rejects_other_models():
    a = nn.mlp([4, 3, 2], FP(), seed=1)
    with pytest.raises(ValueError, match="sizes"):
        nn.mlp([4, 5, 2], FP(), seed=1).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="modules"):
        nn.mlp([4, 2], FP(), seed=1).load_state_dict(a.state_dict())
    cfg = FP()
    cfg.mapping.digital_bias = False
    with pytest.raises(ValueError):
        nn.mlp([4, 3, 2], cfg, seed=1).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="type"):
        nn.ReLU().load_state_dict({"type": "Tanh"})


def test_split_layer_equals_one_tile():
    cfg = FP()
    cfg.mapping.max_input_size, cfg.mapping.max_output_size = 4, 3
    cfg.mapping.digital_bias = False  # a split layer keeps its bias digital
    split = nn.AnalogLinear(10, 7, cfg, seed=2)
    whole = nn.AnalogLinear(10, 7, FP(), seed=2)
    assert [[t.in_size for t in row] for row in split.tiles] == [[4, 3, 3]] * 3
    assert [row[0].out_size for row in split.tiles] == [3, 2, 2]
    assert split.digital_bias
    gen = np.random.default_rng(8)
    x, d = gen.normal(size=(3, 10)), gen.normal(size=(3, 7))
    for layer in (split, whole):
        layer.forward(x)
        layer.backward(d)
        layer.update(0.05)
    for u, v in zip(split.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(split.forward(x), whole.forward(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(split.backward(d), whole.backward(d), rtol=1e-12, atol=1e-14)
    restored = nn.AnalogLinear(10, 7, cfg, seed=5)
    restored.load_state_dict(split.state_dict())
    for u, v in zip(split.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_pulsed_weights_start_clipped_to_the_device_bounds():
    dev = configs.ConstantStepDevice(w_max=0.05, w_min=-0.05, w_max_dtod=0.0, w_min_dtod=0.0)
    layer = nn.AnalogLinear(4, 3, configs.SingleRPUConfig(device=dev), seed=1)
    w, _ = layer.get_weights()
    assert np.max(np.abs(w)) <= 0.05 + 1e-12 and np.sum(np.abs(w) == 0.05) > 0


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input():
    layer = nn.AnalogLinear(4, 3, FP(), seed=1)
    with pytest.raises(ValueError, match="x"):
        layer.forward(np.zeros((2, 5)))
    with pytest.raises(TypeError, match="x"):
        layer.forward(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="x"):
        layer.forward([[0.0] * 4])
    with pytest.raises(RuntimeError, match="forward"):
        nn.AnalogLinear(4, 3, FP()).backward(np.zeros((1, 3)))
    layer.forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="grad_out"):
        layer.backward(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="lr"):
        layer.update(float("nan"))
    with pytest.raises(ValueError, match="in_features"):
        nn.AnalogLinear(0, 3)
    with pytest.raises(ValueError, match="seed"):
        nn.AnalogLinear(2, 3, seed=-1)
    with pytest.raises(TypeError, match="rpu_config"):
        nn.AnalogLinear(2, 3, configs.IOParameters())
    with pytest.raises(ValueError, match="activation"):
        nn.mlp([2, 2], activation="gelu")
    with pytest.raises(TypeError, match="modules"):
        nn.AnalogSequential(nn.ReLU(), "relu")
    with pytest.raises(ValueError, match="batch_size"):
        nn.train_epoch(nn.mlp([2, 2]), np.zeros((2, 2)), np.zeros(2, dtype=np.int64), 0.1, 0, 0)


def test_an_analog_bias_with_a_learned_input_range_is_refused():
    cfg = configs.SingleRPUConfig()
    cfg.forward.noise_management = cfg.forward.bound_management = "None"
    cfg.pre_post.input_range.enable = True
    nn.AnalogLinear(3, 2, cfg)  # digital bias: fine
    cfg.mapping.digital_bias = False
    with pytest.raises(configs.ConfigError, match="digital_bias"):
        nn.AnalogLinear(3, 2, cfg)
    nn.AnalogLinear(3, 2, cfg, bias=False)  # no bias column at all: fine


COMPOUND_ALGORITHMS = sorted(set(configs.ALGORITHMS) - {"sgd"})  # mp, tiki-taka, ttv2, ...


def _compound_counters(tile):
    """The compound's update bookkeeping: rows seen (mixed precision: ``rows``; transfer
    compounds: the row counter ``counter``) and transfer events (``transfers`` / the sweep and
    the random-call counters of the transfer reads and writes)."""
    state = tile.state_dict()["compound"]
    rows = state["rows"] if "rows" in state else state["counter"]
    calls = tile.streams.calls
    return rows, calls.get("update", 0), calls.get("transfer", 0) + calls.get("io.transfer", 0)


def _fast_part(tile):
    """What the gradient acts on first: mixed precision's digital accumulator χ, a transfer
    compound's fast device D_0 (a copy)."""
    state = tile.state_dict()["compound"]
    return np.array(to_numpy(state["chi"] if "chi" in state else state["devices"][0]))


@pytest.mark.parametrize("algorithm", COMPOUND_ALGORITHMS)
def test_compound_configs_train_through_nn(algorithm):
    """Every build_config compound trains through refsim.nn: each layer update is the tile's
    update (AnalogTile.update with the layer's last forward input, backward gradient and lr, bit
    for bit: weights, compound state, random counters), the compound's row counter advances by
    the batch size, its fast device gets gradient pulses, and after a few steps transfers have
    happened and the visible weights moved."""
    cfg = configs.build_config(algorithm, configs.ConstantStepDevice)
    layer = nn.AnalogLinear(4, 3, cfg, seed=1, backend="reference")
    twin = nn.AnalogLinear(4, 3, cfg, seed=1, backend="reference").tiles[0][0]
    tile = layer.tiles[0][0]
    assert tile.compound is not None and layer.digital_bias
    assert_same_state(tile.state_dict(), twin.state_dict())
    w_start, _ = layer.get_weights()
    fast_start = _fast_part(tile)
    gen = np.random.default_rng(11)
    batch, lr = 4, 0.5
    for step in range(14):
        x, d = gen.normal(size=(batch, 4)), gen.normal(size=(batch, 3))
        rows, updates, _ = _compound_counters(tile)
        layer.forward(x)
        layer.backward(d)
        layer.update(lr)
        twin.forward(x)
        twin.backward(d)
        twin.update(x, d, lr)
        if step < 2:  # the same update as the tile's own, bit for bit
            assert_same_state(tile.state_dict(), twin.state_dict(), f"{algorithm}, step {step}")
        after = _compound_counters(tile)
        assert after[0] == rows + batch and after[1] == updates + batch, (algorithm, step)
    assert_same_state(tile.state_dict(), twin.state_dict(), f"{algorithm}, after 14 steps")
    assert not np.array_equal(_fast_part(tile), fast_start), "no gradient on the fast part"
    assert _compound_counters(tile)[2] > 0, "no transfer reads or writes"
    if algorithm == "mp":
        assert tile.state_dict()["compound"]["transfers"] > 0
    w_end, _ = layer.get_weights()
    assert not np.array_equal(to_numpy(w_end), to_numpy(w_start)), "the weights never moved"


# -- shuffling and data ------------------------------------------------------------------------


def test_permutation_is_reproducible():
    p = nn.permutation(50, 3, 0)
    assert sorted(p.tolist()) == list(range(50))
    np.testing.assert_array_equal(p, nn.permutation(50, 3, 0))
    assert not np.array_equal(p, nn.permutation(50, 3, 1))
    assert not np.array_equal(p, nn.permutation(50, 4, 0))
    assert nn.permutation(0, 1).shape == (0,)


@pytest.mark.parametrize("xp", NAMESPACES)
def test_load_digits(xp):
    data = load_digits(xp=xp)
    x_train, y_train, x_test, y_test = (to_numpy(a) for a in data)
    assert x_train.shape == (1500, 64) and x_test.shape == (297, 64)
    assert y_train.shape == (1500,) and y_test.shape == (297,)
    assert x_train.min() == 0 and x_train.max() == 1 and x_train.dtype == np.float64
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    assert np.all(np.bincount(y_test) >= 20)
    train, test = digits_split()
    assert len(set(train.tolist()) | set(test.tolist())) == 1797
    assert not set(train.tolist()) & set(test.tolist())
    std = load_digits(standardize=True, xp=xp, dtype=xp.float32)
    assert std.x_train.dtype == xp.float32
    s = to_numpy(std.x_train)
    np.testing.assert_allclose(s.mean(0), 0, atol=1e-5)
    assert s.std(0).max() == pytest.approx(1, abs=1e-5)


# -- the demo ----------------------------------------------------------------------------------


def test_demo_smoke(capsys):
    code = cli.main(["demo", "--algorithm", "sgd", "--epochs", "2", "--limit", "96",
                     "--backend", "reference", "--device", "ConstantStepDevice"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[1].startswith("epoch   1/2")
    summary = json.loads(lines[-1])
    assert summary["train_samples"] == 96 and summary["epochs"] == 2
    assert summary["algorithm"] == "sgd" and summary["backend"] == "reference"
    assert len(summary["history"]) == 2 and summary["history"][1]["loss"] < 2.0
    assert summary["test_accuracy"] > 0.25  # chance: 0.1
    assert summary["history"][1]["loss"] < summary["history"][0]["loss"]


def test_demo_quiet_prints_only_the_summary(capsys):
    assert cli.main(["demo", "--algorithm", "sgd", "--epochs", "1", "--limit", "20", "--quiet",
                     "--backend", "reference", "--analog-bias"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["bias"] == "analog"


@pytest.mark.parametrize("algorithm", sorted(configs.ALGORITHMS))
def test_demo_every_algorithm_runs(algorithm, capsys):
    code = cli.main(["demo", "--algorithm", algorithm, "--epochs", "1", "--limit", "16",
                     "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["config_changes"] == cli.DEMO_TUNING.get(algorithm, {})
    assert np.isfinite(summary["loss"])


def test_demo_config_applies_the_tuning_and_stock_leaves_build_config():
    dev = configs.SoftBoundsReferenceDevice
    for name in configs.ALGORITHMS:
        assert cli.demo_config(name, dev, stock=True) == configs.build_config(name, dev)
        if name not in cli.DEMO_TUNING:
            assert cli.demo_config(name, dev) == configs.build_config(name, dev)
    tuned = cli.demo_config("ttv3", dev)  # an alias of c-ttv2
    assert tuned.device.fast_lr == 1.0 and tuned.device.in_chop_prob == 0.02
    assert tuned.device.transfer_update.desired_bl == 5
    assert tuned.device.transfer_update.update_management
    assert tuned.device.transfer_update.update_bl_management
    agad = cli.demo_config("agad", dev)
    assert agad.device.fast_lr == 1.0 and agad.device.transfer_update.desired_bl == 5
    assert agad.device.in_chop_prob == configs.build_config("agad", dev).device.in_chop_prob


def test_demo_stock_config_records_no_changes(capsys):
    assert cli.main(["demo", "--algorithm", "agad", "--epochs", "1", "--limit", "16", "--quiet",
                     "--stock-config"]) == 0
    assert json.loads(capsys.readouterr().out)["config_changes"] == {}


@pytest.mark.parametrize("args", [
    ["--algorithm", "nope"], ["--device", "Nope"], ["--epochs", "0"], ["--lr", "0"],
    ["--lr", "inf"], ["--batch-size", "-2"], ["--seed", "x"], ["--hidden", "0"],
])
def test_demo_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err


# -- inference: program, drift, evaluation mode (spec/inference.md §I5) ----------------------------


def _inference_model(seed=2):
    return nn.mlp([6, 5, 3], configs.InferenceRPUConfig(), seed=seed)


def test_programmed_and_drifted_model_evaluates_with_compensation():
    x = np.random.default_rng(0).uniform(-1, 1, (4, 6))
    model = _inference_model()
    before = model(x)
    model.program_analog_weights()
    model.drift_analog_weights(86400.0)
    drifted_train = model(x)
    assert not np.array_equal(before, drifted_train)
    tiles = [t for layer in model if isinstance(layer, nn.AnalogLinear)
             for row in layer.tiles for t in row]
    assert all(t.drift_compensation_factor > 1.0 for t in tiles)  # a day of drift shrinks |W|
    assert model.eval() is model and all(not t.training for t in tiles)
    assert not np.array_equal(model(x), drifted_train)
    model.train()
    assert all(t.training for t in tiles)


def test_inference_calls_are_all_or_nothing_and_resume_identically():
    x = np.random.default_rng(1).uniform(-1, 1, (2, 6))
    model = _inference_model()
    with pytest.raises(ValueError, match="program_weights"):
        model.drift_analog_weights(10.0)  # not programmed
    model.program_analog_weights()
    saved = model.state_dict()
    with pytest.raises(ValueError, match="t_inference"):
        model.drift_analog_weights(-1.0)
    np.testing.assert_array_equal(model(x), _loaded(saved)(x))
    model.drift_analog_weights(3600.0)
    resumed = _loaded(model.state_dict())
    model.drift_analog_weights(7200.0)
    resumed.drift_analog_weights(7200.0)
    np.testing.assert_array_equal(model.eval()(x), resumed.eval()(x))
    plain = nn.mlp([6, 5, 3], configs.SingleRPUConfig(), seed=2)
    with pytest.raises(configs.ConfigError, match="program_weights"):
        plain.program_analog_weights()


def _loaded(state):
    model = _inference_model()
    model.load_state_dict(state)
    return model


# -- learned output scales (spec/mapping.md §P4) ----------------------------------------------------


@pytest.mark.parametrize("columnwise", [False, True])
def test_learned_output_scale_is_a_gradient_step(columnwise):
    """y = s_out·(W x) + b: the update moves s_out by −lr·Σ_b grad·(W x) (summed over outputs for
    the scalar), the tiles see grad·s_out; get_weights gives s_out·W; set_weights resets s_out."""
    cfg = configs.FloatingPointRPUConfig()
    cfg.mapping.learn_out_scaling = True
    cfg.mapping.out_scaling_columnwise = columnwise
    layer = nn.AnalogLinear(4, 3, cfg, seed=1)
    plain = nn.AnalogLinear(4, 3, configs.FloatingPointRPUConfig(), seed=1)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 4))
    g = np.random.default_rng(1).uniform(-1, 1, (5, 3))
    w0, _ = layer.get_weights()
    np.testing.assert_array_equal(layer(x), plain(x))     # s_out starts at 1
    layer.backward(g)
    layer.update(0.1)
    wx = x @ w0.T
    grad = (g * wx).sum(axis=0)
    expected = 1.0 - 0.1 * (grad if columnwise else grad.sum(keepdims=True))
    np.testing.assert_allclose(layer.out_scale, expected, rtol=1e-12)
    w1, _ = layer.get_weights()
    tile_w = layer.tiles[0][0].get_weights()
    np.testing.assert_allclose(w1, layer.out_scale.reshape(-1, 1) * tile_w, rtol=1e-15)
    np.testing.assert_allclose(tile_w, w0 - 0.1 * (g * 1.0).T @ x, rtol=1e-12)  # grad·s_out, s=1
    restored = nn.AnalogLinear(4, 3, cfg, seed=1)
    restored.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(restored(x), layer(x))
    layer.set_weights(w1, layer.get_weights()[1])
    np.testing.assert_array_equal(layer.out_scale, np.ones_like(layer.out_scale))
    np.testing.assert_allclose(layer.get_weights()[0], w1, rtol=1e-15)


def test_a_bare_tile_refuses_a_learned_output_scale():
    from refsim.tile import AnalogTile

    cfg = configs.SingleRPUConfig()
    cfg.mapping.learn_out_scaling = True
    with pytest.raises(configs.ConfigError, match="learn_out_scaling"):
        AnalogTile(2, 2, cfg)
    with pytest.raises(ValueError, match="out_scale"):
        nn.AnalogLinear(2, 2, configs.SingleRPUConfig()).load_state_dict(
            nn.AnalogLinear(2, 2, cfg).state_dict())
