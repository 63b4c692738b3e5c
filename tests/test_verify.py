"""``refsim verify`` (refsim/verify.py, spec/verify.md): checking another implementation of
analog tiles against refsim on deterministic cases."""

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from refsim import configs, verify
from refsim.cli import main

DATA = Path(__file__).resolve().parent / "data"
SPEC = Path(__file__).resolve().parents[1] / "spec"

#: The one form of every command-line error (refsim.cli._error_text).
ERROR_LINE = re.compile(r"refsim verify: error: (.+), see 'refsim verify --help'")


@pytest.fixture
def adapters(monkeypatch):
    """The toy adapters of tests/data/verify_adapters.py, importable as ``verify_adapters``."""
    monkeypatch.syspath_prepend(str(DATA))
    import verify_adapters

    return verify_adapters


def _report(capsys, args):
    status = main(["verify", "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def test_refsim_against_itself_is_all_exact(capsys):
    status, report = _report(capsys, ["--probes", "60", "--seed", "7"])
    assert status == 0 and report["ok"]
    totals = report["totals"]
    assert totals["cases"] == 60 + report["golden_cases"] and report["golden_cases"] > 0
    assert totals["exact"] == totals["cases"] and totals["differs"] == 0
    assert {g["stage"] for g in report["results"]} == set(verify.STAGES)
    # the default output is the Markdown report
    assert main(["verify", "--probes", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# refsim verify: refsim against refsim")
    assert "**Result: everything is exact or within tolerance.**" in text


def test_the_golden_cases_are_the_deterministic_vectors():
    cases = verify.golden_cases()
    assert cases, "no deterministic golden vector"
    for case in cases:
        assert verify.is_deterministic(case.config, case.stage)
        assert case.expected is not None
    single = configs.SingleRPUConfig().to_dict()
    assert not verify.is_deterministic(single, "forward")      # out_noise 0.06
    assert not verify.is_deterministic(single, "update")       # StochasticCompressed, dw_min_std
    clean = verify.make_deterministic(single)
    assert all(verify.is_deterministic(clean, s) for s in verify.STAGES)
    assert verify.is_deterministic(configs.FloatingPointRPUConfig().to_dict(), "update")


def test_a_wrong_inp_res_is_caught_and_localised(capsys, adapters):
    status, report = _report(capsys, ["--against", "verify_adapters:InpResDoubled",
                                      "--probes", "60"])
    assert status == 1 and not report["ok"]
    assert "forward.inp_res" in report["differing_parameters"]
    assert {g["stage"] for g in report["results"] if g["differs"]} == {"forward"}
    assert "forward.inp_res" in report["diagnosis"]["forward"]
    group = next(g for g in report["results"] if g["parameter"] == "forward.inp_res")
    assert group["section"] == "spec/io.md §S4" and group["exact"] == 0
    first = group["first_difference"]
    w = np.asarray(first["request"]["weights"])
    x = np.asarray(first["request"]["x"])
    assert w.size <= 4 and x.shape[0] == 1, first["minimised"]
    assert first["changes"]["forward.inp_res"] == first["value"]
    assert np.asarray(first["expected"]).shape == np.asarray(first["actual"]).shape
    assert main(["verify", "--against", "verify_adapters:InpResDoubled", "--probes", "60"]) == 1
    text = capsys.readouterr().out
    assert "### forward: `forward.inp_res` (spec/io.md §S4)" in text
    assert "minimised from" in text and "to 1x1 tile, batch 1" in text


def test_a_wrong_learning_rate_is_caught_in_the_update(adapters):
    report = verify.run(adapters.LrOff(), probes=50, seed=1)
    assert verify.exit_status(report) == 1
    stages = {g["stage"] for g in report["results"] if g["differs"]}
    assert stages == {"update"}
    assert "common cause" in report["diagnosis"]["update"]
    assert "update.(defaults)" in report["differing_parameters"]


def test_a_last_bit_difference_is_within_tolerance():
    class OneUlp(verify.RefsimAdapter):
        def forward(self, config, weights, x):
            y = super().forward(config, weights, x)
            return np.nextafter(y, np.inf)

    report = verify.run(OneUlp(), probes=20, seed=2, golden=False)
    assert report["ok"] and verify.exit_status(report) == 0
    assert report["totals"]["within"] > 0 and report["totals"]["differs"] == 0
    assert verify.compare("update", np.array([1.0]), np.array([1.0 + 1e-9])).status == "differs"
    assert verify.compare("forward", np.array([[0.0, 1.0]]),
                          np.array([[1e-13, 1.0]])).status == "within"
    assert verify.compare("forward", np.zeros((1, 2)), np.zeros((1, 3))).status == "differs"


def test_the_command_adapter_path(capsys):
    command = f"{sys.executable} {DATA / 'verify_command_adapter.py'}"
    assert main(["verify", "--command", command, "--probes", "1"]) == 0
    text = capsys.readouterr().out
    assert "against refsim" in text and "0 differ" in text
    failing = verify.CommandAdapter(
        f"{sys.executable} -c \"print('{{\\\"error\\\": \\\"not implemented\\\"}}')\"")
    report = verify.run(failing, probes=1, golden=False)
    assert not report["ok"]
    first = report["results"][0]["first_difference"]
    assert "not implemented" in first["message"] and first["actual"] is None


def test_the_optional_train_operation_is_the_same_on_every_path():
    """``train`` (spec/verify.md §1): one tile, the weights after each update call; refsim's own
    adapter, the command path (one process per request) and the line mode answer identically,
    and the compound state carries over between the steps (not a fresh tile per step)."""
    config = configs.build_config("tiki-taka", configs.ConstantStepDevice)
    config = verify.make_deterministic(config.to_dict())
    for node in (config["update"], config["device"]["transfer_update"]):
        node["pulse_type"] = "DeterministicImplicit"
    rng = np.random.default_rng(3)
    weights = np.round(rng.uniform(-0.3, 0.3, (2, 3)) * 4096) / 4096
    steps = [{"x": np.round(rng.uniform(-1, 1, (b, 3)) * 4096) / 4096,
              "d": np.round(rng.uniform(-0.5, 0.5, (b, 2)) * 4096) / 4096, "lr": lr}
             for b, lr in ((2, 0.1), (1, 0.5), (3, 0.2), (1, 0.5))]
    expected_64 = verify.RefsimAdapter().train(config, weights, steps)
    for dtype in verify.DTYPES:
        expected = verify.RefsimAdapter(dtype=dtype).train(config, weights, steps)
        assert expected.shape == (4, 2, 3)
        assert not np.array_equal(expected[0], expected[-1])
        tuples = [(s["x"], s["d"], s["lr"]) for s in steps]
        assert np.array_equal(verify.RefsimAdapter(dtype=dtype).train(config, weights, tuples),
                              expected)
        # a fresh tile per step would differ: the hidden fast device carries over
        fresh = verify.RefsimAdapter(dtype=dtype).update(config, expected[0], steps[1]["x"],
                                                         steps[1]["d"], steps[1]["lr"])
        assert not np.array_equal(fresh, expected[1])
    # the command scripts serve refsim's float64 tiles (verify.serve around RefsimAdapter())
    for name, lines in (("verify_command_adapter.py", False), ("verify_lines_adapter.py", True)):
        command = verify.CommandAdapter([sys.executable, str(DATA / name)], lines=lines)
        try:
            assert np.array_equal(command.train(config, weights, steps), expected_64)
        finally:
            command.close()
    # an adapter without ``train`` answers an error, not a crash
    out = io.StringIO()
    request = {"op": "train", "config": config, "weights": weights.tolist(), "steps": []}
    verify.serve(object(), io.StringIO(json.dumps(request)), out)
    assert "unknown operation 'train'" in json.loads(out.getvalue())["error"]


def test_the_python_adapter_may_be_a_factory(adapters):
    assert isinstance(verify.load_adapter("verify_adapters:factory"), verify.RefsimAdapter)
    assert isinstance(verify.load_adapter("verify_adapters:LrOff"), adapters.LrOff)


def test_the_report_can_go_to_a_file(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["verify", "--probes", "2", "--json", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["format"] == "refsim-verify-report"
    assert capsys.readouterr().out.count("\n") == 1


@pytest.mark.parametrize("args, word", [
    (["--probes", "x"], "--probes"),
    (["--probes", "-1"], "--probes"),
    (["--seed", "-1"], "--seed"),
    (["--against", "nope"], "--against"),
    (["--against", "no_such_module_here:x"], "no_such_module_here"),
    (["--against", "json:nothing"], "nothing"),
    (["--against", "refsim", "--command", "true"], "--command"),
    (["--command", ""], "--command"),
    (["--out", "/no/such/directory/report.md"], "--out"),
    (["surplus"], "surplus"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, args, word):
    with pytest.raises(SystemExit) as exc:
        main(["verify", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ERROR_LINE.fullmatch(err.strip()), err
    assert word in err


def test_the_parameter_table_points_into_the_spec():
    for param in verify.PARAMETERS.values():
        assert param.stage in verify.STAGES
        for ref in param.section.split(", "):
            path, _, section = ref.partition(" ")
            text = (SPEC.parent / path).read_text(encoding="utf-8")
            assert section.split("–")[0] in text, (param.name, ref)
    assert verify.deviation_rows("forward.bm_test_negative_bound")
    assert verify.deviation_rows("forward.inp_res") == []
    # an enum value names its row too (not 'None')
    assert any("IterativeWorstCase" in row for row in
               verify.deviation_rows("forward.bound_management", "IterativeWorstCase"))
    assert verify.deviation_rows("forward.inp_res", "None") == []


def test_probes_are_reproducible_and_vary_one_parameter():
    a, b = verify.probe(5, 9), verify.probe(5, 9)
    assert np.array_equal(a.weights, b.weights) and a.config == b.config
    for index in range(len(verify.PARAMETERS)):
        case = verify.probe(0, index)
        assert verify.is_deterministic(case.config, case.stage)
        if not case.parameter.endswith("(defaults)"):
            assert case.changes[case.parameter] == case.value
        assert 3 <= case.weights.shape[0] <= 8 and 4 <= case.weights.shape[1] <= 16


# -- float32, the line mode and the aihwkit adapter (refsim/adapters/aihwkit_adapter.py) ----------

AIHWKIT_PYTHON = Path.home() / ".venvs" / "aihwkit" / "bin" / "python"


def _aihwkit_script():
    """The aihwkit adapter script as a module (it imports no aihwkit or torch at the top)."""
    import importlib.util

    from refsim.adapters import script_path

    spec = importlib.util.spec_from_file_location("aihwkit_adapter_script",
                                                  script_path("aihwkit_adapter"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refsim_against_itself_is_all_exact_in_float32_too(capsys):
    status, report = _report(capsys, ["--probes", "49", "--dtype", "float32"])
    assert status == 0 and report["ok"] and report["dtype"] == "float32"
    assert report["totals"]["exact"] == report["totals"]["cases"] > 49
    assert "1e-6" in report["tolerance"]
    status, report = _report(capsys, ["--probes", "5", "--dtype", "float64"])
    assert status == 0 and report["dtype"] == "float64" and "1e-12" in report["tolerance"]
    assert report["totals"]["exact"] == report["totals"]["cases"]
    # float32 expected results: a last-bit change of float32 is within the float32 tolerance
    e = np.array([[1.0, 0.5]], dtype=np.float32).astype(np.float64)
    a = np.nextafter(e.astype(np.float32), np.float32(2)).astype(np.float64)
    assert verify.compare("forward", a, e, "float32").status == "within"
    assert verify.compare("forward", a, e).status == "differs"
    assert verify.compare("update", e + 2e-6, e, "float32").status == "differs"


def test_the_line_mode_keeps_one_process(capsys):
    command = f"{sys.executable} {DATA / 'verify_lines_adapter.py'}"
    assert main(["verify", "--command", command, "--lines", "--probes", "4"]) == 0
    assert "0 differ" in capsys.readouterr().out
    adapter = verify.CommandAdapter(command, lines=True)
    case = verify.probe(0, 3)
    first = adapter.forward(case.config, case.weights, case.inputs)
    pid = adapter._proc.pid
    again = adapter.forward(case.config, case.weights, case.inputs)
    assert adapter._proc.pid == pid and np.array_equal(first, again)
    adapter.close()
    assert adapter._proc is None
    dying = verify.CommandAdapter(
        [sys.executable, "-c", "import sys; sys.stderr.write('gone\\n'); sys.exit(3)"], lines=True)
    report = verify.run(dying, probes=1, golden=False)
    message = report["results"][0]["first_difference"]["message"]
    assert "exited with 3" in message and "gone" in message
    dying.close()


@pytest.mark.parametrize("args, word", [
    (["--against", "aihwkit"], "--python"),
    (["--python", sys.executable], "--python"),
    (["--against", "aihwkit", "--python", "/no/such/python"], "--python"),
    (["--against", "aihwkit", "--python", sys.executable, "--command", "true"], "--command"),
    (["--lines"], "--lines"),
    (["--dtype", "float16"], "--dtype"),
])
def test_aihwkit_and_dtype_argument_errors_exit_2(capsys, args, word):
    test_bad_arguments_exit_2_with_one_line(capsys, args, word)


def test_a_python_without_aihwkit_is_an_argument_error(capsys):
    """refsim's own Python has no aihwkit: the adapter script's --dtypes answers []."""
    pytest.importorskip("numpy")
    try:
        import aihwkit  # noqa: F401
        pytest.skip("aihwkit importable from refsim's environment")
    except ImportError:
        pass
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--against", "aihwkit", "--python", sys.executable, "--probes", "1"])
    assert exc.value.code == 2
    assert "cannot import aihwkit" in capsys.readouterr().err


def _fake_namespace():
    """Stand-ins for aihwkit's config classes: dataclasses with enum defaults, a nested
    dataclass, a field with init=False and a plain class with keyword parameters."""
    import dataclasses
    import enum

    class Pulse(enum.Enum):
        NONE = "None"
        DET = "DeterministicImplicit"

    @dataclasses.dataclass
    class FakeUpdate:
        desired_bl: int = 31
        pulse_type: Pulse = Pulse.NONE

    @dataclasses.dataclass
    class FakeDevice:
        dw_min: float = 0.001

    class FakeNoise:
        def __init__(self, prog_coeff=None, t_read: float = 2.5e-7):
            self.prog_coeff = prog_coeff
            self.t_read = t_read

    @dataclasses.dataclass
    class FakeConfig:
        update: FakeUpdate = dataclasses.field(default_factory=FakeUpdate)
        noise_model: FakeNoise = dataclasses.field(default_factory=FakeNoise)
        device: FakeDevice = dataclasses.field(default_factory=FakeDevice, init=False)

    return {"SingleRPUConfig": FakeConfig, "UpdateParameters": FakeUpdate,
            "ConstantStepDevice": FakeDevice, "PCMLikeNoiseModel": FakeNoise}, Pulse


def test_the_aihwkit_adapter_rebuilds_configs_without_aihwkit():
    script = _aihwkit_script()
    classes, pulse = _fake_namespace()
    node = {"__class__": "SingleRPUConfig", "__schema__": 1,
            "update": {"__class__": "UpdateParameters", "desired_bl": 5,
                       "pulse_type": "DeterministicImplicit"},
            "noise_model": {"__class__": "PCMLikeNoiseModel", "prog_coeff": [1.0, 2.0],
                            "t_read": 1e-6},
            "device": {"__class__": "ConstantStepDevice", "dw_min": 0.01,
                       "scale_fast_lr": False}}
    only = {"ConstantStepDevice": {"scale_fast_lr": False}}
    p = script.plan(node, classes, only)
    assert p.name == "SingleRPUConfig" and "__schema__" not in p.fields
    assert p.fields["update"] == script.Plan("UpdateParameters",
                                             {"desired_bl": 5, "pulse_type": pulse.DET})
    assert p.fields["device"] == script.Plan("ConstantStepDevice", {"dw_min": 0.01})
    assert p.fields["noise_model"].fields == {"prog_coeff": [1.0, 2.0], "t_read": 1e-6}
    config = script.instantiate(p, classes)
    assert config.update.pulse_type is pulse.DET and config.update.desired_bl == 5
    assert config.device.dw_min == 0.01 and config.noise_model.t_read == 1e-6
    # a refsim-only field with another value than refsim's default, an unknown class or field,
    # a string that is no value of the field's enum: errors naming them
    for change, word in (({"device": {"__class__": "ConstantStepDevice",
                                      "scale_fast_lr": True}}, "no field ConstantStepDevice"),
                         ({"device": {"__class__": "NoSuchDevice"}}, "no class NoSuchDevice"),
                         ({"update": {"__class__": "UpdateParameters", "bl": 1}},
                          "no field UpdateParameters.bl"),
                         ({"update": {"__class__": "UpdateParameters", "pulse_type": "X"}},
                          "'X' is not a value")):
        with pytest.raises(script.ConfigError, match=word):
            script.plan({**node, **change}, classes, only)
    # the protocol: every failure is an {"error": ...} answer, one line per request with --serve
    import io

    out = io.StringIO()
    script.main(["--serve"], io.StringIO('not json\n[1]\n{"op": "nope"}\n'), out,
                classes=lambda: classes)
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(answers) == 3 and all("error" in a for a in answers)
    out = io.StringIO()

    def broken():
        raise ImportError("no aihwkit here")

    script.main([], io.StringIO("{}"), out, classes=broken)
    assert "cannot import aihwkit" in json.loads(out.getvalue())["error"]


def test_the_aihwkit_adapter_knows_refsim_defaults():
    script = _aihwkit_script()
    for cls, fields in script.REFSIM_ONLY.items():
        obj = getattr(configs, cls)()
        for name, value in fields.items():
            assert getattr(obj, name) == value, (cls, name)


def _aihwkit_available() -> bool:
    if not AIHWKIT_PYTHON.exists():
        return False
    import subprocess

    try:
        proc = subprocess.run([str(AIHWKIT_PYTHON), "-c", "import aihwkit.simulator.rpu_base"],
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@pytest.mark.skipif(not _aihwkit_available(), reason="no aihwkit environment at "
                    "~/.venvs/aihwkit (README, 'aihwkit beside refsim')")
def test_the_real_aihwkit_adapter(tmp_path, capsys):
    out = tmp_path / "aihwkit.md"
    status = main(["verify", "--against", "aihwkit", "--python", str(AIHWKIT_PYTHON),
                   "--probes", "8", "--out", str(out)])
    assert status in (0, 1)
    summary = capsys.readouterr().out
    assert "cases" in summary and str(out) in summary
    text = out.read_text()
    assert text.startswith("# refsim verify: aihwkit (")
    adapter = verify.aihwkit_adapter(str(AIHWKIT_PYTHON))
    try:
        report = verify.run(adapter, probes=3, golden=False, dtype=adapter.dtype)
    finally:
        adapter.close()
    # forward.(defaults), backward.(defaults), update.(defaults): no failed request
    assert report["totals"]["cases"] == 3
    assert all(g["first_difference"] is None or g["first_difference"]["actual"] is not None
               for g in report["results"])
