"""refsim.torch (spec/torch.md): the torch layers give refsim.nn's numbers, their gradients are
torch's for a perfect floating-point tile, AnalogSGD trains every kind of config, state dicts and
torch.save resume bit-identically, and bad input is refused."""

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from refsim import configs as C  # noqa: E402
from refsim import nn  # noqa: E402
from refsim.torch import (  # noqa: E402
    AnalogConv1d,
    AnalogConv2d,
    AnalogLinear,
    AnalogSequential,
    AnalogSGD,
    convert_to_analog,
)


def _perfect(cfg):
    """``cfg`` with perfect analog passes (a FloatingPointRPUConfig has them already)."""
    if hasattr(cfg, "forward"):
        cfg.forward.is_perfect = cfg.backward.is_perfect = True
    return cfg


def _configs():
    hwa = C.InferenceRPUConfig()
    hwa.modifier.type = "AddNormal"
    hwa.modifier.std_dev = 0.05
    hwa.clip.type = "FixedValue"
    hwa.clip.fixed_value = 1.0
    ir = C.InferenceRPUConfig()
    ir.forward.noise_management = ir.forward.bound_management = "None"
    ir.pre_post.input_range.enable = True
    ir.forward.out_bound = 2.0
    split = C.SingleRPUConfig(device=C.ConstantStepDevice())
    split.mapping.max_input_size = 4
    split.mapping.max_output_size = 2
    return {
        "floating-point": C.FloatingPointRPUConfig(),
        "constant-step": C.SingleRPUConfig(device=C.ConstantStepDevice()),
        "soft-bounds": C.SingleRPUConfig(device=C.SoftBoundsDevice()),
        "hwa-modifier": hwa,
        "input-range": ir,
        "split-tiles": split,
        "c-ttv2": C.build_config("c-ttv2", C.SoftBoundsReferenceDevice()),
        "mp": C.build_config("mp", C.ConstantStepDevice()),
        "tiki-taka": C.build_config("tiki-taka", C.ConstantStepDevice()),
        "ttv2": C.build_config("ttv2", C.SoftBoundsReferenceDevice()),
        "agad": C.build_config("agad", C.SoftBoundsReferenceDevice()),
        "sgd-two-devices": C.build_config("sgd", C.ConstantStepDevice(), n_devices=2),
    }


CONFIGS = _configs()


def _data(seed=0, batch=5, n_in=6, n_out=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_in, generator=g), torch.randn(batch, n_out, generator=g)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_torch_layer_gives_refsim_nn_numbers(name):
    """Same seed and config: refsim.torch's AnalogLinear + AnalogSGD and refsim.nn's
    AnalogLinear + SGD give the same outputs, input gradients and weights, bit for bit (float32;
    no digital bias, whose torch sum may round differently)."""
    cfg = CONFIGS[name]
    layer = AnalogLinear(6, 3, bias=False, rpu_config=copy.deepcopy(cfg), seed=7)
    ref = nn.AnalogLinear(6, 3, copy.deepcopy(cfg), bias=False, seed=7, dtype=np.float32)
    opt = AnalogSGD(layer.parameters(), lr=0.05)
    opt.regroup_param_groups(layer)
    for step in range(3):
        x, target = _data(step)
        x.requires_grad_(True)
        y = layer(x)
        loss = ((y - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        y_ref = ref.forward(x.detach().numpy())
        gx_ref = ref.backward(2 * (y_ref - target.numpy()))
        ref.update(0.05)
        ref.post_update_step()
        np.testing.assert_array_equal(y.detach().numpy(), y_ref, err_msg=f"step {step} y")
        np.testing.assert_array_equal(x.grad.numpy(), gx_ref, err_msg=f"step {step} grad x")
        np.testing.assert_array_equal(layer.get_weights()[0].numpy(), ref.get_weights()[0],
                                      err_msg=f"step {step} weights")


def test_digital_bias_and_learned_output_scale_are_parameters():
    cfg = C.FloatingPointRPUConfig()
    cfg.mapping.learn_out_scaling = True
    cfg.mapping.out_scaling_columnwise = True
    layer = AnalogLinear(6, 3, rpu_config=cfg, seed=1)
    names = dict(layer.named_parameters())
    assert set(names) == {"analog_ctx", "bias", "out_scale"}
    ref = nn.AnalogLinear(6, 3, copy.deepcopy(cfg), seed=1, dtype=np.float32)
    opt = AnalogSGD(layer.parameters(), lr=0.1)
    x, target = _data()
    loss = ((layer(x) - target) ** 2).sum()
    loss.backward()
    assert layer.out_scale.grad is not None and layer.bias.grad is not None
    opt.step()
    y_ref = ref.forward(x.numpy())
    ref.backward(2 * (y_ref - target.numpy()))
    ref.update(0.1)
    np.testing.assert_allclose(layer.out_scale.detach().numpy(), ref.out_scale, rtol=1e-6)
    np.testing.assert_allclose(layer.bias.detach().numpy(), ref.bias, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer.get_weights()[0].numpy(), ref.get_weights()[0], rtol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_equal_torch_for_a_perfect_floating_point_tile(bias):
    """float64, perfect IO, floating-point device: the input gradient is torch.nn.Linear's and
    the update with lr = 1 is minus its weight gradient."""
    layer = AnalogLinear(5, 4, bias=bias, rpu_config=_perfect(C.FloatingPointRPUConfig()),
                         seed=2, dtype=torch.float64)
    w, b = layer.get_weights()
    lin = torch.nn.Linear(5, 4, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias:
            lin.bias.copy_(b)
    x = torch.randn(3, 5, dtype=torch.float64)
    xa, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad = torch.randn(3, 4, dtype=torch.float64)
    ya, yt = layer(xa), lin(xt)
    torch.testing.assert_close(ya, yt, rtol=1e-14, atol=1e-14)
    ya.backward(grad)
    yt.backward(grad)
    torch.testing.assert_close(xa.grad, xt.grad, rtol=1e-14, atol=1e-14)
    opt = AnalogSGD(layer.parameters(), lr=1.0)
    opt.step()
    torch.testing.assert_close(w - layer.get_weights()[0], lin.weight.grad, rtol=1e-13,
                               atol=1e-14)
    if bias:
        torch.testing.assert_close(b - layer.get_weights()[1], lin.bias.grad, rtol=1e-13,
                                   atol=1e-14)


def test_gradcheck_of_the_input_gradient():
    layer = AnalogLinear(4, 3, rpu_config=_perfect(C.FloatingPointRPUConfig()), seed=3,
                         dtype=torch.float64)
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2)])
def test_conv2d_equals_torch_for_a_perfect_floating_point_tile(stride, padding, dilation):
    conv = AnalogConv2d(3, 4, (3, 2), stride=stride, padding=padding, dilation=dilation,
                        rpu_config=_perfect(C.FloatingPointRPUConfig()), seed=4,
                        dtype=torch.float64)
    w, b = conv.get_weights()
    assert tuple(w.shape) == (4, 3, 3, 2)
    ref = torch.nn.Conv2d(3, 4, (3, 2), stride=stride, padding=padding, dilation=dilation,
                          dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(w)
        ref.bias.copy_(b)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    xa, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yt = conv(xa), ref(xt)
    torch.testing.assert_close(ya, yt, rtol=1e-13, atol=1e-13)
    grad = torch.randn_like(yt)
    ya.backward(grad)
    yt.backward(grad)
    torch.testing.assert_close(xa.grad, xt.grad, rtol=1e-13, atol=1e-13)
    AnalogSGD(conv.parameters(), lr=1.0).step()
    torch.testing.assert_close(w - conv.get_weights()[0], ref.weight.grad, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(conv(x[0]), conv(x[:1])[0], rtol=0, atol=0)  # unbatched input


def test_conv1d_equals_torch_for_a_perfect_floating_point_tile():
    conv = AnalogConv1d(2, 3, 3, stride=2, padding=1,
                        rpu_config=_perfect(C.FloatingPointRPUConfig()), seed=4,
                        dtype=torch.float64)
    w, b = conv.get_weights()
    x = torch.randn(2, 2, 9, dtype=torch.float64)
    ref = torch.nn.functional.conv1d(x, w, b, stride=2, padding=1)
    torch.testing.assert_close(conv(x), ref, rtol=1e-13, atol=1e-13)


def test_convert_to_analog_copies_the_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 6 * 6, 3))
    x = torch.randn(4, 1, 8, 8)
    expected = net(x)
    analog = convert_to_analog(copy.deepcopy(net), _perfect(C.FloatingPointRPUConfig()), seed=1)
    assert [type(m).__name__ for m in analog] == ["AnalogConv2d", "ReLU", "Flatten",
                                                  "AnalogLinear"]
    torch.testing.assert_close(analog(x), expected, rtol=1e-5, atol=1e-6)
    assert len(list(analog.analog_tiles())) == 2
    assert len({layer.seed for layer in analog.analog_layers()}) == 2


def test_the_default_seed_follows_torch_manual_seed():
    torch.manual_seed(3)
    a = AnalogLinear(4, 2)
    torch.manual_seed(3)
    b = AnalogLinear(4, 2)
    c = AnalogLinear(4, 2)
    assert a.seed == b.seed != c.seed
    torch.testing.assert_close(a.get_weights()[0], b.get_weights()[0], rtol=0, atol=0)


def _train(model, steps, lr=0.05, sched=False):
    opt = AnalogSGD(model.parameters(), lr=lr)
    opt.regroup_param_groups(model)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5) if sched else None
    losses = []
    for step in range(steps):
        x, target = _data(step, n_in=6, n_out=2)
        loss = ((model(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss))
    return losses


def _model(cfg=None, seed=11):
    cfg = C.SingleRPUConfig(device=C.ConstantStepDevice()) if cfg is None else cfg
    return AnalogSequential(AnalogLinear(6, 5, rpu_config=copy.deepcopy(cfg), seed=seed),
                            torch.nn.ReLU(),
                            AnalogLinear(5, 2, rpu_config=copy.deepcopy(cfg), seed=seed + 1))


def test_state_dict_and_torch_save_resume_bit_identically():
    model = _model(CONFIGS["c-ttv2"])
    _train(model, 2)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    twin = _model(CONFIGS["c-ttv2"], seed=99)
    buffer.seek(0)
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    a, b = _train(model, 3), _train(twin, 3)
    assert a == b
    for la, lb in zip(model.analog_layers(), twin.analog_layers()):
        torch.testing.assert_close(la.get_weights()[0], lb.get_weights()[0], rtol=0, atol=0)
    whole = io.BytesIO()
    torch.save(model, whole)
    whole.seek(0)
    copy_ = torch.load(whole, weights_only=False)
    assert _train(copy_, 2) == _train(copy.deepcopy(model), 2)


def test_a_learning_rate_scheduler_acts_on_the_analog_update():
    cfg = _perfect(C.FloatingPointRPUConfig())
    a, b = _model(cfg), _model(cfg)
    _train(a, 3, sched=False)
    _train(b, 3, sched=True)
    wa = next(a.analog_layers()).get_weights()[0]
    wb = next(b.analog_layers()).get_weights()[0]
    assert not torch.equal(wa, wb)


def test_an_update_without_backward_or_with_lr_zero_changes_nothing():
    layer = AnalogLinear(6, 2, rpu_config=C.FloatingPointRPUConfig(), seed=1)
    w = layer.get_weights()[0]
    opt = AnalogSGD(layer.parameters(), lr=0.0)
    layer(torch.ones(1, 6)).sum().backward()
    opt.step()
    torch.testing.assert_close(layer.get_weights()[0], w, rtol=0, atol=0)
    AnalogSGD(layer.parameters(), lr=0.5).step()  # the batch was consumed by the lr=0 step
    torch.testing.assert_close(layer.get_weights()[0], w, rtol=0, atol=0)


def test_gradient_accumulation_updates_with_every_batch():
    """Two backward passes before one step: the update sees both batches (rows concatenated),
    as one step on the concatenated batch does."""
    cfg = _perfect(C.FloatingPointRPUConfig())
    a = AnalogLinear(6, 2, bias=False, rpu_config=cfg, seed=1, dtype=torch.float64)
    b = AnalogLinear(6, 2, bias=False, rpu_config=cfg, seed=1, dtype=torch.float64)
    x1, x2 = torch.randn(2, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    a(x1).sum().backward()
    a(x2).sum().backward()
    AnalogSGD(a.parameters(), lr=0.1).step()
    b(torch.cat([x1, x2])).sum().backward()
    AnalogSGD(b.parameters(), lr=0.1).step()
    torch.testing.assert_close(a.get_weights()[0], b.get_weights()[0], rtol=1e-14, atol=1e-15)


def test_inference_program_drift_and_compensation():
    cfg = C.InferenceRPUConfig()
    model = _model(cfg)
    _train(model, 2)
    model.eval()
    model.program_analog_weights()
    model.drift_analog_weights(3600.0)
    factors = [t.drift_compensation_factor for t in model.analog_tiles()]
    assert all(f > 1.0 for f in factors)  # the conductances drifted down
    x, _ = _data(0, n_in=6, n_out=2)
    y1 = model(x)
    model.drift_analog_weights(3600.0 * 24)
    assert not torch.equal(model(x), y1)
    with pytest.raises(ValueError, match="t_inference"):
        model.drift_analog_weights(-1.0)


def test_train_and_eval_reach_the_tiles():
    model = _model(C.InferenceRPUConfig())
    model.eval()
    assert all(not t.training for t in model.analog_tiles())
    model.train()
    assert all(t.training for t in model.analog_tiles())


def test_bad_input_is_refused():
    layer = AnalogLinear(4, 2, seed=1)
    with pytest.raises(ValueError, match="x: expected shape"):
        layer(torch.ones(3, 5))
    with pytest.raises(TypeError, match="x: expected a floating-point"):
        layer(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="x: contains NaN"):
        layer(torch.full((1, 4), float("nan")))
    with pytest.raises(ValueError, match="groups"):
        AnalogConv2d(2, 2, 3, groups=2)
    with pytest.raises(ValueError, match="tile_module_class"):
        AnalogLinear(4, 2, tile_module_class=object)
    with pytest.raises(TypeError, match="rpu_config"):
        AnalogLinear(4, 2, rpu_config="SingleRPUConfig")
    with pytest.raises(ValueError, match="weight: expected shape"):
        layer.set_weights(torch.zeros(3, 3))


def test_leading_dimensions_are_kept():
    layer = AnalogLinear(4, 2, rpu_config=_perfect(C.FloatingPointRPUConfig()), seed=1)
    x = torch.randn(2, 3, 4)
    y = layer(x)
    assert y.shape == (2, 3, 2)
    torch.testing.assert_close(y.reshape(6, 2), layer(x.reshape(6, 4)), rtol=0, atol=0)


def _fresh(code, cwd):
    """Run ``code`` in a fresh Python, outside the source tree (whose refsim_fast has no
    compiled extension in a non-editable install), without a chosen OpenMP wait policy."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_openmp_started_by_torch_first_is_detected_and_every_thread_kept(tmp_path):
    """torch imported before refsim_fast starts the shared OpenMP runtime with busy-waiting
    threads: refsim_fast reports it (``refsim info``) and keeps OpenMP's default thread count
    (spec/torch.md §T4); imported the other way round (refsim.torch does it), the runtime
    starts with the passive wait policy."""
    fast = pytest.importorskip("refsim_fast")
    if not fast.openmp_enabled():
        pytest.skip("refsim_fast built without OpenMP")
    first = _fresh("import torch, refsim_fast, refsim_fast.io as f, refsim_fast.update as u; "
                   "print(refsim_fast.info()['spinning_openmp'], "
                   "f.num_threads == u.num_threads == refsim_fast.max_threads())", tmp_path)
    assert first == ["True", "True"]
    second = _fresh("import refsim.torch, refsim_fast, refsim_fast.io as f, os; "
                    "print(refsim_fast.SPINNING_OPENMP, f.num_threads == refsim_fast.max_threads(),"
                    " os.environ['OMP_WAIT_POLICY'])", tmp_path)
    assert second == ["False", "True", "PASSIVE"]


def test_the_learned_input_range_is_a_parameter_with_its_gradient():
    """One ρ per tile as an nn.Parameter: the data initialisation shows in it after a training
    forward, backward leaves ρ's gradient in ``.grad`` (not in the tiles), the optimizer steps
    it (momentum included), and a ρ driven to ≤ 0 is refused at the next forward."""
    cfg = copy.deepcopy(CONFIGS["input-range"])
    cfg.mapping.max_input_size = 3  # two tiles, two ranges
    layer = AnalogLinear(6, 3, rpu_config=cfg, seed=1)
    assert layer.input_range.shape == (2,)
    np.testing.assert_array_equal(layer.input_range.detach().numpy(), [3.0, 3.0])
    x, target = _data(0)
    ((layer(x) - target) ** 2).sum().backward()
    first = layer.input_range.detach().clone()
    assert not torch.equal(first, torch.tensor([3.0, 3.0]))  # initialised from the data
    grad = layer.input_range.grad.clone()
    assert torch.all(grad != 0)
    assert all(t.input_range.grad is None for t in layer.analog_tiles())
    opt = AnalogSGD(layer.parameters(), lr=0.1, momentum=0.9)
    opt.step()
    torch.testing.assert_close(layer.input_range.detach(), first - 0.1 * grad)
    with torch.no_grad():
        layer.input_range[0] = -1.0
    with pytest.raises(ValueError, match="pre_post.input_range"):
        layer(x)


def test_drift_leaves_non_inference_layers_alone_and_dtype_changes_are_refused():
    """As aihwkit's drift_analog_weights: only InferenceRPUConfig tiles drift to an inference
    time (a pulsed layer with device drift keeps its weights); ``model.double()`` on float32
    tiles is a TypeError naming the dtype instead of silently float32 tiles."""
    cfg = C.SingleRPUConfig(device=C.ConstantStepDevice(drift=C.DriftParameter(nu=0.1)))
    layer = AnalogLinear(4, 2, rpu_config=cfg, seed=1)
    w = layer.get_weights()[0]
    layer.eval()
    layer.drift_analog_weights(3600.0)
    torch.testing.assert_close(layer.get_weights()[0], w, rtol=0, atol=0)
    with pytest.raises(ValueError, match="t_inference"):
        layer.drift_analog_weights(-1.0)
    with pytest.raises(TypeError, match="dtype"):
        layer.double()
    layer.float()  # no change: fine


def test_programming_with_another_noise_model_replaces_the_configs():
    """aihwkit's program_analog_weights(noise_model): the given model programs the tiles and
    replaces the configs' (layer, tiles); the state still checkpoints and moves."""
    model = _model(C.InferenceRPUConfig())
    _train(model, 1)
    quiet = C.PCMLikeNoiseModel(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0)
    weights = [layer.get_weights()[0] for layer in model.analog_layers()]
    model.eval()
    with pytest.raises(TypeError, match="noise_model"):
        model.program_analog_weights(noise_model="PCM")
    model.program_analog_weights(noise_model=quiet)
    for layer, w in zip(model.analog_layers(), weights):
        assert layer.rpu_config.noise_model.prog_noise_scale == 0.0
        assert all(t.rpu_config.noise_model.prog_noise_scale == 0.0
                   for row in layer.analog_core.tiles for t in row)
        torch.testing.assert_close(layer.get_weights()[0], w, rtol=1e-5, atol=1e-6)
    model.drift_analog_weights(3600.0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    model.load_state_dict(torch.load(buffer, weights_only=True))


@pytest.mark.parametrize("name", ["constant-step", "input-range", "c-ttv2"])
def test_the_torch_array_core_gives_the_numpy_core_numbers(name):
    """The code a CUDA device runs (the analog core in torch arrays, the array-API reference),
    here on CPU tensors: the same training run as the numpy core (the fast backend), to float32
    rounding, and the state moves back exactly (spec/torch.md §T4)."""
    def run(torch_core):
        torch.manual_seed(0)
        model = _model(CONFIGS[name])
        if torch_core:
            for layer in model.analog_layers():
                layer._move_core(torch.device("cpu"), numpy=False)
                assert "torch" in layer.analog_core.xp.__name__
        losses = _train(model, 3)
        return model, losses

    (a, la), (b, lb) = run(False), run(True)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    for pa, pb in zip(a.analog_layers(), b.analog_layers()):
        torch.testing.assert_close(pa.get_weights()[0], pb.get_weights()[0], rtol=1e-5,
                                   atol=1e-6)
    layer = next(b.analog_layers())
    w = layer.get_weights()[0]
    layer._move_core(torch.device("cpu"))  # back to numpy
    torch.testing.assert_close(layer.get_weights()[0], w, rtol=0, atol=0)
